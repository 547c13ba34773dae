"""Writing a HuggingFace RoBERTa or BERT folder that `transformers` loads with `from_pretrained`, from any litgpt
state dict, and the finetuning `output_dir` built on it (which folders may be written, what goes in them).

`litgpt convert_from_litgpt` and every finetuning task export through `save_hf_dir`.
"""

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from litgpt.config import Config
from litgpt.convert import architecture_for, hf_config_dict, lit_to_hf_state_dict
from litgpt.utils import UsageError, atomic_save_safetensors, atomic_torch_save, atomic_write_text, check_writable_dir


def save_hf_dir(
    state: Dict[str, torch.Tensor],
    config: Config,
    output_dir: Path,
    tokenizer_dir: Optional[Path] = None,
    safetensors: bool = True,
    pytorch_bin: bool = False,
) -> None:
    """Writes config.json, the weights and the tokenizer files into `output_dir`, each file atomically.

    With `safetensors=False` a stale `model.safetensors` is removed: `from_pretrained` would prefer it.
    """
    if "classifier.out_proj.weight" in state:
        config.num_labels = state["classifier.out_proj.weight"].shape[0]
    architecture = architecture_for(state, config)
    hf_state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                for k, v in lit_to_hf_state_dict(state, config).items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    if safetensors:
        atomic_save_safetensors(hf_state, output_dir / "model.safetensors", metadata={"format": "pt"})
    else:
        (output_dir / "model.safetensors").unlink(missing_ok=True)
    if pytorch_bin:
        atomic_torch_save(hf_state, output_dir / "pytorch_model.bin")
    atomic_write_text(output_dir / "config.json", json.dumps(hf_config_dict(config, architecture), indent=2) + "\n")
    if tokenizer_dir is not None:
        from litgpt.tokenizer import Tokenizer

        Tokenizer(tokenizer_dir).save(output_dir, model_max_length=config.block_size)


# ---- a finetuning output_dir ------------------------------------------------------------------------------------
STATE_FILE = "train_state.pt"
HPARAMS_FILE = "hyperparameters.yaml"
ADAPTER_FILES = ("lora.pt", "adapter_config.json")
RESULT_FILES = ("metrics.json", "config.json", "pytorch_model.bin", "model.safetensors", "classifier.pt",
                "predictions.json", *ADAPTER_FILES)


def check_output_dir(output_dir: Path, data_dir: Path, resume: bool) -> None:
    """A user's folder is never overwritten: only a new or empty folder, or a finished run of ours, is written to."""
    check_writable_dir(output_dir, "--output_dir")
    out, data = output_dir.resolve(), data_dir.resolve()
    if out == data or data in out.parents:
        raise UsageError(f"--output_dir {output_dir}: inside --data_dir {data_dir}, which is never written; pick "
                         "another folder")
    if resume:
        if not (output_dir / STATE_FILE).is_file():
            raise UsageError(f"--resume: no {STATE_FILE} in --output_dir {output_dir}; nothing to continue")
        return
    if not (output_dir.is_dir() and any(output_dir.iterdir())):
        return
    if not is_finetune_output(output_dir):
        raise UsageError(f"--output_dir {output_dir}: not empty and not a finetuning output; refusing to write into it")
    if (output_dir / STATE_FILE).is_file() and not (output_dir / "metrics.json").is_file():
        raise UsageError(f"--output_dir {output_dir}: holds an unfinished run; pass --resume to continue it, or "
                         "pick another --output_dir")


def is_finetune_output(output_dir: Path) -> bool:
    path = output_dir / HPARAMS_FILE
    try:
        hparams = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(hparams, dict) and hparams.get("command") == "finetune"


def prepare_output_dir(output_dir: Path, hparams: Dict[str, Any], tokenizer, config: Config, resuming: bool) -> None:
    """Marks the folder as ours and drops the previous run's results, so they are never mixed with this run's."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not resuming and (output_dir / "metrics.json").is_file():
        print(f"note: replacing the finished finetuning run in {output_dir}", file=sys.stderr)
    atomic_write_text(output_dir / HPARAMS_FILE, yaml.safe_dump({"command": "finetune", **hparams}, sort_keys=False))
    for name in RESULT_FILES:  # this run writes its own; none of another run's may be left to mix with them
        (output_dir / name).unlink(missing_ok=True)
    if not resuming:
        (output_dir / STATE_FILE).unlink(missing_ok=True)
        tokenizer.save(output_dir, model_max_length=config.block_size)


def save_finetuned(output_dir: Path, weights: Dict[str, torch.Tensor], config: Config, report: Dict[str, Any]) -> None:
    """The finetuned model in HuggingFace's names (`pytorch_model.bin`), a classifier's head alone (`classifier.pt`)
    and `metrics.json`; the tokenizer files were written when the run started."""
    from litgpt.metrics import report_json

    save_hf_dir(weights, config, output_dir, safetensors=False, pytorch_bin=True)
    head = {k: v.float().contiguous() for k, v in weights.items() if k.startswith("classifier.")}
    if head:  # a sequence classifier's
        atomic_torch_save(head, output_dir / "classifier.pt")
    atomic_write_text(output_dir / "metrics.json", report_json(report))


def save_adapters(output_dir: Path, weights: Dict[str, torch.Tensor], config: Config, report: Dict[str, Any],
                  args, trainable: List[str]) -> None:
    """LoRA's output: `lora.pt` (only the tensors that trained: the adapters and the head), `adapter_config.json`
    (the base weights they go on, the LoRA settings, the model's config) and `metrics.json`. With `--merge` also
    the plain model, the adapters folded into its weights (`save_finetuned`)."""
    from litgpt.kernels import fold_lora

    atomic_torch_save({k: weights[k].contiguous() for k in trainable}, output_dir / "lora.pt")
    base = Path(args.model_name).expanduser()
    spec = {"base": str(base.resolve()) if base.exists() else args.model_name, "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "lora_targets": args.lora_targets.split(","), "model_config": config.to_dict()}
    atomic_write_text(output_dir / "adapter_config.json", json.dumps(spec, indent=2) + "\n")
    if args.merge:
        save_finetuned(output_dir, fold_lora(weights, args.lora_alpha / args.lora_r), config, report)
    else:
        from litgpt.metrics import report_json

        atomic_write_text(output_dir / "metrics.json", report_json(report))

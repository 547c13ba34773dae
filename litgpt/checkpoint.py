"""Any source of weights -> one loaded checkpoint (config, state dict, tokenizer folder), and the model built from it.

The sources every command accepts:
- a litgpt checkpoint dir: `lit_model.pth` + `model_config.yaml` (+ tokenizer files);
- a pretraining `out_dir`: its `best.pt` (else `final/`, else the newest `iter-*.pt`);
- a training-state file (`best.pt`, `iter-{step}.pt`);
- a HuggingFace RoBERTa or BERT dir (`config.json` + weights), converted in memory;
- a registry name such as `roberta-base` or a Hub id, when `litgpt download` put it under `checkpoints/`
  (`litgpt/hub.py` is how it gets there).
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from litgpt.config import Config, label_names
from litgpt.hub import WEIGHT_FORMATS, fetch_from_hub, hub_repo_id, local_hub_dir
from litgpt.train_state import iter_checkpoints, load_training_state
from litgpt.utils import UsageError, load_state_dict_file, read_json


@dataclass
class LoadedCheckpoint:
    config: Config
    state_dict: Dict[str, torch.Tensor]
    tokenizer_dir: Optional[Path]
    source: str  # one line for users: where the weights came from

    def load_tokenizer(self):
        """The tokenizer beside the weights, checked against the model's embedding table."""
        from litgpt.tokenizer import Tokenizer

        if self.tokenizer_dir is None:
            raise UsageError(f"{self.source}: no tokenizer files (tokenizer.json, vocab.json + merges.txt, or "
                             "vocab.txt) beside the weights")
        tokenizer = Tokenizer(self.tokenizer_dir)
        check_tokenizer(tokenizer, self.config, str(self.tokenizer_dir))
        return tokenizer


def load_checkpoint(source: Union[str, Path], checkpoints_dir: Path = Path("checkpoints")) -> LoadedCheckpoint:
    path = Path(source)
    if not path.exists() and not is_path_like(source):
        hub = local_hub_dir(str(source), checkpoints_dir)
        if hub is None:
            raise UsageError(
                f"{source}: no such checkpoint dir, and no downloaded weights under {checkpoints_dir}/"
                f" (run `litgpt download {hub_repo_id(str(source)) or source}`)"
            )
        path = hub
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")

    if path.is_file():
        return _from_state_file(path)
    if (path / "lit_model.pth").is_file():
        config = Config.from_checkpoint(path)
        state = load_state_dict_file(path / "lit_model.pth")
        return LoadedCheckpoint(config, state, find_tokenizer_dir(path), f"litgpt checkpoint {path}")
    if (path / "best.pt").is_file():
        return _from_state_file(path / "best.pt")
    if (path / "final" / "lit_model.pth").is_file():
        return load_checkpoint(path / "final")
    iters = iter_checkpoints(path)
    if iters:
        return _from_state_file(iters[-1])
    if (path / "config.json").is_file():
        config, state = load_hf_checkpoint(path)
        return LoadedCheckpoint(config, state, find_tokenizer_dir(path), f"HuggingFace checkpoint {path} (converted)")
    if (path / "adapter_config.json").is_file():
        return _from_adapters(path, checkpoints_dir)
    raise UsageError(
        f"{path}: not a checkpoint; expected lit_model.pth + model_config.yaml, a pretraining out_dir"
        " (best.pt, final/ or iter-*.pt) or a HuggingFace dir (config.json + weights)"
    )


def is_path_like(source: Union[str, Path]) -> bool:
    """A local path rather than a registry name or Hub id: a Path, or a string that starts like a path or whose
    parent folder exists here (`out/pretrain-dem` when `out/` exists is a typo, not a Hub repo)."""
    if isinstance(source, Path) or source.startswith((".", "/", "~")):
        return True
    parent = Path(source).parent
    return parent != Path(".") and parent.is_dir()


def build_model(config: Config, state_dict: Dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Instantiates the right head for `state_dict` and loads it strictly, with one clear error on a mismatch."""
    from litgpt.model_roberta import (
        RobertaForMaskedLM,
        RobertaForQuestionAnswering,
        RobertaForSequenceClassification,
        RobertaForTokenClassification,
        RobertaModel,
        model_class_for_state_dict,
    )

    kind = model_class_for_state_dict(state_dict)
    with torch.device("meta"):
        if kind == "classification":
            model = RobertaForSequenceClassification(config, state_dict["classifier.out_proj.weight"].shape[0])
        elif kind == "token_classification":
            model = RobertaForTokenClassification(config, state_dict["token_classifier.weight"].shape[0])
        elif kind == "qa":
            model = RobertaForQuestionAnswering(config)
        elif kind == "mlm":
            model = RobertaForMaskedLM(config)
        else:
            model = RobertaModel(config)
    if kind == "base":
        state_dict = {k[len("roberta.") :]: v for k, v in state_dict.items()}
    check_state_dict(model, state_dict, source)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    return model


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise UsageError(
            f"{source}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise UsageError(
                f"{source}: weight {key} has shape {tuple(state_dict[key].shape)}, the config expects"
                f" {tuple(value.shape)} (a checkpoint from another config?)"
            )


def find_checkpoint(name: str, flag: str, hint: str = "",
                    checkpoints_dir: Path = Path("checkpoints")) -> Optional[LoadedCheckpoint]:
    """Like `from_pretrained`: a local path, else what `litgpt download` put under `checkpoints/`, else the Hub
    (through its cache, downloading what is missing). None when `name` is neither a path nor a Hub model."""
    path = Path(name).expanduser()
    if path.exists():
        return load_checkpoint(path)
    if is_path_like(name):
        raise UsageError(f"{flag} {name}: no such file or folder")
    local = local_hub_dir(name, checkpoints_dir)
    if local is not None:
        return load_checkpoint(local)
    repo_id = hub_repo_id(name)
    if repo_id is None:
        return None
    print(f"Fetching {repo_id} from the HuggingFace Hub (into huggingface_hub's cache)")
    try:
        folder = fetch_from_hub(repo_id)
    except UsageError as ex:
        raise UsageError(
            f"{flag} {name}: no local weights (checked ./{name} and {checkpoints_dir}/{repo_id}) and the HuggingFace "
            f"Hub could not be reached ({str(ex).split('; ')[0]}). Options: run `litgpt download {repo_id}` while "
            f"online; pass a local checkpoint dir (litgpt, pretraining out_dir or HuggingFace) as {flag}{hint}"
        ) from None
    loaded = load_checkpoint(folder)
    loaded.source = f"HuggingFace Hub {repo_id} ({loaded.source})"
    return loaded


# ---- training-state files (see litgpt/train_state.py) -----------------------------------------------------------
def _from_state_file(path: Path) -> LoadedCheckpoint:
    state = load_training_state(path)
    if "model" in state and isinstance(state["model"], dict):
        weights = state["model"]
        if "model_config" not in state:
            raise UsageError(f"{path}: training state without model_config")
        config = Config(**state["model_config"])
    else:
        weights = state
        config_file = path.parent / "model_config.yaml"
        if not config_file.is_file():
            raise UsageError(f"{path}: plain weights need a model_config.yaml beside them")
        config = Config.from_file(config_file)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UsageError(f"{path}: model weights must be tensors")
    tokenizer_dir = find_tokenizer_dir(path.parent, path.parent / "final")
    step = state.get("step") if isinstance(state.get("step"), int) else None
    where = f"pretraining checkpoint {path}" + (f" (step {step})" if step is not None else "")
    return LoadedCheckpoint(config, weights, tokenizer_dir, where)


def _from_adapters(path: Path, checkpoints_dir: Path) -> LoadedCheckpoint:
    """A LoRA finetuning output (without `--merge`): the base weights that `adapter_config.json` names, with
    `lora.pt` (the adapters and the head) folded in: one plain classifier."""
    from litgpt.kernels import fold_lora
    from litgpt.model_roberta import headed_names

    spec_file = path / "adapter_config.json"
    spec = read_json(spec_file)
    try:
        base_name, scaling, config = spec["base"], spec["lora_alpha"] / spec["lora_r"], Config(**spec["model_config"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as ex:
        raise UsageError(f"{spec_file}: not a LoRA adapter config ({ex.__class__.__name__}: {ex})") from None
    if not (path / "lora.pt").is_file():
        raise UsageError(f"{path}: adapter_config.json without its lora.pt")
    base = find_checkpoint(base_name, f"{spec_file}: base", checkpoints_dir=checkpoints_dir)
    if base is None:
        raise UsageError(f"{spec_file}: its base weights {base_name!r} are not here; put them back (or pass --merge "
                         "when finetuning, for a self-contained output)")
    # the encoder; the head is the adapter's
    state = {k: v for k, v in headed_names(base.state_dict).items() if k.startswith("roberta.")}
    state.update(load_state_dict_file(path / "lora.pt"))
    return LoadedCheckpoint(config, fold_lora(state, scaling), find_tokenizer_dir(path),
                            f"LoRA adapters {path} on {base.source}")


# ---- HuggingFace folders ----------------------------------------------------------------------------------------
def load_hf_checkpoint(
    checkpoint_dir: Path, model_name: Optional[str] = None
) -> Tuple[Config, Dict[str, torch.Tensor]]:
    """Reads a HF RoBERTa or BERT dir into our config and state dict, checked against each other."""
    from litgpt.convert import config_from_hf, hf_to_lit_state_dict, read_hf_config

    checkpoint_dir = Path(checkpoint_dir)
    hf_config = read_hf_config(checkpoint_dir)
    config = config_from_hf(hf_config, model_name)
    architecture = (hf_config.get("architectures") or [None])[0]
    state = hf_to_lit_state_dict(load_hf_weights(checkpoint_dir), config, architecture)
    if "lm_head.bias" in state:  # an MLM model reads no pooler (HF's BertForMaskedLM drops it too)
        state = {k: v for k, v in state.items() if not k.startswith("roberta.pooler.")}
    head = state.get("classifier.out_proj.weight", state.get("token_classifier.weight"))
    if head is not None:
        num_labels = head.shape[0]
        if config.num_labels != num_labels:
            config.num_labels = num_labels
            config.id2label = dict(enumerate(label_names(config.id2label, num_labels)))
    build_model(config, state, str(checkpoint_dir))  # validates names and shapes
    return config, state


def load_hf_weights(checkpoint_dir: Path) -> Dict[str, torch.Tensor]:
    """Reads `model.safetensors` (single or sharded) or `pytorch_model.bin`, safely."""
    for single, index_name, _ in WEIGHT_FORMATS:
        if (checkpoint_dir / single).is_file():
            return load_state_dict_file(checkpoint_dir / single)
        index = checkpoint_dir / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: Dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_state_dict_file(checkpoint_dir / shard))
            return state
    raise UsageError(
        f"{checkpoint_dir}: no weights found; looked for model.safetensors, model.safetensors.index.json,"
        " pytorch_model.bin and pytorch_model.bin.index.json"
    )


# ---- tokenizers -------------------------------------------------------------------------------------------------
def find_tokenizer_dir(*candidates: Path) -> Optional[Path]:
    for path in candidates:
        if any((path / name).is_file() for name in ("tokenizer.json", "vocab.json", "vocab.txt")):
            return path
    return None


def check_tokenizer(tokenizer, config: Config, source: str, need_mask: bool = False) -> None:
    """The tokenizer must fit the model's embedding table (and have `<mask>` where the task needs it)."""
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise UsageError(f"{source}: the tokenizer's vocabulary ({tokenizer.vocab_size} tokens) exceeds the model's "
                         f"embedding table ({config.padded_vocab_size} rows; a tokenizer from another model?)")
    if need_mask and tokenizer.mask_id is None:
        raise UsageError(f"{source}: tokenizer has no <mask> token")


def prepare_tokenizer(fabric, data, out_dir: Path, tokenizer_dir: Optional[Path], vocab_size: Optional[int],
                      initial_tokenizer_dir: Optional[Path], config: Config, resuming: bool):
    """Pretraining's tokenizer: the given one, the resumed run's, the initial checkpoint's, or else one trained on
    the training text (by rank 0; the others load it)."""
    from litgpt.tokenizer import Tokenizer
    from litgpt.train_tokenizer import train_tokenizer

    candidate = next((c for c in (tokenizer_dir, out_dir if resuming else None, initial_tokenizer_dir)
                      if c is not None), None)
    if candidate is None:
        candidate = out_dir
        if fabric.global_rank == 0:
            size = vocab_size or config.vocab_size
            kind = "wordpiece" if config.model_type == "bert" else "bpe"
            fabric.print(f"No --tokenizer_dir: training a {kind} tokenizer (vocab <= {size}) on the training text")
            train_tokenizer(data.tokenizer_training_texts(), vocab_size=size, out_dir=candidate, kind=kind)
        fabric.barrier()
    tokenizer = Tokenizer(candidate)
    check_tokenizer(tokenizer, config, str(candidate), need_mask=True)
    return tokenizer


def adopt_tokenizer_ids(config: Config, tokenizer, weights_given: bool) -> Config:
    """Special ids come from the tokenizer. With existing weights they must match the config; a fresh model adopts
    them."""
    ids = dict(pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
               mask_token_id=tokenizer.mask_id)
    diffs = {k: (getattr(config, k), v) for k, v in ids.items() if getattr(config, k) != v}
    if weights_given and "pad_token_id" in diffs:
        raise UsageError(f"tokenizer special ids {diffs} (config, tokenizer) disagree with the checkpoint's config")
    return replace(config, **ids) if diffs else config

"""`litgpt finetune` / `scripts/finetune_roberta.py`: sequence classification on labelled text with Lightning Fabric.

setup() checks the flags, reads the data and finds the weights -> main() builds tokenizer batches, model and optimizer
-> fit() trains epoch by epoch, evaluates on the test split after each one and keeps the best epoch -> save_outputs()
writes a HuggingFace-loadable `output_dir` (config.json, pytorch_model.bin, tokenizer, classifier.pt, metrics.json).

After every epoch `output_dir/train_state.pt` holds everything needed to continue (model, optimizer, scheduler, RNG,
the best epoch so far); `--resume` continues from it and ends with the same weights as an uninterrupted run.
"""

import json
import math
import os
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from litgpt.config import Config, name_to_config
from litgpt.data.classification import ClassificationData, load_classification_data, make_dataloader, tokenize_split
from litgpt.model_roberta import RobertaForSequenceClassification
from litgpt.utils import (UsageError, atomic_torch_save, atomic_write_text, capture_rng, check_writable_dir, make_adamw,
                          restore_rng, safe_torch_load)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
# RoBERTa's position table: no released RoBERTa reads more than this many tokens
MAX_POSITIONS = 512
DEFAULT_MAX_LENGTH = 128
# flags that take no value on the command line (`--use_agnews` alone means true)
STATE_FILE = "train_state.pt"
HPARAMS_FILE = "hyperparameters.yaml"
# what must not change between a run and its `--resume`, or the result would not be the uninterrupted run's
RESUME_KEYS = ("num_labels", "batch_size", "learning_rate", "max_length", "seed", "warmup_ratio", "weight_decay",
               "max_grad_norm", "precision", "use_agnews", "label_names")
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
             "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"]


def setup(
    data_dir: Optional[Path] = None,
    output_dir: Path = Path("out/roberta_finetuned"),
    model_name: str = "roberta-base",
    num_labels: int = 2,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    num_epochs: int = 3,
    max_length: int = DEFAULT_MAX_LENGTH,
    use_agnews: bool = False,
    seed: int = 42,
    precision: Optional[str] = None,
    devices: Union[int, str] = 1,
    accelerator: str = "auto",
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    eval_batch_size: Optional[int] = None,
    num_workers: int = 0,
    from_scratch: bool = False,
    resume: bool = False,
    max_grad_norm: Optional[float] = 1.0,
    label_names: Optional[List[str]] = None,
) -> None:
    """Finetune RoBERTa for sequence classification and evaluate it on the test split after every epoch.

    Args:
        data_dir: Folder with the train and test splits: train.json/test.json (a list of {"text", "label"}),
            .jsonl, or .csv/.tsv with `text` and `label` columns (required). Labels are ids or class names.
        output_dir: Where the finetuned model goes: config.json, pytorch_model.bin, tokenizer files, classifier.pt,
            metrics.json (and train_state.pt for --resume). Must be new, empty or a previous finetuning output.
        model_name: Weights to start from: a litgpt checkpoint dir, a pretraining out_dir (its best.pt), a
            HuggingFace RoBERTa dir, or a name such as roberta-base (from checkpoints/ when `litgpt download`
            put it there, else from the HuggingFace Hub). With --from_scratch: a registry config name.
        num_labels: Number of classes.
        batch_size: Training batch size (per device).
        learning_rate: Peak learning rate (AdamW).
        num_epochs: Training epochs.
        max_length: Longest input in tokens; longer texts are truncated (keeping </s>). At most 512.
        use_agnews: The data is AG News: JSONL with labels 0-3, or the original headerless train.csv/test.csv
            (class index 1-4, title, description). Labels are named World, Sports, Business, Sci/Tech.
        seed: Random seed for the new head, shuffling and dropout.
        precision: 32-true, bf16-mixed, 16-mixed or bf16-true; defaults to bf16-mixed on GPUs that support it,
            else 32-true.
        devices: Devices to train on (an int, or "auto").
        accelerator: cpu, cuda, mps or auto.
        warmup_ratio: Fraction of the training steps with a linear warmup; then the rate decays linearly to 0.
        weight_decay: AdamW weight decay; never applied to biases and LayerNorm weights.
        eval_batch_size: Evaluation batch size; defaults to twice the training batch size.
        num_workers: Data-loading worker processes.
        from_scratch: Random init from the registry config --model_name (e.g. roberta-tiny) and a tokenizer
            trained on the training texts, instead of pretrained weights.
        resume: Continue the run in output_dir from its train_state.pt (saved after every epoch); with the same
            flags, the result equals an uninterrupted run. A larger --num_epochs trains further.
        max_grad_norm: Gradient clipping by global norm; 0 or null disables it.
        label_names: Class names in id order, e.g. `--label_names '[negative, positive]'`; they map string labels
            in the data to ids and name the classes in config.json and metrics.json.
    """
    args = dict(data_dir=str(data_dir) if data_dir is not None else None, output_dir=str(output_dir),
                model_name=model_name, num_labels=num_labels, batch_size=batch_size, learning_rate=learning_rate,
                num_epochs=num_epochs, max_length=max_length, use_agnews=use_agnews, seed=seed, precision=precision,
                devices=devices, accelerator=accelerator, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
                eval_batch_size=eval_batch_size or 2 * batch_size, num_workers=num_workers, from_scratch=from_scratch,
                max_grad_norm=max_grad_norm or None, label_names=list(label_names) if label_names else None)
    validate_args(args)
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    check_output_dir(output_dir, data_dir, resume)

    data = load_classification_data(data_dir, num_labels, use_agnews, label_names)
    resume_state = None
    if resume:
        resume_state = load_resume_state(output_dir, args, data)
        config = Config(**resume_state["model_config"])
        from litgpt.tokenizer import Tokenizer

        tokenizer = Tokenizer(output_dir)
        weights, source = None, resume_state["weights_source"]
    else:
        config, weights, tokenizer, source = resolve_weights(model_name, from_scratch, data, num_labels)
    check_tokenizer(tokenizer, config, source)
    if weights is not None:
        with torch.device("meta"):
            load_weights(RobertaForSequenceClassification(config, num_labels), weights, source, check_only=True)
    # the requested --max_length stays in `args` (a resume compares it); this is what the model gets
    args["tokens_per_example"] = check_max_length(max_length, config)
    config = Config(**{**asdict(config), "num_labels": num_labels, "id2label": data.id2label})
    if args["precision"] is None:
        args["precision"] = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"

    import lightning as L

    try:
        fabric = L.Fabric(devices=devices, accelerator=accelerator, precision=args["precision"])
    except (ValueError, RuntimeError, ImportError) as ex:
        first = (str(ex).strip().splitlines() or [ex.__class__.__name__])[0]
        raise UsageError(f"--accelerator {accelerator} --devices {devices} --precision {args['precision']}: {first}") from None
    fabric.launch(main, args, data, config, tokenizer, weights, source, output_dir, resume_state)


def validate_args(args: Dict[str, Any]) -> None:
    if args["data_dir"] is None:
        raise UsageError("--data_dir is required: the folder with train.json and test.json (or .jsonl/.csv/.tsv)")
    positive = ("num_labels", "batch_size", "num_epochs", "eval_batch_size")
    for name in positive:
        if not isinstance(args[name], int) or args[name] <= 0:
            raise UsageError(f"--{name} {args[name]}: must be a positive integer")
    if args["num_labels"] < 2:
        raise UsageError(f"--num_labels {args['num_labels']}: classification needs at least 2 classes")
    if not args["learning_rate"] > 0:
        raise UsageError(f"--learning_rate {args['learning_rate']}: must be positive")
    if not 0 <= args["warmup_ratio"] < 1:
        raise UsageError(f"--warmup_ratio {args['warmup_ratio']}: expected a fraction in [0, 1)")
    if args["weight_decay"] < 0:
        raise UsageError(f"--weight_decay {args['weight_decay']}: must be >= 0")
    if args["max_grad_norm"] is not None and args["max_grad_norm"] < 0:
        raise UsageError(f"--max_grad_norm {args['max_grad_norm']}: must be positive (0 disables clipping)")
    if args["num_workers"] < 0:
        raise UsageError(f"--num_workers {args['num_workers']}: must be >= 0")
    if args["max_length"] < 3:
        raise UsageError(f"--max_length {args['max_length']}: must be at least 3 (<s>, a token, </s>)")
    if args["max_length"] > MAX_POSITIONS:
        raise UsageError(f"--max_length {args['max_length']}: RoBERTa reads at most {MAX_POSITIONS} tokens")
    if args["precision"] is not None and args["precision"] not in PRECISIONS:
        raise UsageError(f"--precision {args['precision']!r}: expected one of {', '.join(PRECISIONS)}")
    devices = args["devices"]
    if isinstance(devices, str) and devices != "auto":
        if not re.fullmatch(r"-?\d+", devices):
            raise UsageError(f"--devices {devices!r}: expected a number or 'auto'")
        devices = int(devices)
    if isinstance(devices, int) and devices != -1:
        available = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
        if devices <= 0 or devices > available:
            raise UsageError(f"--devices {devices}: expected 1 to {available}")


def check_max_length(max_length: int, config: Config) -> int:
    if max_length <= config.block_size:
        return max_length
    if max_length == DEFAULT_MAX_LENGTH:  # the default, not a request: fit it to small models (noted in main)
        return config.block_size
    raise UsageError(f"--max_length {max_length}: the model reads at most {config.block_size} tokens")


def check_tokenizer(tokenizer, config: Config, source: str) -> None:
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise UsageError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
                         f"{config.padded_vocab_size} embeddings")
    if tokenizer.pad_id != config.pad_token_id:
        raise UsageError(f"{source}: tokenizer pad id {tokenizer.pad_id} differs from the model's pad_token_id "
                         f"{config.pad_token_id}; use the tokenizer the model was trained with")


# ---- the output folder ------------------------------------------------------------------------------------------
def is_our_output(output_dir: Path) -> bool:
    import yaml

    path = output_dir / HPARAMS_FILE
    try:
        hparams = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(hparams, dict) and hparams.get("command") == "finetune"


def check_output_dir(output_dir: Path, data_dir: Path, resume: bool) -> None:
    check_writable_dir(output_dir, "--output_dir")
    out, data = output_dir.resolve(), data_dir.resolve()
    if out == data or data in out.parents:
        raise UsageError(f"--output_dir {output_dir}: inside --data_dir {data_dir}, which is never written; pick "
                         "another folder")
    has_files = output_dir.is_dir() and any(output_dir.iterdir())
    if resume:
        if not (output_dir / STATE_FILE).is_file():
            raise UsageError(f"--resume: no {STATE_FILE} in --output_dir {output_dir}; nothing to continue")
        return
    if not has_files:
        return
    if not is_our_output(output_dir):
        raise UsageError(f"--output_dir {output_dir}: not empty and not a finetuning output; refusing to write into it")
    if (output_dir / STATE_FILE).is_file() and not (output_dir / "metrics.json").is_file():
        raise UsageError(f"--output_dir {output_dir}: holds an unfinished run; pass --resume to continue it, or "
                         "pick another --output_dir")


def prepare_output_dir(output_dir: Path, args: Dict[str, Any], tokenizer, config: Config, resuming: bool) -> None:
    """Marks the folder as ours and drops the previous run's results, so they are never mixed with this run's."""
    import yaml

    output_dir.mkdir(parents=True, exist_ok=True)
    if not resuming and (output_dir / "metrics.json").is_file():
        print(f"note: replacing the finished finetuning run in {output_dir}", file=sys.stderr)
    atomic_write_text(output_dir / HPARAMS_FILE, yaml.safe_dump({"command": "finetune", **args}, sort_keys=False))
    (output_dir / "metrics.json").unlink(missing_ok=True)
    if not resuming:
        (output_dir / STATE_FILE).unlink(missing_ok=True)
        tokenizer.save(output_dir, model_max_length=config.block_size)


# ---- where the weights come from ----------------------------------------------------------------------------
def resolve_weights(model_name: str, from_scratch: bool, data: ClassificationData, num_labels: int
                    ) -> Tuple[Config, Optional[Dict[str, torch.Tensor]], Any, str]:
    """(config, state dict or None for random init, tokenizer, one line saying where the weights came from)."""
    from litgpt.checkpoint import load_checkpoint, local_hub_dir
    from litgpt.tokenizer import Tokenizer, train_tokenizer

    if from_scratch:
        if model_name not in name_to_config:
            raise UsageError(f"--from_scratch: --model_name {model_name!r} is not a registry config; known: "
                             f"{', '.join(sorted(name_to_config))}")
        config = Config.from_name(model_name)
        tokenizer = train_tokenizer(data.train.texts, vocab_size=config.vocab_size)
        config = Config(**{**asdict(config), "pad_token_id": tokenizer.pad_id, "bos_token_id": tokenizer.bos_id,
                           "eos_token_id": tokenizer.eos_id, "mask_token_id": tokenizer.mask_id})
        source = (f"random init from the {model_name} config (--from_scratch), tokenizer trained on "
                  f"{data.train.path} ({tokenizer.vocab_size} tokens)")
        return config, None, tokenizer, source

    path = Path(model_name).expanduser()
    if path.exists():
        loaded = load_checkpoint(path)
    else:
        hub_id = hub_repo_id(model_name)
        local = local_hub_dir(model_name) or (local_hub_dir(hub_id) if hub_id else None)
        if local is not None:
            loaded = load_checkpoint(local)
        elif hub_id is None:
            if model_name in name_to_config:
                raise UsageError(f"--model_name {model_name}: a registry config without published weights; add "
                                 "--from_scratch to train it from random init, or pass a checkpoint dir")
            raise UsageError(f"--model_name {model_name}: not a folder, a registry name "
                             f"({', '.join(sorted(name_to_config))}) or a HuggingFace repo id")
        else:
            loaded = load_checkpoint(download_from_hub(model_name, hub_id))
            loaded.source = f"HuggingFace Hub {hub_id} ({loaded.source})"
    if loaded.tokenizer_dir is None:
        raise UsageError(f"{loaded.source}: no tokenizer files (tokenizer.json or vocab.json + merges.txt) beside the "
                         "weights")
    state = {k if k.startswith(("roberta.", "lm_head.", "classifier.")) else f"roberta.{k}": v
             for k, v in loaded.state_dict.items()}
    head = state.get("classifier.out_proj.weight")
    if head is not None and head.shape[0] == num_labels:
        what = "encoder and classification head"
    else:
        state = {k: v for k, v in state.items() if k.startswith("roberta.")}
        what = f"encoder, new classification head ({num_labels} labels)"
    return loaded.config, state, Tokenizer(loaded.tokenizer_dir), f"{loaded.source}: {what}"


def hub_repo_id(model_name: str) -> Optional[str]:
    hf = name_to_config.get(model_name, {}).get("hf_config")
    if hf:
        return f"{hf['org']}/{hf['name']}"
    return model_name if re.fullmatch(r"[\w.-]+/[\w.-]+", model_name) else None


def download_from_hub(model_name: str, repo_id: str) -> Path:
    """Like `from_pretrained`: the HuggingFace cache, downloading what is missing. Any failure is one clear line."""
    try:
        from huggingface_hub import snapshot_download

        print(f"Fetching {repo_id} from the HuggingFace Hub (into huggingface_hub's cache)")
        path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + ["pytorch_model.bin"]))
    except Exception as ex:  # offline, no such repo, HTTP errors: huggingface_hub raises many kinds
        reason = (str(ex).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise UsageError(
            f"--model_name {model_name}: no local weights (checked ./{model_name} and checkpoints/{repo_id}) and the "
            f"HuggingFace Hub could not be reached ({ex.__class__.__name__}: {reason}). Options: run "
            f"`litgpt download {repo_id}` while online; pass a local checkpoint dir (litgpt, pretraining out_dir or "
            f"HuggingFace) as --model_name; or add --from_scratch with a registry config such as roberta-tiny"
        ) from None
    return path


# ---- resuming ---------------------------------------------------------------------------------------------------
def load_resume_state(output_dir: Path, args: Dict[str, Any], data: ClassificationData) -> Dict[str, Any]:
    path = output_dir / STATE_FILE
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "model" not in state or "args" not in state:
        raise UsageError(f"{path}: not a finetuning training state")
    saved = state["args"]
    diffs = [f"--{k} {saved.get(k)!r} (now {args[k]!r})" for k in RESUME_KEYS
             if k != "precision" and saved.get(k) != args[k]]
    if args["precision"] is not None and saved.get("precision") != args["precision"]:
        diffs.append(f"--precision {saved.get('precision')!r} (now {args['precision']!r})")
    if diffs:
        raise UsageError(f"--resume: the saved run used {', '.join(diffs)}; resume with the same flags")
    if state["data_fingerprint"] != data.fingerprint:
        raise UsageError(f"--resume: the data in {args['data_dir']} differs from the data of the saved run")
    if state["epoch"] >= args["num_epochs"]:
        raise UsageError(f"--resume: the saved run already finished {state['epoch']} epoch(s); pass a larger "
                         "--num_epochs to train further")
    if saved.get("num_epochs") != args["num_epochs"]:
        print(f"note: --num_epochs {args['num_epochs']} differs from the saved run's {saved.get('num_epochs')}: the "
              "learning-rate schedule is re-planned, so this is not the same as one uninterrupted run", file=sys.stderr)
    args["precision"] = saved.get("precision", args["precision"])
    return state


# ---- training ---------------------------------------------------------------------------------------------------
def main(fabric, args: Dict[str, Any], data: ClassificationData, config: Config, tokenizer,
         weights: Optional[Dict[str, torch.Tensor]], source: str, output_dir: Path,
         resume_state: Optional[Dict[str, Any]]) -> None:
    if resume_state is not None and resume_state.get("world_size", 1) != fabric.world_size:
        raise UsageError(f"--resume: the saved run trained on {resume_state.get('world_size', 1)} device(s), now "
                         f"{fabric.world_size}; resume with the same --devices")
    fabric.seed_everything(args["seed"])
    if fabric.global_rank == 0:
        prepare_output_dir(output_dir, args, tokenizer, config, resume_state is not None)
    fabric.barrier()
    fabric.print(f"Weights: {source}")
    if args["tokens_per_example"] != args["max_length"]:
        fabric.print(f"note: the model has {args['tokens_per_example']} positions; using --max_length "
                     f"{args['tokens_per_example']}", file=sys.stderr)

    rank, world = fabric.global_rank, fabric.world_size
    train_set = tokenize_split(data.train, tokenizer, args["tokens_per_example"])
    test_set = tokenize_split(data.test, tokenizer, args["tokens_per_example"])
    train_loader = make_dataloader(train_set, args["batch_size"], tokenizer.pad_id, shuffle=True, seed=args["seed"],
                                   rank=rank, world_size=world, num_workers=args["num_workers"])
    test_loader = make_dataloader(test_set, args["eval_batch_size"], tokenizer.pad_id, shuffle=False, rank=rank,
                                  world_size=world, num_workers=args["num_workers"])

    model = RobertaForSequenceClassification(config, config.num_labels)
    if weights is not None:
        load_weights(model, weights, source)
    optimizer = make_adamw(model, args["learning_rate"], args["weight_decay"], fabric.device)
    steps_per_epoch = len(train_loader)
    scheduler = make_scheduler(optimizer, steps_per_epoch * args["num_epochs"], args["warmup_ratio"])
    model, optimizer = fabric.setup(model, optimizer)

    progress = {"epoch": 0, "best": None, "history": []}
    if resume_state is not None:
        unwrap(model).load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        progress = {"epoch": resume_state["epoch"], "best": resume_state["best"], "history": resume_state["history"]}
        restore_rng(resume_state["rng"])
        fabric.print(f"Resumed {output_dir / STATE_FILE} after epoch {progress['epoch']}")
    fabric.print(f"{data.num_labels} labels, {len(data.train)} train / {len(data.test)} test examples, "
                 f"{steps_per_epoch} steps per epoch, precision {args['precision']}")

    fit(fabric, model, optimizer, scheduler, train_loader, test_loader, args, config, data, progress, output_dir, source)
    if fabric.global_rank == 0:
        save_outputs(output_dir, progress, config, data, source)
    fabric.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_forward_module", model)
    return getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def load_weights(model: RobertaForSequenceClassification, state: Dict[str, torch.Tensor], source: str,
                 check_only: bool = False) -> None:
    """The encoder (and a classification head when `state` has one that fits) from `state`; names and shapes are
    checked first, so a mismatch is one clear error."""
    from litgpt.scripts.convert_hf_checkpoint import check_state_dict

    for prefix, module in (("roberta.", model.roberta), ("classifier.", model.classifier)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not part and prefix == "classifier.":
            continue
        check_state_dict(module, part, source)
        if not check_only:
            module.load_state_dict(part)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup over `warmup_ratio` of the steps, then linear decay to 0 at the last step."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(fabric, model, optimizer, scheduler, train_loader, test_loader, args: Dict[str, Any], config: Config,
        data: ClassificationData, progress: Dict[str, Any], output_dir: Path, source: str) -> None:
    from tqdm.auto import tqdm

    num_epochs = args["num_epochs"]
    for epoch in range(progress["epoch"], num_epochs):
        t0 = time.perf_counter()
        model.train()
        train_loader.batch_sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
        seen = 0
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{num_epochs}", unit="step", leave=False,
                   disable=None if fabric.global_rank == 0 else True, file=sys.stderr)
        for i, batch in enumerate(train_loader):
            batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
            logits = model(batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(logits.float(), batch["labels"])
            fabric.backward(loss)
            if args["max_grad_norm"]:
                fabric.clip_gradients(model, optimizer, max_norm=args["max_grad_norm"], error_if_nonfinite=False)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            loss_sum += loss.detach().double() * len(batch["labels"])
            seen += len(batch["labels"])
            bar.update(1)
            if not bar.disable and (i % 10 == 0 or i + 1 == len(train_loader)):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=fabric.device, dtype=torch.float64)])
        if fabric.world_size > 1:
            totals = fabric.all_reduce(totals, reduce_op="sum")
        train_loss = (totals[0] / totals[1].clamp(min=1)).item()
        metrics = evaluate(fabric, model, test_loader, data.num_labels)
        metrics.update(epoch=epoch + 1, train_loss=train_loss)
        progress["history"].append({k: metrics[k] for k in ("epoch", "train_loss", "loss", "accuracy", "f1")})
        best = progress["best"]
        improved = best is None or (metrics["accuracy"], -metrics["loss"]) > (best["metrics"]["accuracy"],
                                                                              -best["metrics"]["loss"])
        if improved:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
            progress["best"] = {"epoch": epoch + 1, "metrics": metrics, "model": weights}
        progress["epoch"] = epoch + 1
        fabric.print(f"epoch {epoch + 1}/{num_epochs} | train loss {train_loss:.4f} | test loss {metrics['loss']:.4f} "
                     f"| accuracy {metrics['accuracy']:.4f} | f1 {metrics['f1']:.4f} | "
                     f"{time.perf_counter() - t0:.1f}s" + (" | best so far" if improved else ""))
        if fabric.global_rank == 0:
            save_train_state(output_dir / STATE_FILE, model, optimizer, scheduler, progress, args, config, data, source,
                             fabric.world_size)
        fabric.barrier()


def save_train_state(path: Path, model, optimizer, scheduler, progress: Dict[str, Any], args: Dict[str, Any],
                     config: Config, data: ClassificationData, source: str, world_size: int = 1) -> None:
    atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
        "epoch": progress["epoch"],
        "best": progress["best"],
        "history": progress["history"],
        "args": args,
        "model_config": asdict(config),
        "data_fingerprint": data.fingerprint,
        "weights_source": source,
        "world_size": world_size,
    }, path)


# ---- evaluation -------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(fabric, model, loader, num_labels: int) -> Dict[str, Any]:
    """Test-split loss, accuracy and precision/recall/F1 (binary for 2 labels, positive class 1; else macro),
    per-class scores and the confusion matrix (rows: true label, columns: predicted)."""
    from torchmetrics import MeanMetric, MetricCollection
    from torchmetrics.classification import (
        BinaryF1Score,
        BinaryPrecision,
        BinaryRecall,
        MulticlassAccuracy,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    binary = num_labels == 2
    n = dict(num_classes=num_labels)
    metrics = MetricCollection({
        "accuracy": MulticlassAccuracy(**n, average="micro"),
        "precision": BinaryPrecision() if binary else MulticlassPrecision(**n, average="macro"),
        "recall": BinaryRecall() if binary else MulticlassRecall(**n, average="macro"),
        "f1": BinaryF1Score() if binary else MulticlassF1Score(**n, average="macro"),
        "class_precision": MulticlassPrecision(**n, average="none"),
        "class_recall": MulticlassRecall(**n, average="none"),
        "class_f1": MulticlassF1Score(**n, average="none"),
        "confusion_matrix": MulticlassConfusionMatrix(**n),
    }).to(fabric.device)
    mean_loss = MeanMetric().to(fabric.device)
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
        logits = model(batch["input_ids"], batch["attention_mask"]).float()
        mean_loss.update(F.cross_entropy(logits, batch["labels"], reduction="none"))
        metrics.update(logits.argmax(-1), batch["labels"])
    model.train(was_training)
    values = metrics.compute()
    confusion = values["confusion_matrix"].long().cpu()
    return {
        "loss": float(mean_loss.compute()),
        "accuracy": float(values["accuracy"]),
        "f1": float(values["f1"]),
        "precision": float(values["precision"]),
        "recall": float(values["recall"]),
        "average": "binary" if binary else "macro",
        "class_precision": values["class_precision"].tolist(),
        "class_recall": values["class_recall"].tolist(),
        "class_f1": values["class_f1"].tolist(),
        "support": confusion.sum(1).tolist(),
        "confusion_matrix": confusion.tolist(),
        "num_examples": int(confusion.sum()),
    }


def metrics_report(metrics: Dict[str, Any], id2label: Dict[int, str], best_epoch: int, num_epochs: int,
                   source: str) -> Dict[str, Any]:
    names = [id2label.get(i, f"LABEL_{i}") for i in range(len(metrics["support"]))]
    per_class = {name: {"id": i, "precision": metrics["class_precision"][i], "recall": metrics["class_recall"][i],
                        "f1": metrics["class_f1"][i], "support": metrics["support"][i]} for i, name in enumerate(names)}
    return {
        "loss": metrics["loss"],
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "average": metrics["average"],
        "positive_label": names[1] if metrics["average"] == "binary" else None,
        "per_class": per_class,
        "confusion_matrix": metrics["confusion_matrix"],
        "confusion_matrix_axes": "rows: true label, columns: predicted label (label id order)",
        "num_examples": metrics["num_examples"],
        "weights_source": source,
        "best_epoch": best_epoch,
        "num_epochs": num_epochs,
        "num_labels": len(names),
        "id2label": {str(i): name for i, name in enumerate(names)},
    }


def format_report(report: Dict[str, Any]) -> str:
    names = list(report["per_class"])
    avg = (f"binary, positive class 1 ({report['positive_label']})" if report["average"] == "binary"
           else "macro average over classes")
    lines = [f"Test metrics of the best epoch ({report['best_epoch']} of {report['num_epochs']}, by accuracy), "
             f"{report['num_examples']} examples; precision/recall/f1: {avg}",
             f"  loss {report['loss']:.4f} | accuracy {report['accuracy']:.4f} | f1 {report['f1']:.4f} | "
             f"precision {report['precision']:.4f} | recall {report['recall']:.4f}"]
    width = max(8, *(len(n) for n in names)) + 4
    lines.append(f"  {'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name in names:
        c = report["per_class"][name]
        lines.append(f"  {str(c['id']) + ' ' + name:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} "
                     f"{c['f1']:>9.4f} {c['support']:>8d}")
    lines.append("  confusion matrix (rows: true, columns: predicted)")
    cell = max(5, *(len(str(v)) + 1 for row in report["confusion_matrix"] for v in row))
    lines.append("  " + " " * width + "".join(f"{i:>{cell}}" for i in range(len(names))))
    for i, row in enumerate(report["confusion_matrix"]):
        lines.append(f"  {str(i) + ' ' + names[i]:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


# ---- outputs ----------------------------------------------------------------------------------------------------
def save_outputs(output_dir: Path, progress: Dict[str, Any], config: Config, data: ClassificationData,
                 source: str) -> None:
    """The best epoch's weights as a HuggingFace RobertaForSequenceClassification dir, plus classifier.pt and
    metrics.json. Every file is written to a temp file and renamed."""
    from litgpt.scripts.convert_lit_checkpoint import save_hf_dir

    best = progress["best"]
    weights = best["model"]
    out_config = Config(**{**asdict(config), "num_labels": data.num_labels, "id2label": data.id2label})
    save_hf_dir(weights, out_config, output_dir, tokenizer_dir=None, safetensors=False, pytorch_bin=True)
    stale = output_dir / "model.safetensors"  # from_pretrained would prefer it to our pytorch_model.bin
    if stale.is_file():
        stale.unlink()
    atomic_torch_save({k: v.float().contiguous() for k, v in weights.items() if k.startswith("classifier.")},
                      output_dir / "classifier.pt")
    report = metrics_report(best["metrics"], data.id2label, best["epoch"], progress["epoch"], source)
    report["history"] = progress["history"]
    text = json.dumps(report, indent=2)
    # lists of numbers (confusion-matrix rows) on one line each
    text = re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)
    atomic_write_text(output_dir / "metrics.json", text + "\n")
    print(format_report(report))
    print(f"Saved the finetuned model (epoch {best['epoch']}) to {output_dir}")

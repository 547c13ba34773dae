"""`litgpt pretrain`: masked-language-model (or causal) pretraining of RoBERTa with Lightning Fabric.

setup() checks the flags and starts Fabric -> main() builds tokenizer, data, model and optimizer -> fit() runs the loop.
"""

import math
import os
import signal
import sys
import time
from dataclasses import asdict, fields, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Union

import torch
import yaml

from litgpt.args import EvalArgs, TrainArgs
from litgpt.checkpoint import iter_checkpoints, load_training_state
from litgpt.config import Config, name_to_config
from litgpt.data.base import DataModule
from litgpt.data.mlm import check_mask_probs
from litgpt.model_roberta import RobertaForMaskedLM
from litgpt.utils import (RunError, UsageError, atomic_torch_save, atomic_write_text, capture_rng, check_writable_dir,
                          make_adamw, restore_rng)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
# fields that must agree between a checkpoint and the model it is loaded into
ARCH_FIELDS = ("vocab_size", "padded_vocab_size", "n_layer", "n_embd", "n_head", "intermediate_size", "block_size",
               "type_vocab_size", "pad_token_id")


def setup(
    model_name: str = "roberta-base",
    data_dir: Optional[Path] = None,
    data: Optional[DataModule] = None,
    out_dir: Path = Path("out/pretrain"),
    model_config: Optional[Config] = None,
    tokenizer_dir: Optional[Path] = None,
    tokenizer_vocab_size: Optional[int] = None,
    initial_checkpoint_dir: Optional[Path] = None,
    resume: Union[bool, Literal["auto"], Path] = False,
    train: TrainArgs = TrainArgs(),
    eval: EvalArgs = EvalArgs(),
    devices: Union[int, str] = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    strategy: Literal["auto", "ddp", "fsdp"] = "auto",
    precision: Optional[str] = None,
    compile: bool = False,
    logger_name: Literal["csv", "tensorboard"] = "csv",
    seed: int = 42,
    num_workers: int = 0,
) -> None:
    """Pretrain RoBERTa with masked language modelling (or `--train.objective clm`).

    Args:
        model_name: Registry name of the architecture (`litgpt pretrain list` shows them).
        data_dir: Folder of the test dataset (`test.txt`); created with demo sentences if missing.
            Ignored when `--data` is given.
        data: A data module for real corpora, e.g. `--data TextFiles --data.train_data_path corpus/`.
        out_dir: Where `iter-{step}.pt`, `best.pt`, `final/` and `logs/` go.
        model_config: Override the registry config field by field, e.g. `--model_config.n_layer 2`.
        tokenizer_dir: Folder with `tokenizer.json` (or `vocab.json` + `merges.txt`). Defaults to the tokenizer of
            the run being resumed or the initial checkpoint; failing that one is trained on the training text.
        tokenizer_vocab_size: Vocabulary size when a tokenizer is trained (defaults to the model's vocab size).
        initial_checkpoint_dir: Start from these weights (a litgpt or HuggingFace checkpoint dir) instead of random init.
        resume: `auto` continues from the newest `out_dir/iter-*.pt`; a path continues from that file.
        train: Training hyperparameters.
        eval: Validation settings.
        devices: Devices per node (an int, or "auto").
        num_nodes: Number of nodes (launch with torchrun or SLURM for several).
        accelerator: cpu, cuda, mps or auto.
        strategy: auto, ddp or fsdp.
        precision: 32-true, bf16-mixed, 16-mixed or bf16-true; defaults to bf16-mixed on GPUs that support it, else 32-true.
        compile: Compile the model with torch.compile.
        logger_name: csv (default) or tensorboard, under `out_dir/logs/`.
        seed: Random seed for init, shuffling, masking and dropout.
        num_workers: Data-loading worker processes.
    """
    import lightning as L

    validate_args(train, eval, precision, devices)
    config = resolve_config(model_name, model_config)
    out_dir = check_writable_dir(out_dir, "--out_dir")
    resume_path = resolve_resume(resume, out_dir)
    if resume_path is None and (iter_checkpoints(out_dir) or (out_dir / "final").exists()):
        raise UsageError(f"--out_dir {out_dir}: already holds a run; pass --resume auto to continue it or pick another --out_dir")
    resume_state = None
    if resume_path is not None:  # checked before any work starts: the checkpoint must fit the requested model
        resume_state = load_training_state(resume_path)
        check_same_architecture(Config(**resume_state["model_config"]), config, str(resume_path))
        remove_partial_writes(out_dir)
    if data is None:
        from litgpt.data.test_data import TestData

        data = TestData(data_dir=data_dir or Path("data/test_data"), num_workers=num_workers)
    if precision is None:
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    strategy_obj: Any = strategy
    if strategy == "fsdp":
        from lightning.fabric.strategies import FSDPStrategy

        from litgpt.model_roberta import Block

        strategy_obj = FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full", sharding_strategy="FULL_SHARD")
    logger = make_logger(logger_name, out_dir)
    fabric = L.Fabric(devices=devices, num_nodes=num_nodes, accelerator=accelerator, strategy=strategy_obj,
                      precision=precision, loggers=[logger])
    hparams = dict(model_name=model_name, data_dir=str(data_dir) if data_dir else None, data=describe_data(data),
                   out_dir=str(out_dir), model_config=asdict(model_config) if model_config else None,
                   tokenizer_dir=str(tokenizer_dir) if tokenizer_dir else None, tokenizer_vocab_size=tokenizer_vocab_size,
                   initial_checkpoint_dir=str(initial_checkpoint_dir) if initial_checkpoint_dir else None,
                   train=asdict(train), eval=asdict(eval), devices=devices, num_nodes=num_nodes, accelerator=accelerator,
                   strategy=strategy, precision=precision, compile=compile, logger_name=logger_name, seed=seed,
                   num_workers=num_workers)
    fabric.launch(main, config, data, out_dir, tokenizer_dir, tokenizer_vocab_size, initial_checkpoint_dir,
                  resume_path, resume_state, train, eval, compile, seed, hparams)


def validate_args(train: TrainArgs, eval: EvalArgs, precision: Optional[str], devices: Union[int, str]) -> None:
    for name in ("global_batch_size", "micro_batch_size"):
        if getattr(train, name) <= 0:
            raise UsageError(f"--train.{name} {getattr(train, name)}: must be a positive integer")
    if train.global_batch_size % train.micro_batch_size:
        raise UsageError(f"--train.micro_batch_size {train.micro_batch_size} does not divide --train.global_batch_size"
                         f" {train.global_batch_size}")
    if train.max_tokens is None and train.max_steps is None:
        raise UsageError("give --train.max_tokens and/or --train.max_steps, or the run never ends")
    if train.max_tokens is not None and train.max_tokens < 2 * train.global_batch_size:
        raise UsageError(f"--train.max_tokens {train.max_tokens}: smaller than one optimizer step"
                         f" ({train.global_batch_size} sequences of at least 2 tokens)")
    if train.max_steps is not None and train.max_steps <= 0:
        raise UsageError(f"--train.max_steps {train.max_steps}: must be positive")
    check_mask_probs(train.mask_prob, train.mask_replace_prob, train.random_replace_prob)
    if train.learning_rate <= 0:
        raise UsageError(f"--train.learning_rate {train.learning_rate}: must be positive")
    if train.save_interval is not None and train.save_interval <= 0:
        raise UsageError(f"--train.save_interval {train.save_interval}: must be positive")
    if train.keep_last is not None and train.keep_last <= 0:
        raise UsageError(f"--train.keep_last {train.keep_last}: must be positive (or null to keep every checkpoint)")
    if eval.interval <= 0 or eval.max_iters <= 0:
        raise UsageError("--eval.interval and --eval.max_iters must be positive")
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    check_devices(devices)


def check_devices(devices: Union[int, str], accelerator: str = "auto") -> None:
    if isinstance(devices, str):
        if devices == "auto":
            return
        try:
            devices = int(devices)
        except ValueError:
            raise UsageError(f"--devices {devices!r}: expected a number or 'auto'") from None
    if devices == -1:
        return
    if devices <= 0:
        raise UsageError(f"--devices {devices}: must be positive")
    if torch.cuda.is_available():
        available = torch.cuda.device_count()
        if devices > available:
            raise UsageError(f"--devices {devices}: only {available} GPU(s) available")
    elif devices > (os.cpu_count() or 1):
        raise UsageError(f"--devices {devices}: no GPU and only {os.cpu_count()} CPU cores available")


def resolve_config(model_name: str, model_config: Optional[Config]) -> Config:
    if model_config is not None:
        return model_config if model_config.name else Config(**{**asdict(model_config), "name": model_name})
    if model_name not in name_to_config:
        raise UsageError(f"--model_name {model_name!r}: unknown; known names: {', '.join(sorted(name_to_config))}")
    return Config.from_name(model_name)


def resolve_resume(resume: Union[bool, str, Path], out_dir: Path) -> Optional[Path]:
    if resume is False or resume is None:
        return None
    if resume is True or str(resume) == "auto":
        found = iter_checkpoints(out_dir)
        if not found:
            raise UsageError(f"--resume {resume}: nothing to resume, no iter-*.pt in {out_dir}")
        return found[-1]
    path = Path(resume)
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such checkpoint file")
    return path


def remove_partial_writes(out_dir: Path) -> None:
    """A run killed while saving leaves its temp file (never a half-written checkpoint); clear them before resuming."""
    import shutil

    leftovers = list(out_dir.glob(".*.tmp")) + list(out_dir.glob(".final.old"))
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if leftovers:
        print(f"Removed {len(leftovers)} partial write(s) left by an interrupted run: {sorted(p.name for p in leftovers)}")


def make_logger(name: str, out_dir: Path):
    if name == "tensorboard":
        from lightning.fabric.loggers import TensorBoardLogger

        return TensorBoardLogger(root_dir=out_dir / "logs", name="tensorboard")
    from lightning.fabric.loggers import CSVLogger

    return CSVLogger(root_dir=out_dir / "logs", name="csv", flush_logs_every_n_steps=10)


def describe_data(data: DataModule) -> Dict[str, Any]:
    init_args = {}
    if is_dataclass(data):
        init_args = {f.name: getattr(data, f.name) for f in fields(data) if f.init}
        init_args = {k: str(v) if isinstance(v, Path) else v for k, v in init_args.items()
                     if isinstance(v, (str, int, float, bool, Path, type(None)))}
    return {"class_path": f"{type(data).__module__}.{type(data).__qualname__}", "init_args": init_args}


def main(fabric, config: Config, data: DataModule, out_dir: Path, tokenizer_dir: Optional[Path],
         tokenizer_vocab_size: Optional[int], initial_checkpoint_dir: Optional[Path], resume_path: Optional[Path],
         resume_state: Optional[Dict[str, Any]], train: TrainArgs, eval: EvalArgs, compile: bool, seed: int,
         hparams: Dict[str, Any]) -> None:
    fabric.seed_everything(seed, verbose=False)
    if resume_state is not None:
        config = Config(**resume_state["model_config"])

    initial = None
    if initial_checkpoint_dir is not None and resume_state is None:
        from litgpt.checkpoint import load_checkpoint

        initial = load_checkpoint(initial_checkpoint_dir)
        check_same_architecture(initial.config, config, str(initial_checkpoint_dir))
        config = initial.config

    tokenizer = prepare_tokenizer(fabric, data, out_dir, tokenizer_dir, tokenizer_vocab_size,
                                  initial.tokenizer_dir if initial else None, config, resume_state is not None)
    config = adopt_tokenizer_ids(config, tokenizer, weights_given=resume_state is not None or initial is not None)
    if train.objective == "clm":
        config = Config(**{**asdict(config), "causal": True})

    max_seq_length = min(train.max_seq_length or config.block_size, config.block_size)
    data_connect(data, tokenizer, train, max_seq_length, seed, fabric)
    if fabric.global_rank == 0:
        data.prepare_data()
    fabric.barrier()
    data.setup()
    train_loader = data.train_dataloader()
    val_loader = data.val_dataloader()

    with fabric.init_module(empty_init=False):
        model = RobertaForMaskedLM(config)
    if initial is not None:
        # the encoder always comes from the checkpoint; the LM head too when it has one
        encoder = {k: v for k, v in initial.state_dict.items() if k.startswith(("roberta.", "lm_head."))}
        missing, _ = model.load_state_dict(encoder, strict=False)
        if any(not k.startswith("lm_head.") for k in missing):
            raise UsageError(f"{initial_checkpoint_dir}: checkpoint lacks encoder weights {missing[:3]}")
    fabric.print(f"Model {config.name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                 f"objective {train.objective}, precision {fabric._connector._precision_input}")
    if compile:
        model = torch.compile(model)
    model = fabric.setup_module(model)
    optimizer = fabric.setup_optimizers(make_adamw(model, train.learning_rate, train.weight_decay, fabric.device,
                                                   betas=(train.beta1, train.beta2), eps=train.adam_eps))
    world = fabric.world_size
    accumulation = train.global_batch_size // (train.micro_batch_size * world)
    if accumulation * train.micro_batch_size * world != train.global_batch_size:
        raise UsageError(f"--train.global_batch_size {train.global_batch_size} is not a multiple of micro_batch_size"
                         f" x devices ({train.micro_batch_size} x {world})")
    if train.max_steps is not None and train.lr_warmup_steps >= train.max_steps:
        fabric.print(f"Warning: --train.lr_warmup_steps {train.lr_warmup_steps} >= --train.max_steps {train.max_steps};"
                     " the learning rate never reaches its peak")

    state = {"step": 0, "tokens": 0, "epoch": 0, "best_val_loss": math.inf, "skipped_steps": 0}
    if resume_state is not None:
        model_raw = unwrap(model)
        model_raw.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        state.update({k: resume_state[k] for k in state if k in resume_state})
        data.load_state_dict(resume_state["data"])
        restore_rng(resume_state["rng"])
        fabric.print(f"Resumed from {resume_path} at step {state['step']} ({state['tokens']:,} tokens)")

    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "hyperparameters.yaml", yaml.safe_dump(hparams, sort_keys=False))
        tokenizer.save(out_dir, model_max_length=config.block_size)
    fit(fabric, model, optimizer, data, train_loader, val_loader, train, eval, state, accumulation,
        out_dir, config, tokenizer, hparams)


def check_same_architecture(found: Config, wanted: Config, source: str) -> None:
    diffs = [f"{k}={getattr(found, k)} (expected {getattr(wanted, k)})" for k in ARCH_FIELDS
             if k not in ("vocab_size", "padded_vocab_size", "pad_token_id") and getattr(found, k) != getattr(wanted, k)]
    if diffs:
        raise UsageError(f"{source}: checkpoint from another config: {', '.join(diffs)}")


def prepare_tokenizer(fabric, data, out_dir: Path, tokenizer_dir: Optional[Path], vocab_size: Optional[int],
                      initial_tokenizer_dir: Optional[Path], config: Config, resuming: bool):
    from litgpt.tokenizer import Tokenizer, train_tokenizer

    for candidate in (tokenizer_dir, out_dir if resuming else None, initial_tokenizer_dir):
        if candidate is not None:
            tokenizer = Tokenizer(candidate)
            check_tokenizer(tokenizer, config, str(candidate))
            return tokenizer
    # no tokenizer given: train one on the training text (rank 0), everybody else loads it
    target = out_dir
    if fabric.global_rank == 0:
        texts = data.tokenizer_training_texts()
        size = vocab_size or config.vocab_size
        fabric.print(f"No --tokenizer_dir: training a byte-level BPE tokenizer (vocab <= {size}) on the training text")
        train_tokenizer(texts, vocab_size=size, out_dir=target)
    fabric.barrier()
    tokenizer = Tokenizer(target)
    check_tokenizer(tokenizer, config, str(target))
    return tokenizer


def check_tokenizer(tokenizer, config: Config, source: str) -> None:
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise UsageError(f"{source}: tokenizer vocabulary ({tokenizer.vocab_size}) exceeds the model's embedding table"
                         f" ({config.padded_vocab_size} rows)")
    if tokenizer.mask_id is None:
        raise UsageError(f"{source}: tokenizer has no <mask> token")


def adopt_tokenizer_ids(config: Config, tokenizer, weights_given: bool) -> Config:
    """Special ids come from the tokenizer. With existing weights they must match the config; a fresh model adopts them."""
    ids = dict(pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
               mask_token_id=tokenizer.mask_id)
    diffs = {k: (getattr(config, k), v) for k, v in ids.items() if getattr(config, k) != v}
    if not diffs:
        return config
    if weights_given and "pad_token_id" in diffs:
        raise UsageError(f"tokenizer special ids {diffs} (config, tokenizer) disagree with the checkpoint's config")
    return Config(**{**asdict(config), **ids})


def data_connect(data: DataModule, tokenizer, train: TrainArgs, max_seq_length: int, seed: int, fabric) -> None:
    data.connect(
        tokenizer=tokenizer,
        batch_size=train.micro_batch_size,
        max_seq_length=max_seq_length,
        mask_prob=train.mask_prob,
        mask_replace_prob=train.mask_replace_prob,
        random_replace_prob=train.random_replace_prob,
        objective=train.objective,
        seed=seed,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
    )


def unwrap(model):
    model = getattr(model, "_forward_module", model)
    model = getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def learning_rate(step: int, tokens: int, train: TrainArgs) -> float:
    """LR for optimizer step `step` (0-based): linear warmup, then linear (or cosine) decay to min_lr.

    The decay follows whichever budget is closer to running out, steps or tokens, so a run bounded by
    `max_tokens` alone still decays to min_lr at its end. It depends only on (step, tokens), which the
    checkpoint stores, so a resumed run follows the same schedule.
    """
    warmup = max(train.lr_warmup_steps, 0)
    if warmup and step < warmup:
        return train.learning_rate * (step + 1) / warmup
    if train.lr_schedule == "constant":
        return train.learning_rate
    progress = 0.0
    if train.max_steps:
        progress = max(progress, (step - warmup) / max(1, train.max_steps - warmup))
    if train.max_tokens:
        progress = max(progress, tokens / train.max_tokens)
    progress = min(1.0, progress)
    if train.lr_schedule == "cosine":
        return train.min_lr + (train.learning_rate - train.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return train.min_lr + (train.learning_rate - train.min_lr) * (1 - progress)


class StopRequested:
    """SIGTERM (preemption) asks for a checkpoint at the next step boundary, then a clean exit."""

    def __init__(self) -> None:
        self.requested = False
        if sys.platform != "win32":
            try:
                signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not in the main thread
                pass

    def _handler(self, signum, frame) -> None:
        self.requested = True


def fit(fabric, model, optimizer, data, train_loader, val_loader, train: TrainArgs, eval: EvalArgs,
        state: Dict[str, Any], accumulation: int, out_dir: Path, config: Config, tokenizer, hparams) -> None:
    stop = StopRequested()
    scaler = getattr(fabric.strategy.precision, "scaler", None)  # only with 16-mixed
    if eval.initial_validation and state["step"] == 0:
        val = validate(fabric, model, val_loader, eval)
        fabric.log_dict({"val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_ppl": val["ppl"]}, step=0)
        fabric.print(f"step 0 | val loss {val['loss']:.4f} | val ppl {val['ppl']:.2f} | val acc {val['accuracy']:.3f}")

    flops_per_token = estimate_flops_per_token(config)
    peak_flops = peak_device_flops(fabric.device)
    train_iter = iter(train_loader)
    t_start = time.perf_counter()
    window = {"loss": torch.zeros((), device=fabric.device), "correct": torch.zeros((), device=fabric.device),
              "count": torch.zeros((), device=fabric.device), "tokens": 0, "time": 0.0, "data_time": 0.0,
              "compute_time": 0.0, "steps": 0}
    tokens_at_start, steps_at_start = state["tokens"], state["step"]
    last_val = None

    while not done(state, train):
        t0 = time.perf_counter()
        data_time = compute_time = 0.0
        step_tokens = 0
        for micro in range(accumulation):
            td = time.perf_counter()
            batch = next(train_iter, None)
            if batch is None:  # end of an epoch: the data module reshuffles and re-masks for the next one
                state["epoch"] += 1
                train_iter = iter(train_loader)
                batch = next(train_iter)
            step_tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
            data_time += time.perf_counter() - td
            tc = time.perf_counter()
            with fabric.no_backward_sync(model, enabled=micro < accumulation - 1):
                loss, correct, count = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                                             return_stats=True)
                fabric.backward(loss / accumulation)
            window["loss"] += loss.detach() / accumulation
            window["correct"] += correct
            window["count"] += count
            compute_time += time.perf_counter() - tc
        tc = time.perf_counter()
        # the global gradient norm (clipped to max_norm when set) doubles as the NaN/inf guard: one sync per step
        grad_norm = fabric.clip_gradients(model, optimizer, max_norm=train.max_norm or math.inf,
                                          error_if_nonfinite=False)
        if not math.isfinite(float(grad_norm)):
            if scaler is None:
                raise RunError(f"non-finite loss or gradient norm at step {state['step'] + 1}; stopped without"
                               f" applying it. The last good checkpoint is the newest iter-*.pt in {out_dir}")
            # mixed precision: the loss scaler skips this step and lowers its scale; log it and go on
            state["skipped_steps"] += 1
            fabric.print(f"step {state['step'] + 1}: non-finite gradients, the loss scaler skipped the update"
                         f" ({state['skipped_steps']} skipped so far)")
            fabric.log_dict({"skipped_steps": state["skipped_steps"]}, step=state["step"] + 1)
        lr = learning_rate(state["step"], state["tokens"], train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        compute_time += time.perf_counter() - tc
        if fabric.world_size > 1:
            step_tokens = int(fabric.all_reduce(torch.tensor(step_tokens), reduce_op="sum"))
        state["step"] += 1
        state["tokens"] += step_tokens
        window["tokens"] += step_tokens
        window["steps"] += 1
        window["time"] += time.perf_counter() - t0
        window["data_time"] += data_time
        window["compute_time"] += compute_time

        if state["step"] % train.log_interval == 0 or done(state, train):
            log_progress(fabric, state, window, train, optimizer, flops_per_token, peak_flops,
                         t_start, tokens_at_start, steps_at_start)
        is_last = done(state, train)
        if state["step"] % eval.interval == 0 or (is_last and eval.final_validation):
            last_val = validate(fabric, model, val_loader, eval)
            fabric.log_dict({"val_loss": last_val["loss"], "val_accuracy": last_val["accuracy"],
                             "val_ppl": last_val["ppl"]}, step=state["step"])
            fabric.print(f"step {state['step']} | val loss {last_val['loss']:.4f} | val ppl {last_val['ppl']:.2f}"
                         f" | val acc {last_val['accuracy']:.3f}")
            if last_val["loss"] < state["best_val_loss"]:
                state["best_val_loss"] = last_val["loss"]
                save_state(fabric, out_dir / "best.pt", model, optimizer, data, state, config)
        if (train.save_interval and state["step"] % train.save_interval == 0) or is_last or stop.requested:
            save_state(fabric, out_dir / f"iter-{state['step']}.pt", model, optimizer, data, state, config)
            if train.keep_last and fabric.global_rank == 0:
                for old in iter_checkpoints(out_dir)[:-train.keep_last]:
                    old.unlink()
        if stop.requested and not is_last:
            fabric.print(f"SIGTERM: saved iter-{state['step']}.pt; resume with --resume auto")
            for logger in fabric.loggers:
                logger.finalize("success")
            return

    save_final(fabric, out_dir / "final", model, config, tokenizer, hparams)
    for logger in fabric.loggers:
        logger.finalize("success")
    fabric.print(f"Done: {state['step']} steps, {state['tokens']:,} tokens. Final checkpoint in {out_dir / 'final'}")


def done(state: Dict[str, Any], train: TrainArgs) -> bool:
    if train.max_steps is not None and state["step"] >= train.max_steps:
        return True
    return train.max_tokens is not None and state["tokens"] >= train.max_tokens


def log_progress(fabric, state, window, train: TrainArgs, optimizer, flops_per_token, peak_flops,
                 t_start, tokens_at_start, steps_at_start) -> None:
    steps = window["steps"]
    stats = torch.stack([window["loss"] / steps, window["correct"], window["count"]]).double()
    if fabric.world_size > 1:  # report the global batch, not rank 0's share of it
        stats = fabric.all_reduce(stats, reduce_op="sum") / torch.tensor([fabric.world_size, 1, 1], device=stats.device)
    loss, correct, count = stats.tolist()  # one sync per log interval, not per step
    accuracy = correct / max(count, 1)
    tokens_per_sec = window["tokens"] / max(window["time"], 1e-9)
    lr = optimizer.param_groups[0]["lr"]
    metrics = {"train_loss": loss, "train_ppl": math.exp(min(loss, 50)), "mlm_accuracy": accuracy, "lr": lr,
               "tokens_per_sec": tokens_per_sec, "tokens": state["tokens"], "epoch": state["epoch"],
               "data_time_fraction": window["data_time"] / max(window["time"], 1e-9)}
    if fabric.device.type == "cpu":  # host timers only measure compute when it runs synchronously
        # time in forward/backward/optimizer over the whole step (data loading, masking, bookkeeping)
        metrics["compute_fraction"] = window["compute_time"] / max(window["time"], 1e-9)
    if peak_flops:
        metrics["mfu"] = tokens_per_sec * flops_per_token / (peak_flops * fabric.world_size)
    fabric.log_dict(metrics, step=state["step"])
    elapsed = time.perf_counter() - t_start
    remaining = None
    if train.max_tokens:
        done_tokens = state["tokens"] - tokens_at_start
        remaining = elapsed / max(done_tokens, 1) * max(train.max_tokens - state["tokens"], 0)
    if train.max_steps:
        # the rate since this run started (a resumed run counts from where it resumed)
        by_steps = elapsed / max(state["step"] - steps_at_start, 1) * max(train.max_steps - state["step"], 0)
        remaining = by_steps if remaining is None else min(remaining, by_steps)
    eta = str(timedelta(seconds=int(remaining))) if remaining is not None else "?"
    fabric.print(f"step {state['step']} | loss {loss:.4f} | acc {accuracy:.3f} | lr {lr:.2e} | "
                 f"{tokens_per_sec:,.0f} tok/s | tokens {state['tokens']:,} | ETA {eta}")
    for key in ("loss", "correct", "count"):
        window[key].zero_()
    window.update(tokens=0, time=0.0, data_time=0.0, compute_time=0.0, steps=0)


@torch.no_grad()
def validate(fabric, model, val_loader, eval: EvalArgs) -> Dict[str, float]:
    model.eval()
    totals = torch.zeros(3, device=fabric.device, dtype=torch.float64)  # loss sum, correct, count
    for i, batch in enumerate(val_loader):
        if i >= eval.max_iters:
            break
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        loss, correct, count = model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                                     return_stats=True)
        totals += torch.stack([loss.double() * count, correct.double(), count.double()])
    totals = fabric.all_reduce(totals, reduce_op="sum") if fabric.world_size > 1 else totals
    model.train()
    loss_sum, correct, count = totals.tolist()
    loss = loss_sum / max(count, 1)
    return {"loss": loss, "accuracy": correct / max(count, 1), "ppl": math.exp(min(loss, 50))}


def save_state(fabric, path: Path, model, optimizer, data, state, config: Config) -> None:
    """The full training state, written to a temp file and renamed, so a crash never leaves a half-written one."""
    payload = {"model": model, "optimizer": optimizer, "data": data.state_dict(),
               "rng": capture_rng(), "model_config": asdict(config), **state}
    tmp = path.with_name(f".{path.name}.tmp")
    fabric.save(tmp, payload)
    fabric.barrier()
    if fabric.global_rank == 0:
        with open(tmp, "rb+") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    fabric.barrier()


def save_final(fabric, final_dir: Path, model, config: Config, tokenizer, hparams) -> None:
    """`final/`: a checkpoint dir (lit_model.pth, model_config.yaml, tokenizer, hyperparameters.yaml)."""
    state_dict = full_state_dict(fabric, model)
    if fabric.global_rank == 0:
        staging = final_dir.with_name(f".{final_dir.name}.tmp")
        if staging.exists():
            import shutil

            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        atomic_torch_save({k: v.detach().cpu() for k, v in state_dict.items()}, staging / "lit_model.pth")
        config.save(staging / "model_config.yaml")
        tokenizer.save(staging, model_max_length=config.block_size)
        atomic_write_text(staging / "hyperparameters.yaml", yaml.safe_dump(hparams, sort_keys=False))
        if final_dir.exists():
            import shutil

            old = final_dir.with_name(f".{final_dir.name}.old")
            os.replace(final_dir, old)
            os.replace(staging, final_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, final_dir)
    fabric.barrier()


def full_state_dict(fabric, model) -> Dict[str, torch.Tensor]:
    from lightning.fabric.strategies import FSDPStrategy

    if isinstance(fabric.strategy, FSDPStrategy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model._forward_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict()


def estimate_flops_per_token(config: Config) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): matmuls of the blocks plus attention scores."""
    C, L, T = config.n_embd, config.n_layer, config.block_size
    block_params = L * (4 * C * C + 2 * C * config.intermediate_size)
    return 6 * block_params + 6 * L * 2 * C * T


def peak_device_flops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for key, flops in (("h200", 989e12), ("h100", 989e12), ("a100", 312e12), ("l4", 121e12), ("a10", 125e12),
                       ("4090", 165e12), ("3090", 71e12), ("v100", 125e12)):
        if key in name:
            return flops
    return None


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(setup, None, prog="pretrain")

"""`litgpt pretrain`: masked-language-model (or causal) pretraining of RoBERTa with Lightning Fabric.

setup() checks the flags and starts Fabric -> main() builds tokenizer, data, model and optimizer -> fit() runs the loop.
Everything the loop carries lives in one `state` dict: the model, the optimizer, the data module and the counters
(step, tokens, epoch, best validation loss). `iter-{step}.pt` and `best.pt` are that state on disk.
"""

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Union

import torch
import yaml

from litgpt.args import DIST_TIMEOUT, EvalArgs, TrainArgs
from litgpt.checkpoint import adopt_tokenizer_ids, load_checkpoint, prepare_tokenizer
from litgpt.config import Config
from litgpt.data.base import DataModule
from litgpt.distributed import (
    check_world,
    is_sharded,
    launch,
    lost_peer,
    make_strategy,
    world_size,
)
from litgpt.model_roberta import RobertaForMaskedLM
from litgpt.progress import log_progress, new_window, report_projection, slow_start_hint
from litgpt.run import (
    capture_hparams,
    check_devices,
    check_precision,
    default_precision,
    make_fabric,
    make_logger,
    unwrap,
)
from litgpt.train_state import (
    StopRequested,
    check_resumable,
    check_same_start,
    iter_checkpoints,
    load_state,
    load_training_state,
    resolve_resume,
    save_final,
    save_state,
)
from litgpt.utils import (
    RunError,
    UsageError,
    atomic_write_text,
    check_writable_dir,
    make_adamw,
    num_parameters,
)


def setup(
    model_name: Optional[str] = None,
    data_dir: Optional[Path] = None,
    data: Optional[DataModule] = None,
    out_dir: Path = Path("out/pretrain"),
    model_config: Optional[Union[Dict[str, Any], Path]] = None,
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
    dist_timeout: float = DIST_TIMEOUT,
    precision: Optional[str] = None,
    compile: bool = False,
    logger_name: Literal["csv", "tensorboard"] = "csv",
    seed: int = 42,
    num_workers: int = 0,
) -> None:
    """Pretrain RoBERTa with masked language modelling (or `--train.objective clm`).

    The encoder runs on the real tokens only (the batch's packing, built by the collator). On CUDA in bf16/fp16,
    attention runs on them too, through PyTorch's variable-length flash kernel; that kernel has no dropout, so in
    training with attention dropout (RoBERTa's 0.1) each sequence is padded for SDPA instead. Set
    `--model_config.attention_dropout 0` for the variable-length kernel, as MosaicBERT and ModernBERT train.

    Args:
        model_name: Registry name of the architecture (`litgpt pretrain list` shows them). Default: roberta-base,
            or with --initial_checkpoint_dir that checkpoint's architecture (BERT's too).
        data_dir: Folder of the test dataset (`test.txt`); created with demo sentences if missing.
            Ignored when `--data` is given.
        data: A data module for real corpora, e.g. `--data TextFiles --data.train_data_path corpus/`.
        out_dir: Where `iter-{step}.pt`, `best.pt`, `final/` and `logs/` go.
        model_config: Override fields of the --model_name entry, one by one: `--model_config.n_layer 2
            --model_config.vocab_size 8192` (the other fields keep the entry's values); or a whole
            model_config.yaml file.
        tokenizer_dir: Folder with `tokenizer.json` (or `vocab.json` + `merges.txt`). Defaults to the tokenizer of
            the run being resumed or the initial checkpoint; failing that one is trained on the training text.
        tokenizer_vocab_size: Vocabulary size when a tokenizer is trained (defaults to the model's vocab size).
        initial_checkpoint_dir: Start from these weights (a litgpt or HuggingFace checkpoint dir) instead of random
            init.
        resume: `auto` continues from the newest `out_dir/iter-*.pt`, or starts a new run when there is none (so a
            group that torchrun or SLURM restarts continues where it was); `true` requires one; a path continues from
            that file. A run resumes on the world that wrote it (the same --num_nodes x --devices).
        train: Training hyperparameters.
        eval: Validation settings.
        devices: Devices (processes) per node (an int, or "auto").
        num_nodes: Number of nodes; several are started by torchrun, srun (SLURM) or `fabric run`, and their world
            must be --num_nodes x --devices.
        accelerator: cpu, cuda, mps or auto.
        strategy: auto (DDP on several devices), ddp, or fsdp (FSDP2: every block's weights, gradients and optimizer
            state sharded across the ranks; checkpoints hold them whole).
        dist_timeout: Seconds a rank waits in a collective for a peer before it stops with an error naming it (a
            lost node then costs this long, not forever).
        precision: 32-true, bf16-mixed, 16-mixed or bf16-true; defaults to bf16-mixed on GPUs that support it,
            else 32-true.
        compile: Compile the loss step (forward, loss, backward) with torch.compile, as one graph with dynamic
            shapes: no recompilation from one batch's lengths to the next.
        logger_name: csv (default) or tensorboard, under `out_dir/logs/`.
        seed: Random seed for init, shuffling, masking and dropout.
        num_workers: Data-loading worker processes.
    """
    train.validate()
    eval.validate()
    check_precision(precision)
    check_devices(devices)
    devices = check_world(devices, num_nodes, dist_timeout)
    world = world_size(devices, num_nodes, accelerator)
    if train.global_batch_size % (train.micro_batch_size * world):
        raise UsageError(f"--train.global_batch_size {train.global_batch_size} is not a multiple of micro_batch_size"
                         f" x devices x nodes ({train.micro_batch_size} x {world})")
    # no --model_name: the initial checkpoint's architecture, when there is one
    from_initial = model_name is None and model_config is None and initial_checkpoint_dir is not None
    config = None if from_initial else Config.resolve(model_name or "roberta-base", model_config)
    out_dir = check_writable_dir(out_dir, "--out_dir")
    resume_path = resolve_resume(resume, out_dir)
    if resume_path is None and (iter_checkpoints(out_dir) or (out_dir / "final").exists()):
        raise UsageError(f"--out_dir {out_dir}: already holds a run; pass --resume auto to continue it or pick "
                         "another --out_dir")
    resume_state = None
    if resume_path is not None:  # checked before any work starts: the checkpoint must fit the requested run
        resume_state = {**load_training_state(resume_path), "resumed_from": str(resume_path)}
        check_resumable(resume_state, world, str(resume_path))
        if config is not None:
            check_same_architecture(Config(**resume_state["model_config"]), config, str(resume_path))
    if data is None:
        from litgpt.data.test_data import TestData

        data = TestData(data_dir=data_dir or Path("data/test_data"), num_workers=num_workers)
    precision = precision or default_precision()
    hparams = capture_hparams()
    fabric = make_fabric(devices, accelerator, precision, num_nodes=num_nodes,
                         strategy=make_strategy(strategy, world, dist_timeout),
                         loggers=[make_logger(logger_name, out_dir)])
    launch(fabric, main, config, data, out_dir, tokenizer_dir, tokenizer_vocab_size, initial_checkpoint_dir,
           resume_state, train, eval, compile, seed, hparams, dist_timeout)


def main(fabric, config: Optional[Config], data: DataModule, out_dir: Path, tokenizer_dir: Optional[Path],
         tokenizer_vocab_size: Optional[int], initial_checkpoint_dir: Optional[Path],
         resume_state: Optional[Dict[str, Any]], train: TrainArgs, eval: EvalArgs, compile: bool, seed: int,
         hparams: Dict[str, Any], dist_timeout: float = DIST_TIMEOUT) -> None:
    fabric.seed_everything(seed, verbose=False)
    check_same_start(fabric, resume_state, out_dir)
    if resume_state is not None:
        config = Config(**resume_state["model_config"])
    initial = None
    if initial_checkpoint_dir is not None and resume_state is None:
        initial = load_checkpoint(initial_checkpoint_dir)
        if config is not None:
            check_same_architecture(initial.config, config, str(initial_checkpoint_dir))
        config = initial.config

    tokenizer = prepare_tokenizer(fabric, data, out_dir, tokenizer_dir, tokenizer_vocab_size,
                                  initial.tokenizer_dir if initial else None, config, resume_state is not None)
    config = adopt_tokenizer_ids(config, tokenizer, weights_given=resume_state is not None or initial is not None)
    if train.objective == "clm":
        config = replace(config, causal=True)

    data.connect(tokenizer=tokenizer, batch_size=train.micro_batch_size,
                 max_seq_length=min(train.max_seq_length or config.block_size, config.block_size),
                 mask_prob=train.mask_prob, mask_replace_prob=train.mask_replace_prob,
                 random_replace_prob=train.random_replace_prob, objective=train.objective, seed=seed,
                 rank=fabric.global_rank, world_size=fabric.world_size)
    if fabric.global_rank == 0:
        data.prepare_data()
    fabric.barrier()  # (bounded by --dist_timeout too: see its help on a corpus's first run)
    data.setup()
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()

    with fabric.init_module(empty_init=False):
        model = RobertaForMaskedLM(config)
    if initial is not None:
        # the encoder always comes from the checkpoint; the LM head too when it has one
        encoder = {k: v for k, v in initial.state_dict.items() if k.startswith(("roberta.", "lm_head."))}
        missing, _ = model.load_state_dict(encoder, strict=False)
        if any(not k.startswith("lm_head.") for k in missing):
            raise UsageError(f"{initial_checkpoint_dir}: checkpoint lacks encoder weights {missing[:3]}")
    params = num_parameters(model)
    fabric.print(f"Model {config.name} ({config.n_layer} layers, {config.n_embd} wide): {params:,} parameters, "
                 f"objective {train.objective}, precision {fabric._connector._precision_input}")
    slow_start_hint(fabric, config, params)
    model = fabric.setup_module(model)
    if not is_sharded(fabric):  # the loop calls `mlm_loss`, not `forward`: route it through DDP's forward
        model.mark_forward_method("mlm_loss")  # (FSDP registers it as a forward method itself: shard_model)
    if compile:  # compile what runs hot: the loss step, once for every batch shape
        unwrap(model).mlm_loss = torch.compile(unwrap(model).mlm_loss, dynamic=True)
    optimizer = fabric.setup_optimizers(make_adamw(model, train.learning_rate, train.weight_decay, fabric.device,
                                                   betas=(train.beta1, train.beta2), eps=train.adam_eps))
    if train.max_steps is not None and train.lr_warmup_steps >= train.max_steps:
        fabric.print(f"Warning: --train.lr_warmup_steps {train.lr_warmup_steps} >= --train.max_steps {train.max_steps};"
                     " the learning rate never reaches its peak")

    state = {"model": model, "optimizer": optimizer, "data": data, "config": config, "tokenizer": tokenizer,
             "hparams": hparams, "step": 0, "tokens": 0, "epoch": 0, "best_val_loss": math.inf, "skipped_steps": 0}
    if resume_state is not None:
        load_state(fabric, state, resume_state)
        fabric.print(f"Resumed from {resume_state['resumed_from']} at step {state['step']} "
                     f"({state['tokens']:,} tokens)")

    if fabric.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "hyperparameters.yaml", yaml.safe_dump(hparams, sort_keys=False))
        tokenizer.save(out_dir, model_max_length=config.block_size)
    with lost_peer(fabric, dist_timeout):
        fit(fabric, state, train_loader, val_loader, train, eval, out_dir)


def fit(fabric, state: Dict[str, Any], train_loader, val_loader, train: TrainArgs, eval: EvalArgs,
        out_dir: Path) -> None:
    model, optimizer = state["model"], state["optimizer"]
    accumulation = train.global_batch_size // (train.micro_batch_size * fabric.world_size)
    stop = StopRequested()
    scaler = getattr(fabric.strategy.precision, "scaler", None)  # only with 16-mixed
    if eval.initial_validation and state["step"] == 0:
        validate(fabric, model, val_loader, eval, step=0)

    window = new_window(fabric, state)
    val = None
    train_iter = iter(train_loader)
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
                loss, correct, count = mlm_loss(fabric, model, batch)
                fabric.backward(loss / accumulation)
            window["loss"] += loss.detach() / accumulation
            window["correct"] += correct
            window["count"] += count
            compute_time += time.perf_counter() - tc
        tc = time.perf_counter()
        # the global gradient norm (clipped to max_norm when set) doubles as the NaN/inf guard: one sync per step
        grad_norm = fabric.clip_gradients(model, optimizer, max_norm=train.max_norm or math.inf,
                                          error_if_nonfinite=False)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
        if not math.isfinite(float(grad_norm)):
            if scaler is None:
                raise RunError(f"non-finite loss or gradient norm at step {state['step'] + 1}; stopped without"
                               f" applying it. The last good checkpoint is the newest iter-*.pt in {out_dir}")
            # mixed precision: the loss scaler skips this step and lowers its scale; log it and go on
            state["skipped_steps"] += 1
            fabric.print(f"step {state['step'] + 1}: non-finite gradients, the loss scaler skipped the update"
                         f" ({state['skipped_steps']} skipped so far)")
            fabric.log_dict({"skipped_steps": state["skipped_steps"]}, step=state["step"] + 1)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["step"], state["tokens"], train)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        compute_time += time.perf_counter() - tc
        if fabric.world_size > 1:  # the step's tokens, and whether any rank got SIGTERM: then all stop together
            summed = fabric.all_reduce(torch.tensor([step_tokens, int(stop.requested)]), reduce_op="sum").tolist()
            step_tokens, stop.requested = int(summed[0]), summed[1] > 0
        state["step"] += 1
        state["tokens"] += step_tokens
        window.update(tokens=window["tokens"] + step_tokens, steps=window["steps"] + 1,
                      time=window["time"] + time.perf_counter() - t0, data_time=window["data_time"] + data_time,
                      compute_time=window["compute_time"] + compute_time)

        is_last = done(state, train)
        if state["step"] % train.log_interval == 0 or is_last:
            log_progress(fabric, state, window, train)
        report_projection(fabric, state, window, train)
        if state["step"] % eval.interval == 0 or (is_last and eval.final_validation):
            val = validate(fabric, model, val_loader, eval, step=state["step"])
            if val["loss"] < state["best_val_loss"]:
                state["best_val_loss"] = val["loss"]
                save_state(fabric, out_dir / "best.pt", state)
        if (train.save_interval and state["step"] % train.save_interval == 0) or is_last or stop.requested:
            save_state(fabric, out_dir / f"iter-{state['step']}.pt", state)
            if train.keep_last and fabric.global_rank == 0:
                for old in iter_checkpoints(out_dir)[:-train.keep_last]:
                    old.unlink()
        if stop.requested and not is_last:
            fabric.print(f"SIGTERM: saved iter-{state['step']}.pt; resume with --resume auto")
            break
    else:
        save_final(fabric, out_dir / "final", state)
        fabric.print(f"Done: {state['step']} steps, {state['tokens']:,} tokens. Final checkpoint in "
                     f"{out_dir / 'final'}" + (f"; validation MLM accuracy {val['accuracy']:.3f}" if val else ""))
    for logger in fabric.loggers:
        logger.finalize("success")


def mlm_loss(fabric, model, batch: Dict[str, torch.Tensor]):
    """(loss, correct, count) of a batch. Fabric's autocast covers it on one device, where no wrapper's forward
    runs; with DDP/FSDP `mark_forward_method` sends it through the wrapper."""
    with fabric.autocast():
        return model.mlm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"], batch.get("packing"))


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


def done(state: Dict[str, Any], train: TrainArgs) -> bool:
    if train.max_steps is not None and state["step"] >= train.max_steps:
        return True
    return train.max_tokens is not None and state["tokens"] >= train.max_tokens


@torch.no_grad()
def validate(fabric, model, val_loader, eval: EvalArgs, step: int) -> Dict[str, float]:
    """MLM loss, perplexity and accuracy over the validation split's first `eval.max_iters` batches, each counted on
    one rank (`EvalLoader`), so the figure is the same at any world size; logged and printed."""
    model.eval()
    totals = torch.zeros(3, device=fabric.device, dtype=torch.float64)  # loss sum, correct, count
    counted, steps = val_loader.counted(eval.max_iters), val_loader.steps(eval.max_iters)
    for i, batch in zip(range(steps), val_loader):  # as many on every rank (FSDP's gathers line up)
        loss, correct, count = mlm_loss(fabric, model, {k: v.to(fabric.device) for k, v in batch.items()})
        if i < counted:  # the rest repeat other ranks' batches
            totals += torch.stack([loss.double() * count, correct.double(), count.double()])
    totals = fabric.all_reduce(totals, reduce_op="sum") if fabric.world_size > 1 else totals
    model.train()
    loss_sum, correct, count = totals.tolist()
    loss, accuracy = loss_sum / max(count, 1), correct / max(count, 1)
    ppl = math.exp(min(loss, 50))
    fabric.log_dict({"val_loss": loss, "val_accuracy": accuracy, "val_ppl": ppl}, step=step)
    fabric.print(f"step {step} | val loss {loss:.4f} | val ppl {ppl:.2f} | val acc {accuracy:.3f}")
    return {"loss": loss, "accuracy": accuracy, "ppl": ppl}


# ---- configs --------------------------------------------------------------------------------------------------
def check_same_architecture(found: Config, wanted: Config, source: str) -> None:
    diffs = wanted.architecture_diff(found)
    if diffs:
        raise UsageError(f"{source}: checkpoint from another config: {', '.join(diffs)}")


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(setup, None, prog="pretrain")

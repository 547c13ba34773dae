"""The one finetuning loop every task (classification, GLUE, NER, QA, embed) runs: train an epoch, score the validation
split, keep the best epoch, and at the end score the test split once with the chosen model.

    run = prepare.prepare(args, data, head, texts, ...)     the weights found, the settings fixed
    launch(run, make_task)                                  Fabric -> fit(fabric, run, make_task(fabric, run))

What may choose is the validation split alone (`litgpt.data.finetuning` says where it comes from): the best epoch
by the task's metric (ties: the lower validation loss), the figures a task derives from it (QA's null threshold),
and early stopping after `--patience` epochs without a better one. Without a validation split nothing is chosen and
the last epoch is the model. The test split never feeds back: it is scored once, after training, and a run whose
test labels were shuffled writes the same weights.

After every epoch `output_dir/train_state.pt` holds everything needed to continue (model, optimizer, scheduler, every
rank's RNG, the best epoch so far, the history); `--resume` continues from it and ends with the uninterrupted run's
weights, on one device or several nodes.

`metrics.json`: the test figures at the top level (as each task reports them), then `"test"` (the same figures),
`"validation"` (the chosen epoch's figures and the per-epoch `"history"`) and `"selected_by"` ({"split",
"metric", "source"}).
"""

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from litgpt.distributed import gather, lost_peer, make_strategy, world_size
from litgpt.distributed import launch as launch_fabric  # (`launch` here is the task's)
from litgpt.export import STATE_FILE, prepare_output_dir, save_adapters, save_finetuned
from litgpt.finetune.prepare import DEFAULT_MAX_LENGTH, Run, hparams, make_scheduler
from litgpt.kernels import add_lora
from litgpt.run import make_fabric, unwrap
from litgpt.utils import UsageError, atomic_torch_save, capture_rng, make_adamw, restore_rng


@dataclass
class Task:
    """What a task gives the loop."""

    make_model: Callable[[], torch.nn.Module]  # the model with a new head, built after seeding
    loss: Callable[[torch.nn.Module, Dict[str, Any]], torch.Tensor]  # a training batch's loss
    # (model, split, chosen) -> the split's figures, with "loss" and `metric`; `chosen` is what validation chose
    # (the chosen epoch's validation figures) when the test split is scored, {} while choosing or without one
    evaluate: Callable[[torch.nn.Module, str, Dict[str, Any]], Dict[str, Any]]
    metric: str  # the validation figure that chooses the epoch (higher is better)
    summary: str  # what the run trains on, for its first lines
    # (model, test figures) -> metrics.json's top level (the task may score further splits or write files here;
    # the model is in eval mode)
    finish: Callable[[torch.nn.Module, Dict[str, Any]], Dict[str, Any]]
    show: Callable[[Dict[str, Any]], str]  # metrics.json -> the printed report
    # a step that runs its own backward passes (cached_mnrl's), returning the detached loss; default: `loss`'s
    backward: Optional[Callable[[torch.nn.Module, Dict[str, Any]], torch.Tensor]] = None


def launch(run: Run, make_task: Callable[[Any, Run], Task]) -> None:
    """Starts Fabric; in each process `make_task(fabric, run)` (a module-level function, so spawned processes can
    receive it) builds the task, and `fit` runs it."""
    args = run.args
    world = world_size(args.devices, args.num_nodes, args.accelerator)
    fabric = make_fabric(args.devices, args.accelerator, args.precision, num_nodes=args.num_nodes,
                         strategy=make_strategy("auto", world, args.dist_timeout))
    launch_fabric(fabric, _fit_task, run, make_task)


def _fit_task(fabric, run: Run, make_task: Callable[[Any, Run], Task]) -> None:
    with lost_peer(fabric, run.args.dist_timeout):
        fit(fabric, run, make_task(fabric, run))


def fit(fabric, run: Run, task: Task) -> None:
    args, data = run.args, run.data
    model, optimizer, scheduler, state = start(fabric, run, task)
    train_loader = data.train_dataloader()
    fabric.print(f"{task.summary}, {data.sizes()} examples, {len(train_loader)} steps per epoch, precision "
                 f"{args.precision}{', compiled' if args.compile else ''}")
    fabric.print(selection_line(data, task.metric))
    for epoch in range(state["epoch"], args.num_epochs):
        t0 = time.perf_counter()
        record: Dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_epoch(fabric, model, optimizer, scheduler,
                                                                               train_loader, data, task, epoch, args)}
        improved = False
        if data.validation is not None:
            metrics = evaluate(model, task, "validation", {})
            record.update({k: metrics[k] for k in dict.fromkeys(("loss", task.metric, "accuracy", "f1"))
                           if isinstance(metrics.get(k), (int, float))})
            improved = state["best"] is None or ranking(metrics, task) > ranking(state["best"]["metrics"], task)
            if improved:
                weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
                state["best"] = {"epoch": epoch + 1, "metrics": metrics, "model": weights}
        state["history"].append(record)
        state["epoch"] = epoch + 1
        shown = [f"train loss {record['train_loss']:.4f}"] + [f"validation {k} {v:.4f}" for k, v in record.items()
                                                              if k not in ("epoch", "train_loss")]
        fabric.print(f"epoch {epoch + 1}/{args.num_epochs} | {' | '.join(shown)} | {time.perf_counter() - t0:.1f}s"
                     + (" | best so far" if improved else ""))
        state["stopped"] = (bool(args.patience) and state["best"] is not None
                            and epoch + 1 - state["best"]["epoch"] >= args.patience)
        rngs = gather(fabric, capture_rng())  # every rank's, each continues its own on --resume
        if fabric.global_rank == 0:
            save_train_state(Path(args.output_dir) / STATE_FILE, {**state, "rng": rngs}, run, fabric.world_size)
        fabric.barrier()
        if state["stopped"] and epoch + 1 < args.num_epochs:
            fabric.print(f"Stopping early: no better validation {task.metric} in {args.patience} epoch(s)")
            break

    # the chosen model: the best validation epoch, else the last one; the test split is scored now, once
    chosen = state["best"] or {"epoch": state["epoch"], "metrics": {}}
    if state["best"] is not None:
        unwrap(model).load_state_dict(state["best"]["model"])
    model.eval()
    with torch.no_grad():
        test = task.evaluate(model, "test", chosen["metrics"]) if data.test is not None else {}
        report = {**task.finish(model, test), **selection_report(run, task, state, chosen, test)}
    if fabric.global_rank == 0:
        weights = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
        out = Path(args.output_dir)
        if args.lora_r:
            save_adapters(out, weights, run.config, report, args, trainable_names(model))
        else:
            save_finetuned(out, weights, run.config, report)
        print(task.show(report))
        print(f"Saved the finetuned model (epoch {chosen['epoch']}) to {out}")
    fabric.barrier()


def start(fabric, run: Run, task: Task):
    """Seeds, marks the output folder, connects the data, builds the model (after seeding, so a new head is the
    same every run), adds LoRA, sets up model, optimizer and schedule, and restores a saved state to resume."""
    args, state = run.args, run.resume_state
    if state is not None and state.get("world_size", 1) != fabric.world_size:
        raise UsageError(f"--resume: the saved run trained on {state.get('world_size', 1)} device(s), now "
                         f"{fabric.world_size}; resume with the same --num_nodes x --devices")
    fabric.seed_everything(args.seed, verbose=False)
    if fabric.global_rank == 0:
        prepare_output_dir(Path(args.output_dir), hparams(args), run.tokenizer, run.config, state is not None)
    fabric.barrier()
    fabric.print(f"Weights: {run.source}")
    if run.max_length != (args.max_length or DEFAULT_MAX_LENGTH):
        fabric.print(f"note: using --max_length {run.max_length} ({run.max_length_from})", file=sys.stderr)
    run.data.connect(run.tokenizer, batch_size=args.batch_size, max_seq_length=run.max_length, seed=args.seed,
                     rank=fabric.global_rank, world_size=fabric.world_size, eval_batch_size=args.eval_batch_size)
    run.data.setup()
    model = task.make_model()
    if run.weights is not None:  # checked in `prepare`; a BERT pooler the checkpoint lacks keeps its fresh init
        model.load_state_dict(run.weights, strict=False)
    if args.lora_r:
        add_lora_adapters(fabric, model, args)
    optimizer = make_adamw(model, args.learning_rate, args.weight_decay, fabric.device)
    scheduler = make_scheduler(optimizer, len(run.data.train_dataloader()) * args.num_epochs, args.warmup_ratio)
    model, optimizer = fabric.setup(model, optimizer)
    if args.compile:  # every batch shape through one graph; evaluation too (the eval mode is a second one)
        unwrap(model).compile(dynamic=True)
    progress = {"epoch": 0, "best": None, "history": [], "stopped": False}
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress.update({k: state[k] for k in ("epoch", "best", "history")})
        restore_rng(state["rng"][fabric.global_rank] if isinstance(state["rng"], list) else state["rng"])
        fabric.print(f"Resumed {Path(args.output_dir) / STATE_FILE} after epoch {progress['epoch']}")
    return model, optimizer, scheduler, {**progress, "model": model, "optimizer": optimizer, "scheduler": scheduler}


def train_epoch(fabric, model, optimizer, scheduler, loader, data, task: Task, epoch: int, args) -> float:
    """One epoch; returns the mean training loss over every rank's batches."""
    from tqdm.auto import tqdm

    model.train()
    data.set_epoch(epoch)
    loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
    seen = 0
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{args.num_epochs}", unit="step", leave=False,
               disable=None if fabric.global_rank == 0 else True, file=sys.stderr)
    for i, batch in enumerate(loader):
        batch = to_device(batch, fabric.device)
        if task.backward is None:
            loss = task.loss(model, batch)
            fabric.backward(loss)
        else:
            loss = task.backward(model, batch)
        optimizer_step(fabric, model, optimizer, scheduler, args.max_grad_norm)
        loss_sum += loss.detach().double()
        seen += 1
        bar.update(1)
        if not bar.disable and (i % 10 == 0 or i + 1 == len(loader)):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    bar.close()
    totals = torch.stack([loss_sum, torch.tensor(float(seen), device=fabric.device, dtype=torch.float64)])
    if fabric.world_size > 1:
        totals = fabric.all_reduce(totals, reduce_op="sum")
    return (totals[0] / totals[1].clamp(min=1)).item()


def optimizer_step(fabric, model, optimizer, scheduler, max_grad_norm: Optional[float]) -> None:
    """Clipping by global norm (when `max_grad_norm`), the update, and the schedule's next step."""
    if max_grad_norm:
        fabric.clip_gradients(model, optimizer, max_norm=max_grad_norm, error_if_nonfinite=False)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def to_device(batch: Any, device) -> Any:
    """A batch's tensors (and `Packing`s) on `device`, through its lists and dicts."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch.to(device, non_blocking=True) if hasattr(batch, "to") else batch


@torch.no_grad()
def evaluate(model, task: Task, split: str, chosen: Dict[str, Any]) -> Dict[str, Any]:
    model.eval()
    metrics = task.evaluate(model, split, chosen)
    model.train()
    return metrics


def ranking(metrics: Dict[str, Any], task: Task) -> tuple:
    """Higher is better: the task's metric (NaN, as a correlation of constant predictions is, counts as the
    worst), then the lower loss (where the task reports one)."""
    value = metrics[task.metric]
    return (value if value == value else -math.inf, -metrics.get("loss", 0.0))


# ---- what was chosen, and how ----------------------------------------------------------------------------------
def selection_line(data, metric: str) -> str:
    if data.selection == "none":
        return ("No validation split: the last epoch is the model (add a validation file or --val_fraction to choose "
                "the epoch on one)")
    return f"The epoch is chosen by {metric} on the {data.selection} split ({data.validation_from})"


def selection_report(run: Run, task: Task, state: Dict[str, Any], chosen: Dict[str, Any],
                     test: Dict[str, Any]) -> Dict[str, Any]:
    data = run.data
    validation = {**figures(chosen["metrics"]), "num_examples": len(data.validation)} if state["best"] else {}
    return {"test": figures(test), "validation": {**validation, "history": state["history"]},
            "selected_by": {"split": data.selection, "metric": task.metric if state["best"] else None,
                            "source": data.validation_from or None},
            "test_split": data.split_name("test") if data.test is not None else None, "best_epoch": chosen["epoch"],
            "num_epochs": run.args.num_epochs, "epochs_run": state["epoch"], "weights_source": run.source}


def figures(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """A report's numbers (no lists or tables): what `metrics.json` keeps of each split."""
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---- LoRA and the training state ----------------------------------------------------------------------------------
def add_lora_adapters(fabric, model: torch.nn.Module, args) -> None:
    """LoRA on the encoder's `--lora_targets`; the encoder is frozen, the head (and BERT's pooler when it feeds a
    classifier, where it may be fresh) trains in full."""
    from litgpt.model_roberta import LORA_TARGETS

    targets = [LORA_TARGETS[t.strip()] for t in args.lora_targets.split(",")]
    layers = add_lora(model.roberta, targets, args.lora_r, args.lora_alpha, args.lora_dropout)
    for name, module in model.named_children():
        if name != "roberta":
            module.requires_grad_(True)
    if model.roberta.pooler is not None and hasattr(model, "classifier"):  # the pooler feeds a classifier only
        model.roberta.pooler.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    fabric.print(f"LoRA r={args.lora_r} on {layers} layers ({args.lora_targets}): {trainable:,} of {total:,} "
                 f"parameters train ({100 * trainable / total:.2f}%)")


def trainable_names(model: torch.nn.Module):
    return [name for name, p in unwrap(model).named_parameters() if p.requires_grad]


def save_train_state(path: Path, state: Dict[str, Any], run: Run, world_size: int = 1) -> None:
    atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in unwrap(state["model"]).state_dict().items()},
        "optimizer": state["optimizer"].state_dict(),
        "scheduler": state["scheduler"].state_dict(),
        "rng": state.get("rng") or capture_rng(),
        **{k: state[k] for k in ("epoch", "best", "history", "stopped")},
        "args": hparams(run.args),
        "model_config": asdict(run.config),
        "data_fingerprint": run.data.fingerprint,
        "weights_source": run.source,
        "world_size": world_size,
    }, path)

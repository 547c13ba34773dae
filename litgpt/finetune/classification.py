"""`litgpt finetune` / `scripts/finetune_roberta.py`: sequence classification on labelled text with Lightning Fabric.

setup() checks the flags and reads the data (or hands `--glue` to `litgpt/finetune/glue.py`) -> finetune() finds the
weights -> main() builds batches, model and optimizer -> fit() trains epoch by epoch, evaluates on the test split
after each one and keeps the best epoch -> the best weights are exported as a HuggingFace-loadable `output_dir`
(config.json, pytorch_model.bin, tokenizer, classifier.pt, metrics.json).

Single texts or sentence pairs; one class per text, a regression score (`--num_labels 1`) or several classes
(`--problem_type multi_label`), each with HF's loss for that `problem_type` (`model_roberta.classification_loss`).

After every epoch `output_dir/train_state.pt` holds everything needed to continue (model, optimizer, scheduler, RNG,
the best epoch so far); `--resume` continues from it and ends with the same weights as an uninterrupted run.
"""

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from litgpt.args import FinetuneArgs, check_finetune_args
from litgpt.checkpoint import check_state_dict
from litgpt.config import Config
from litgpt.data.classification import ClassificationDataModule
from litgpt.export import STATE_FILE, check_output_dir, prepare_output_dir, save_adapters, save_finetuned
from litgpt.finetune.loop import find_weights, fit_max_length, make_scheduler, optimizer_step
from litgpt.kernels import add_lora
from litgpt.metrics import SELECTION, format_report, make_metrics, metrics_report
from litgpt.model_roberta import (
    LORA_TARGETS,
    PROBLEM_TYPES,
    RobertaForSequenceClassification,
    classification_loss,
)
from litgpt.run import default_precision, make_fabric, plain, unwrap
from litgpt.tokenizer import Tokenizer
from litgpt.utils import UsageError, atomic_torch_save, capture_rng, make_adamw, restore_rng, safe_torch_load

# what must not change between a run and its `--resume`, or the result would not be the uninterrupted run's
RESUME_KEYS = ("num_labels", "batch_size", "learning_rate", "max_length", "seed", "warmup_ratio", "weight_decay",
               "max_grad_norm", "precision", "use_agnews", "label_names", "lora_r", "lora_alpha", "lora_dropout",
               "lora_targets", "problem_type", "text_columns", "threshold", "glue")


def setup(args: FinetuneArgs) -> None:
    check_finetune_args(args)
    if args.task != "classification":  # ner.py, qa.py
        import importlib

        return importlib.import_module(f"litgpt.finetune.{args.task}").setup(args)
    if args.glue is not None:
        from litgpt.finetune.glue import run_glue

        return run_glue(args)
    args = resolve_problem_type(args)
    check_output_dir(Path(args.output_dir), Path(args.data_dir), args.resume)
    columns = [c.strip() for c in args.text_columns.split(",")] if args.text_columns else None
    data = ClassificationDataModule(Path(args.data_dir), args.num_labels, args.use_agnews, args.label_names,
                                    args.num_workers, args.problem_type, columns)
    finetune(args, data)


def resolve_problem_type(args: FinetuneArgs) -> FinetuneArgs:
    """`--problem_type` from `--num_labels` when not given (1: regression), and regression's one output."""
    problem_type = args.problem_type or ("regression" if args.num_labels == 1 else "single_label")
    num_labels = args.num_labels
    if problem_type == "regression" and num_labels == FinetuneArgs.num_labels:
        num_labels = 1  # the default, not a request
    if problem_type == "regression" and num_labels != 1:
        raise UsageError(f"--num_labels {num_labels}: --problem_type regression predicts one score; pass "
                         "--num_labels 1")
    if problem_type != "regression" and num_labels < 2:
        raise UsageError(f"--num_labels {num_labels}: {problem_type} classification needs at least 2 classes (for a "
                         "score, --problem_type regression)")
    return replace(args, problem_type=problem_type, num_labels=num_labels)


def finetune(args: FinetuneArgs, data: ClassificationDataModule, selected_by: Optional[str] = None) -> None:
    """Finetunes on `data` into `args.output_dir` (checked already); `selected_by` is the metric that picks the best
    epoch (default: by problem type, `metrics.SELECTION`)."""
    args = replace(args, eval_batch_size=args.eval_batch_size or 2 * args.batch_size,
                   max_grad_norm=args.max_grad_norm or None)
    resume_state = None
    if args.resume:
        resume_state = load_resume_state(args, data)
        args = replace(args, precision=resume_state["args"]["precision"])
        config = Config(**resume_state["model_config"])
        weights, tokenizer, source = None, Tokenizer(args.output_dir), resume_state["weights_source"]
    else:
        config, weights, tokenizer, source = resolve_weights(args.model_name, args.from_scratch, data, args.num_labels)
    if weights is not None:
        with torch.device("meta"):
            load_weights(RobertaForSequenceClassification(config, args.num_labels), weights, source, check_only=True)
    max_length = fit_max_length(args.max_length, config)
    config = replace(config, num_labels=args.num_labels, id2label=data.id2label,
                     problem_type=PROBLEM_TYPES[args.problem_type])
    args = replace(args, precision=args.precision or default_precision())
    fabric = make_fabric(args.devices, args.accelerator, args.precision)
    fabric.launch(main, args, data, config, tokenizer, weights, source, max_length, resume_state,
                  selected_by or SELECTION[config.problem_type])


def main(fabric, args: FinetuneArgs, data: ClassificationDataModule, config: Config, tokenizer,
         weights: Optional[Dict[str, torch.Tensor]], source: str, max_length: int,
         resume_state: Optional[Dict[str, Any]], selected_by: str) -> None:
    if resume_state is not None and resume_state.get("world_size", 1) != fabric.world_size:
        raise UsageError(f"--resume: the saved run trained on {resume_state.get('world_size', 1)} device(s), now "
                         f"{fabric.world_size}; resume with the same --devices")
    fabric.seed_everything(args.seed, verbose=False)
    if fabric.global_rank == 0:
        prepare_output_dir(Path(args.output_dir), hparams(args), tokenizer, config, resume_state is not None)
    fabric.barrier()
    fabric.print(f"Weights: {source}")
    if max_length != args.max_length:
        fabric.print(f"note: the model has {max_length} positions; using --max_length {max_length}", file=sys.stderr)

    data.connect(tokenizer, batch_size=args.batch_size, max_seq_length=max_length, seed=args.seed,
                 rank=fabric.global_rank, world_size=fabric.world_size, eval_batch_size=args.eval_batch_size)
    data.setup()
    train_loader, test_loader = data.train_dataloader(), data.val_dataloader()

    model = RobertaForSequenceClassification(config, config.num_labels)
    if weights is not None:
        load_weights(model, weights, source)
    if args.lora_r:
        add_lora_adapters(fabric, model, args)
    optimizer = make_adamw(model, args.learning_rate, args.weight_decay, fabric.device)
    scheduler = make_scheduler(optimizer, len(train_loader) * args.num_epochs, args.warmup_ratio)
    model, optimizer = fabric.setup(model, optimizer)

    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "epoch": 0, "best": None, "history": [],
             "config": config, "source": source}
    if resume_state is not None:
        unwrap(model).load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        state.update({k: resume_state[k] for k in ("epoch", "best", "history")})
        restore_rng(resume_state["rng"])
        fabric.print(f"Resumed {Path(args.output_dir) / STATE_FILE} after epoch {state['epoch']}")
    what = "a regression score" if args.problem_type == "regression" else f"{config.num_labels} labels"
    fabric.print(f"{what}{' (multi-label)' if args.problem_type == 'multi_label' else ''}, "
                 f"{'sentence pairs, ' if data.pairs else ''}{len(data.train)} train / {len(data.test)} test "
                 f"examples, {len(train_loader)} steps per epoch, precision {args.precision}")

    fit(fabric, state, train_loader, test_loader, args, data, selected_by)
    extra_tests = {}
    if data.extra_tests:  # further dev sets (MNLI mismatched), scored with the best epoch's weights
        unwrap(model).load_state_dict(state["best"]["model"])
        extra_tests = {name: evaluate(fabric, model, loader, config, args.threshold)
                       for name, loader in data.extra_dataloaders().items()}
    if fabric.global_rank == 0:
        best = state["best"]
        report = metrics_report(best["metrics"], data.id2label, best["epoch"], state["epoch"], source, selected_by)
        if extra_tests:
            report["extra_tests"] = extra_tests
        report["history"] = state["history"]
        if args.lora_r:
            save_adapters(Path(args.output_dir), best["model"], config, report, args, trainable_names(model))
        else:
            save_finetuned(Path(args.output_dir), best["model"], config, report)
        print(format_report(report))
        print(f"Saved the finetuned model (epoch {best['epoch']}) to {args.output_dir}")
    fabric.barrier()


def fit(fabric, state: Dict[str, Any], train_loader, test_loader, args: FinetuneArgs,
        data: ClassificationDataModule, selected_by: str) -> None:
    from tqdm.auto import tqdm

    model, optimizer, scheduler, config = state["model"], state["optimizer"], state["scheduler"], state["config"]
    for epoch in range(state["epoch"], args.num_epochs):
        t0 = time.perf_counter()
        model.train()
        data.set_epoch(epoch)
        loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
        seen = 0
        bar = tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{args.num_epochs}", unit="step", leave=False,
                   disable=None if fabric.global_rank == 0 else True, file=sys.stderr)
        for i, batch in enumerate(train_loader):
            batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
            logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
            loss = classification_loss(logits, batch["labels"], config.problem_type)
            optimizer_step(fabric, model, optimizer, scheduler, loss, args.max_grad_norm)
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
        metrics = evaluate(fabric, model, test_loader, config, args.threshold)
        metrics.update(epoch=epoch + 1, train_loss=train_loss)
        state["history"].append({k: metrics[k] for k in ("epoch", "train_loss", "loss", selected_by, "accuracy", "f1")
                                 if k in metrics})
        best = state["best"]
        improved = best is None or (metrics[selected_by], -metrics["loss"]) > (best["metrics"][selected_by],
                                                                               -best["metrics"]["loss"])
        if improved:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
            state["best"] = {"epoch": epoch + 1, "metrics": metrics, "model": weights}
        state["epoch"] = epoch + 1
        shown = " | ".join(f"{k} {metrics[k]:.4f}" for k in dict.fromkeys((selected_by, "accuracy", "f1"))
                           if k in metrics)
        fabric.print(f"epoch {epoch + 1}/{args.num_epochs} | train loss {train_loss:.4f} | test loss "
                     f"{metrics['loss']:.4f} | {shown} | {time.perf_counter() - t0:.1f}s"
                     + (" | best so far" if improved else ""))
        if fabric.global_rank == 0:
            save_train_state(Path(args.output_dir) / STATE_FILE, state, args, data, fabric.world_size)
        fabric.barrier()


@torch.no_grad()
def evaluate(fabric, model, loader, config: Config, threshold: float = 0.5) -> Dict[str, Any]:
    metrics = make_metrics(config.problem_type, config.num_labels, fabric.device, threshold)
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
        metrics.update(logits, batch["labels"])
    model.train(was_training)
    return metrics.compute()


# ---- checks, weights and resuming -----------------------------------------------------------------------------
def resolve_weights(model_name: str, from_scratch: bool, data: ClassificationDataModule, num_labels: int
                    ) -> Tuple[Config, Optional[Dict[str, torch.Tensor]], Any, str]:
    """(config, state dict or None for random init, tokenizer, one line saying where the weights came from)."""
    texts = data.train.texts + (data.train.texts_b or [])
    config, state, tokenizer, source = find_weights(model_name, from_scratch, texts, data.train.path)
    if state is None:
        return config, None, tokenizer, source
    head = state.get("classifier.out_proj.weight")
    if head is not None and head.shape[0] == num_labels:
        what = "encoder and classification head"
    else:
        state = {k: v for k, v in state.items() if k.startswith("roberta.")}
        what = f"encoder, new classification head ({num_labels} labels)"
    return config, state, tokenizer, f"{source}: {what}"


def load_weights(model: RobertaForSequenceClassification, state: Dict[str, torch.Tensor], source: str,
                 check_only: bool = False) -> None:
    """The encoder (and a classification head when `state` has one that fits) from `state`; names and shapes are
    checked first, so a mismatch is one clear error."""
    for prefix, module in (("roberta.", model.roberta), ("classifier.", model.classifier)):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part and prefix == "classifier.":
            continue
        if prefix == "roberta." and model.roberta.pooler is not None and "pooler.weight" not in part:
            # BERT from a masked LM, which has no pooler: it starts fresh, as in HF's BertForSequenceClassification
            part.update({k: v for k, v in module.state_dict().items() if k.startswith("pooler.")})
        check_state_dict(module, part, source)
        if not check_only:
            module.load_state_dict(part)


def add_lora_adapters(fabric, model: RobertaForSequenceClassification, args: FinetuneArgs) -> None:
    """LoRA on the encoder's --lora_targets; everything else is frozen but the classification head."""
    targets = [LORA_TARGETS[t.strip()] for t in args.lora_targets.split(",")]
    layers = add_lora(model.roberta, targets, args.lora_r, args.lora_alpha, args.lora_dropout)
    model.classifier.requires_grad_(True)
    if model.roberta.pooler is not None:  # BERT's pooler feeds the head (and may be fresh): it trains with it
        model.roberta.pooler.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    fabric.print(f"LoRA r={args.lora_r} on {layers} layers ({args.lora_targets}): {trainable:,} of {total:,} "
                 f"parameters train ({100 * trainable / total:.2f}%)")


def trainable_names(model: torch.nn.Module) -> List[str]:
    return [name for name, p in unwrap(model).named_parameters() if p.requires_grad]


def hparams(args: FinetuneArgs) -> Dict[str, Any]:
    return plain(asdict(args))


def save_train_state(path: Path, state: Dict[str, Any], args: FinetuneArgs, data: ClassificationDataModule,
                     world_size: int = 1) -> None:
    atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in unwrap(state["model"]).state_dict().items()},
        "optimizer": state["optimizer"].state_dict(),
        "scheduler": state["scheduler"].state_dict(),
        "rng": capture_rng(),
        **{k: state[k] for k in ("epoch", "best", "history")},
        "args": hparams(args),
        "model_config": asdict(state["config"]),
        "data_fingerprint": data.fingerprint,
        "weights_source": state["source"],
        "world_size": world_size,
    }, path)


def load_resume_state(args: FinetuneArgs, data: ClassificationDataModule) -> Dict[str, Any]:
    path = Path(args.output_dir) / STATE_FILE
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "model" not in state or "args" not in state:
        raise UsageError(f"{path}: not a finetuning training state")
    saved, now = state["args"], hparams(args)
    diffs = [f"--{k} {saved.get(k)!r} (now {now[k]!r})" for k in RESUME_KEYS
             if saved.get(k) != now[k] and not (k == "precision" and now[k] is None)]
    if diffs:
        raise UsageError(f"--resume: the saved run used {', '.join(diffs)}; resume with the same flags")
    if state["data_fingerprint"] != data.fingerprint:
        raise UsageError(f"--resume: the data in {args.data_dir} differs from the data of the saved run")
    if state["epoch"] >= args.num_epochs:
        raise UsageError(f"--resume: the saved run already finished {state['epoch']} epoch(s); pass a larger "
                         "--num_epochs to train further")
    if saved.get("num_epochs") != args.num_epochs:
        print(f"note: --num_epochs {args.num_epochs} differs from the saved run's {saved.get('num_epochs')}: the "
              "learning-rate schedule is re-planned, so this is not the same as one uninterrupted run", file=sys.stderr)
    return state


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(setup, None, prog="finetune")

"""`litgpt finetune` / `scripts/finetune_roberta.py` (`--task classification`): sequence classification and
regression on labelled text, single texts or sentence pairs.

setup() settles the problem type and reads every split (`litgpt.data.classification`) -> finetune() finds the
weights -> the shared loop (`loop.py`) trains, chooses the epoch on the validation split and scores the test split
once -> a HuggingFace-loadable `output_dir` (config.json, pytorch_model.bin, tokenizer, classifier.pt,
metrics.json).

One class per text, a regression score (`--num_labels 1`) or several classes (`--problem_type multi_label`), each
with HF's loss for that `problem_type` (`litgpt.losses.classification_loss`) and its metrics (`litgpt.metrics`):
accuracy chooses single-label epochs, Pearson regression ones, micro F1 multi-label ones; a GLUE task names its own
(`finetune/glue.py` runs those through `finetune` here).
"""

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from litgpt.args import FinetuneArgs
from litgpt.data.classification import ClassificationDataModule
from litgpt.finetune import loop, prepare
from litgpt.losses import PROBLEM_TYPES, classification_loss
from litgpt.metrics import SELECTION, format_report, make_metrics, metrics_report
from litgpt.model_roberta import RobertaForSequenceClassification
from litgpt.utils import UsageError


def setup(args: FinetuneArgs) -> None:
    """Runs after `litgpt.finetune.setup` checked the flags."""
    args = resolve_problem_type(args)
    prepare.check_output(args)
    columns = [c.strip() for c in args.text_columns.split(",")] if args.text_columns else None
    data = ClassificationDataModule(Path(args.data_dir), args.num_labels, args.use_agnews, args.label_names,
                                    args.num_workers, args.problem_type, columns, val_fraction=args.val_fraction,
                                    seed=args.seed)
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


def finetune(args: FinetuneArgs, data: ClassificationDataModule, metric: Optional[str] = None) -> None:
    """Finetunes on `data` into `args.output_dir` (checked already); `metric` chooses the epoch (default: by
    problem type, `metrics.SELECTION`)."""
    problem_type = PROBLEM_TYPES[args.problem_type]
    texts = data.train.texts + (data.train.texts_b or [])  # a tokenizer trained --from_scratch reads train only
    run = prepare.prepare(args, data, lambda config: RobertaForSequenceClassification(config, args.num_labels),
                          texts, num_labels=args.num_labels, id2label=data.id2label, problem_type=problem_type)
    loop.launch(run, partial(make_task, metric=metric or SELECTION[problem_type]))


def make_task(fabric, run: prepare.Run, metric: str) -> loop.Task:
    args, config, data = run.args, run.config, run.data

    def loss(model, batch: Dict[str, Any]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
        return classification_loss(logits, batch["labels"], config.problem_type)

    def evaluate(model, split: str, chosen: Dict[str, Any]) -> Dict[str, Any]:
        return score(fabric, model, data.eval_dataloader(split), config, args.threshold)

    def finish(model, test: Dict[str, Any]) -> Dict[str, Any]:
        report = metrics_report(test, data.id2label)
        if data.extra_tests:  # further dev sets (MNLI mismatched), scored like the test split, with the same model
            report["extra_tests"] = {name: evaluate(model, name, {}) for name in data.extra_tests}
        return report

    what = "a regression score" if args.problem_type == "regression" else f"{config.num_labels} labels"
    summary = (f"{what}{' (multi-label)' if args.problem_type == 'multi_label' else ''}"
               f"{', sentence pairs' if data.pairs else ''}")
    return loop.Task(make_model=lambda: RobertaForSequenceClassification(config, config.num_labels), loss=loss,
                     evaluate=evaluate, metric=metric, summary=summary, finish=finish, show=format_report)


def score(fabric, model, loader, config, threshold: float = 0.5) -> Dict[str, Any]:
    """The problem type's metrics over a loader's batches (each rank its share, synced by torchmetrics)."""
    metrics = make_metrics(config.problem_type, config.num_labels, fabric.device, threshold)
    for batch in loader:
        batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
        metrics.update(model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                             batch["packing"]), batch["labels"])
    return metrics.compute()


if __name__ == "__main__":
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup as finetune_setup

    run_command(finetune_setup, None, prog="finetune")

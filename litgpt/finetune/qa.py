"""`litgpt finetune --task qa`: extractive question answering on SQuAD v1.1 / v2.0 files with Lightning Fabric.

setup() reads and checks the SQuAD files (`litgpt.data.qa`) and finds the weights -> main() trains with the shared
epoch loop (`loop.py`); the loss is HF's, the mean of the start and end cross-entropies. After every epoch the test
split is answered (windows -> best spans, `data.qa.best_answers`) and scored with exact match and F1 (the official
SQuAD normalisation, through torchmetrics). With SQuAD v2 the null-answer threshold that maximises F1 on that split
is chosen each time. The best epoch by F1 is exported as a HuggingFace `...ForQuestionAnswering` folder, with its
answers in `predictions.json` ({question id: answer}, the official format) and the threshold in `metrics.json`.
"""

import json
import math
from pathlib import Path
from typing import Any, Dict

import torch.nn.functional as F

from litgpt.args import FinetuneArgs
from litgpt.data.qa import QADataModule, apply_null_threshold, best_answers
from litgpt.finetune import loop
from litgpt.metrics import best_null_threshold, headline, squad_scores
from litgpt.model_roberta import RobertaForQuestionAnswering
from litgpt.utils import atomic_write_text


def setup(args: FinetuneArgs) -> None:
    loop.check_output(args)
    data = QADataModule(Path(args.data_dir), args.doc_stride, args.num_workers)
    texts = [t for e in data.train.examples for t in (e.question, e.context)]
    loop.launch(loop.prepare(args, data, list(dict.fromkeys(texts)), data.train.path), main)


def main(fabric, run: loop.Run) -> None:
    data: QADataModule = run.data
    model, optimizer, scheduler = loop.start(fabric, run, lambda: RobertaForQuestionAnswering(run.config))
    fabric.print(f"SQuAD v{'2.0' if data.version_2 else '1.1'}: {len(data.train)} train / {len(data.test)} test "
                 f"questions, {len(data.train_dataloader().dataset)} train windows, precision {run.args.precision}")

    def loss_fn(model, batch):
        start, end = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return (F.cross_entropy(start.float(), batch["start_positions"])
                + F.cross_entropy(end.float(), batch["end_positions"])) / 2

    best = loop.fit_epochs(fabric, run, model, optimizer, scheduler, loss_fn,
                           lambda m: evaluate(fabric, m, data, run.args.max_answer_length), "f1")
    if fabric.global_rank == 0:
        metrics = dict(best["metrics"])
        predictions = metrics.pop("predictions")
        report = {**metrics, "best_epoch": best["epoch"], "num_epochs": run.args.num_epochs,
                  "weights_source": run.source, "squad_version": "2.0" if data.version_2 else "1.1",
                  "max_length": run.max_length, "doc_stride": data.doc_stride,
                  "max_answer_length": run.args.max_answer_length,
                  "history": best["history"]}
        loop.save(run, best, report)
        out = Path(run.args.output_dir)
        atomic_write_text(out / "predictions.json", json.dumps(predictions, indent=2, ensure_ascii=False) + "\n")
        print(f"Test metrics of the best epoch ({best['epoch']} of {run.args.num_epochs}), {len(data.test)} "
              f"questions\n  {headline(report)}"
              + (f" | null threshold {report['null_threshold']}" if data.version_2 else ""))
        print(f"Saved the finetuned model (epoch {best['epoch']}) and predictions.json to {out}")
    fabric.barrier()


def evaluate(fabric, model, data: QADataModule, max_answer_length: int) -> Dict[str, Any]:
    """Answers every test question and scores them; for SQuAD v2 with the null threshold best on this split."""
    windows = data.test_windows()
    starts, ends, loss_sum = [], [], 0.0
    for batch in data.val_dataloader():
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        start, end = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        mask = batch["attention_mask"].bool()
        start, end = start.float().masked_fill(~mask, -1e4), end.float().masked_fill(~mask, -1e4)
        loss_sum += ((F.cross_entropy(start, batch["start_positions"], reduction="sum")
                      + F.cross_entropy(end, batch["end_positions"], reduction="sum")) / 2).item()
        for row in range(start.size(0)):
            n = int(mask[row].sum())
            starts.append(start[row, :n].cpu())
            ends.append(end[row, :n].cpu())
    examples = data.test.examples
    answers = best_answers(examples, windows, starts, ends, max_answer_length=max_answer_length)
    golds = [[text for text, _ in e.answers] for e in examples]
    answered = squad_scores([a["text"] for a in answers], golds)
    threshold = math.inf
    if data.version_2:
        abstained = squad_scores([""] * len(answers), golds)
        threshold, _ = best_null_threshold([a["null_margin"] for a in answers], answered, abstained)
        # each question's score at that threshold is one of the two already computed: no third scoring pass
        answered = [no if a["null_margin"] > threshold else yes for a, yes, no in zip(answers, answered, abstained)]
        answers = apply_null_threshold(answers, threshold)
    metrics = {"loss": loss_sum / max(len(windows), 1),
               "exact_match": sum(em for em, _ in answered) / len(answered),
               "f1": sum(f1 for _, f1 in answered) / len(answered),
               "num_questions": len(examples),
               "predictions": {e.id: a["text"] for e, a in zip(examples, answers)}}
    if data.version_2:
        has = [i for i, g in enumerate(golds) if g]
        metrics.update(null_threshold=threshold if math.isfinite(threshold) else None,
                       has_answer_f1=sum(answered[i][1] for i in has) / max(len(has), 1),
                       no_answer_accuracy=sum(answered[i][0] for i, g in enumerate(golds) if not g)
                       / max(len(golds) - len(has), 1))
    return metrics

"""`litgpt finetune --task qa`: extractive question answering on SQuAD v1.1 / v2.0 files with Lightning Fabric.

setup() reads and checks the SQuAD files (`litgpt.data.qa`) and finds the weights -> the shared loop (`loop.py`)
trains with the mean of the start and end cross-entropies (`litgpt.losses.span_loss`; the encoder runs on the real
tokens alone), chooses the epoch on the validation split by F1, and scores the test split once: every question is
answered (windows -> best spans, `data.qa.best_answers`) and scored with exact match and F1 (the official SQuAD
normalisation, through torchmetrics).

SQuAD v2's null-answer threshold is a choice too, so the validation split makes it: the threshold that maximises
F1 there, with each epoch's model. The test split is answered with the chosen epoch's threshold; without a
validation split it is 0.0 (HF `run_qa.py`'s default: abstain when the null score beats the best span). The model
goes out as a HuggingFace `...ForQuestionAnswering` folder, its test answers in `predictions.json` ({question id:
answer}, the official format) and the threshold in `metrics.json`, which `litgpt qa` reads.
"""

import json
import math
from pathlib import Path
from typing import Any, Dict

from litgpt.args import FinetuneArgs
from litgpt.data.qa import QADataModule, apply_null_threshold, best_answers
from litgpt.finetune import loop, prepare
from litgpt.losses import span_loss
from litgpt.metrics import best_null_threshold, headline, report_title, squad_scores
from litgpt.model_roberta import RobertaForQuestionAnswering
from litgpt.utils import atomic_write_text

DEFAULT_NULL_THRESHOLD = 0.0  # without a validation split to choose one (HF run_qa.py's null_score_diff_threshold)


def setup(args: FinetuneArgs) -> None:
    prepare.check_output(args)
    data = QADataModule(Path(args.data_dir), args.doc_stride, args.num_workers, args.val_fraction, args.seed)
    texts = [t for e in data.train.examples for t in (e.question, e.context)]
    loop.launch(prepare.prepare(args, data, RobertaForQuestionAnswering, list(dict.fromkeys(texts))), make_task)


def make_task(fabric, run: prepare.Run) -> loop.Task:
    data: QADataModule = run.data
    args = run.args

    def loss(model, batch):
        start, end = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
        return span_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])

    def finish(model, test: Dict[str, Any]) -> Dict[str, Any]:
        test = dict(test)
        predictions = test.pop("predictions")
        if fabric.global_rank == 0:
            out = Path(args.output_dir)
            atomic_write_text(out / "predictions.json", json.dumps(predictions, indent=2, ensure_ascii=False) + "\n")
        return {**test, "squad_version": "2.0" if data.version_2 else "1.1", "max_length": run.max_length,
                "doc_stride": data.doc_stride, "max_answer_length": args.max_answer_length}

    def show(report: Dict[str, Any]) -> str:
        threshold = f" | null threshold {report['null_threshold']}" if data.version_2 else ""
        return (f"{report_title(report)}, {report['num_questions']} questions\n  {headline(report)}{threshold}\n"
                f"  (answers in {Path(args.output_dir) / 'predictions.json'})")

    return loop.Task(make_model=lambda: RobertaForQuestionAnswering(run.config), loss=loss,
                     evaluate=lambda model, split, chosen: evaluate(fabric, model, data, split, args.max_answer_length,
                                                                    chosen),
                     metric="f1", summary=f"SQuAD v{'2.0' if data.version_2 else '1.1'}", finish=finish, show=show)


def evaluate(fabric, model, data: QADataModule, split: str, max_answer_length: int,
             chosen: Dict[str, Any]) -> Dict[str, Any]:
    """Answers every question of `split` and scores the answers. For SQuAD v2 the null threshold is `chosen`'s
    (what validation chose), or, while choosing (`chosen` empty) on the validation split, the best one there."""
    windows = data.eval_examples(split)
    starts, ends, loss_sum = [], [], 0.0
    for batch in data.eval_dataloader(split):
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        start, end = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
        loss_sum += span_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"],
                              reduction="sum").item()
        lengths = batch["attention_mask"].sum(1).tolist()
        for row, n in enumerate(lengths):
            starts.append(start[row, :n].float().cpu())
            ends.append(end[row, :n].float().cpu())
    examples = data.splits()[split].examples
    answers = best_answers(examples, windows, starts, ends, max_answer_length=max_answer_length)
    golds = [[text for text, _ in e.answers] for e in examples]
    answered = squad_scores([a["text"] for a in answers], golds)
    threshold = math.inf
    if data.version_2:
        abstained = squad_scores([""] * len(answers), golds)
        if split == "validation" and not chosen:
            threshold, _ = best_null_threshold([a["null_margin"] for a in answers], answered, abstained)
        else:
            saved = chosen.get("null_threshold", DEFAULT_NULL_THRESHOLD)
            threshold = math.inf if saved is None else saved
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

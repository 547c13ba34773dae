"""`litgpt finetune --task ner`: token classification (named entities, or any tag per word) with Lightning Fabric.

setup() reads the tagged sentences (`litgpt.data.ner`) and finds the weights -> main() trains with the shared epoch
loop (`loop.py`), scoring the test split after every epoch: entity-level precision, recall and F1 (seqeval's
definition, as HF's `run_ner.py` reports them) when the tags are BIO, and the accuracy over words. The best epoch by
F1 (accuracy for tags that are not BIO) is exported as a HuggingFace `...ForTokenClassification` folder.
"""

from pathlib import Path
from typing import Any, Dict, List

import torch.nn.functional as F

from litgpt.args import FinetuneArgs
from litgpt.data.ner import TokenClassificationDataModule, is_bio
from litgpt.finetune import loop
from litgpt.metrics import format_tagging_report, tagging_metrics
from litgpt.model_roberta import RobertaForTokenClassification


def setup(args: FinetuneArgs) -> None:
    loop.check_output(args)
    data = TokenClassificationDataModule(Path(args.data_dir), args.num_workers)
    texts = [" ".join(words) for words in data.train.sentences]
    run = loop.prepare(args, data, texts, data.train.path, len(data.labels), data.id2label)
    loop.launch(run, main)


def main(fabric, run: loop.Run) -> None:
    data = run.data
    model, optimizer, scheduler = loop.start(fabric, run,
                                             lambda: RobertaForTokenClassification(run.config, len(data.labels)))
    bio = is_bio(data.labels)
    fabric.print(f"{len(data.labels)} tags{' (BIO)' if bio else ''}, {len(data.train)} train / {len(data.test)} test "
                 f"sentences, precision {run.args.precision}")

    def loss_fn(model, batch):
        logits = model(batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    best = loop.fit_epochs(fabric, run, model, optimizer, scheduler, loss_fn,
                           lambda m: evaluate(fabric, m, data), "f1" if bio else "accuracy")
    if fabric.global_rank == 0:
        report = {**best["metrics"], "best_epoch": best["epoch"], "num_epochs": run.args.num_epochs,
                  "weights_source": run.source, "num_labels": len(data.labels),
                  "id2label": {str(i): t for i, t in data.id2label.items()}, "history": best["history"]}
        loop.save(run, best, report)
        print(format_tagging_report(report))
        print(f"Saved the finetuned model (epoch {best['epoch']}) to {run.args.output_dir}")
    fabric.barrier()


def evaluate(fabric, model, data: TokenClassificationDataModule) -> Dict[str, Any]:
    """Loss over the scored sub-tokens, and the metrics of the predicted tag of every test word."""
    windows = data.test_windows()
    predicted: List[List[str]] = [["O"] * len(words) for words in data.test.sentences]
    loss_sum, count, done = 0.0, 0, 0
    for batch in data.val_dataloader():
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        logits = model(batch["input_ids"], batch["attention_mask"]).float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                                    reduction="sum").item()
        count += int((batch["labels"] != -100).sum())
        best = logits.argmax(-1).cpu()
        for row in range(best.size(0)):
            for position, sentence, word in windows[done + row].words:
                predicted[sentence][word] = data.id2label[int(best[row, position])]
        done += best.size(0)
    metrics = tagging_metrics(data.test.tags, predicted, is_bio(data.labels))
    return {"loss": loss_sum / max(count, 1), **metrics}

"""`litgpt finetune --task ner`: token classification (named entities, or any tag per word) with Lightning Fabric.

setup() reads the tagged sentences (`litgpt.data.ner`) and finds the weights -> the shared loop (`loop.py`) trains
on the labelled tokens alone (the packed head: the encoder runs on the real tokens, the head on the words' first
sub-tokens), chooses the epoch on the validation split and scores the test split once: entity-level precision,
recall and F1 (seqeval's definition, as HF's `run_ner.py` reports them) when the tags are BIO, and the accuracy over
words. F1 chooses the epoch (accuracy for tags that are not BIO); the model is exported as a HuggingFace
`...ForTokenClassification` folder.
"""

from functools import partial
from pathlib import Path
from typing import Any, Dict, List

import torch

from litgpt.args import FinetuneArgs
from litgpt.data.ner import TokenClassificationDataModule, is_bio
from litgpt.finetune import loop, prepare
from litgpt.losses import token_loss
from litgpt.metrics import format_tagging_report, tagging_metrics
from litgpt.model_roberta import RobertaForTokenClassification


def setup(args: FinetuneArgs) -> None:
    prepare.check_output(args)
    data = TokenClassificationDataModule(Path(args.data_dir), args.num_workers, args.val_fraction, args.seed)
    texts = [" ".join(words) for words in data.train.sentences]
    run = prepare.prepare(args, data, partial(RobertaForTokenClassification, num_labels=len(data.labels)), texts,
                          num_labels=len(data.labels), id2label=data.id2label, problem_type=None)
    loop.launch(run, make_task)


def make_task(fabric, run: prepare.Run) -> loop.Task:
    data: TokenClassificationDataModule = run.data
    bio = is_bio(data.labels)

    def loss(model, batch: Dict[str, Any]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], packing=batch["packing"])
        return token_loss(logits, batch["labels"].reshape(-1)[batch["packing"].selected])

    def finish(model, test: Dict[str, Any]) -> Dict[str, Any]:
        return {**test, "num_labels": len(data.labels), "id2label": {str(i): t for i, t in data.id2label.items()}}

    return loop.Task(make_model=lambda: RobertaForTokenClassification(run.config, len(data.labels)), loss=loss,
                     evaluate=lambda model, split, chosen: evaluate(fabric, model, data, split),
                     metric="f1" if bio else "accuracy", summary=f"{len(data.labels)} tags{' (BIO)' if bio else ''}",
                     finish=finish, show=format_tagging_report)


def evaluate(fabric, model, data: TokenClassificationDataModule, split: str) -> Dict[str, Any]:
    """Loss over the scored sub-tokens, and the metrics of the predicted tag of every word of `split`."""
    windows = data.eval_examples(split)
    sentences = data.splits()[split]
    predicted: List[List[str]] = [["O"] * len(words) for words in sentences.sentences]
    loss_sum, count, done = 0.0, 0, 0
    for batch in data.eval_dataloader(split):
        batch = {k: v.to(fabric.device) for k, v in batch.items()}
        logits = model(batch["input_ids"], batch["attention_mask"], packing=batch["packing"]).float()
        labels = batch["labels"].reshape(-1)[batch["packing"].selected]
        loss_sum += token_loss(logits, labels, reduction="sum").item()
        count += labels.numel()
        best = iter(logits.argmax(-1).tolist())  # the labelled tokens in row-major order: each window's words
        for window in windows[done : done + batch["input_ids"].size(0)]:
            for _, sentence, word in window.words:
                predicted[sentence][word] = data.id2label[next(best)]
        done += batch["input_ids"].size(0)
    metrics = tagging_metrics(sentences.tags, predicted, is_bio(data.labels))
    return {"loss": loss_sum / max(count, 1), **metrics}

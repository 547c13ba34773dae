"""The reports of a finetuned model: metrics through torchmetrics, the `metrics.json` document, the printed table.

Sequence classification: loss, accuracy and precision/recall/F1 (binary for 2 labels, positive class 1; else the
macro average), per-class scores and the confusion matrix (rows: true label, columns: predicted).
"""

import json
import re
from typing import Any, Dict

import torch


class ClassificationMetrics:
    """Accumulates predictions batch by batch (on the device, synced across ranks by torchmetrics)."""

    def __init__(self, num_labels: int, device: torch.device) -> None:
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

        self.binary = num_labels == 2
        n = dict(num_classes=num_labels)
        self.metrics = MetricCollection({
            "accuracy": MulticlassAccuracy(**n, average="micro"),
            "precision": BinaryPrecision() if self.binary else MulticlassPrecision(**n, average="macro"),
            "recall": BinaryRecall() if self.binary else MulticlassRecall(**n, average="macro"),
            "f1": BinaryF1Score() if self.binary else MulticlassF1Score(**n, average="macro"),
            "class_precision": MulticlassPrecision(**n, average="none"),
            "class_recall": MulticlassRecall(**n, average="none"),
            "class_f1": MulticlassF1Score(**n, average="none"),
            "confusion_matrix": MulticlassConfusionMatrix(**n),
        }).to(device)
        self.mean_loss = MeanMetric().to(device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        self.mean_loss.update(torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
        self.metrics.update(logits.argmax(-1), labels)

    def compute(self) -> Dict[str, Any]:
        values = self.metrics.compute()
        confusion = values["confusion_matrix"].long().cpu()
        return {
            "loss": float(self.mean_loss.compute()),
            "accuracy": float(values["accuracy"]),
            "f1": float(values["f1"]),
            "precision": float(values["precision"]),
            "recall": float(values["recall"]),
            "average": "binary" if self.binary else "macro",
            "class_precision": values["class_precision"].tolist(),
            "class_recall": values["class_recall"].tolist(),
            "class_f1": values["class_f1"].tolist(),
            "support": confusion.sum(1).tolist(),
            "confusion_matrix": confusion.tolist(),
            "num_examples": int(confusion.sum()),
        }


def metrics_report(metrics: Dict[str, Any], id2label: Dict[int, str], best_epoch: int, num_epochs: int,
                   source: str) -> Dict[str, Any]:
    """The `metrics.json` document: the headline metrics, then per class, then where the numbers came from."""
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


def report_json(report: Dict[str, Any]) -> str:
    """`json.dumps` with each list of numbers (a confusion-matrix row) on one line."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


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

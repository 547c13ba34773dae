"""The reports of a finetuned model: metrics through torchmetrics, the `metrics.json` document, the printed table.

- Single-label classification: loss, accuracy, Matthews correlation and precision/recall/F1 (binary for 2 labels,
  positive class 1; else the macro average), per-class scores and the confusion matrix (rows: true label, columns:
  predicted).
- Regression: the MSE loss, Pearson and Spearman correlation.
- Multi-label: the BCE loss, micro and macro F1 (and precision/recall) over labels at a decision threshold on the
  sigmoid, exact match (every label right), per-label F1.

`make_metrics` picks the set for a problem type; `SELECTION` names the metric that chooses the epoch on the
validation split. `report_title` says, atop every printed report, which split was scored and which model.

- Token classification (`tagging_metrics`): seqeval's entity-level precision, recall and F1 (its default mode, the
  conlleval rules HF's `run_ner.py` reports: an `I-` tag without a `B-` starts an entity) and the accuracy over words.
- Extractive QA (`squad_scores`): exact match and F1 after the official SQuAD answer normalisation.
"""

import json
import math
import re
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F

from litgpt.config import label_names

# the metric that chooses the epoch on the validation split, by problem type (a GLUE task names its own)
SELECTION = {"single_label_classification": "accuracy", "regression": "pearson",
             "multi_label_classification": "f1_micro"}


def make_metrics(problem_type: str, num_labels: int, device: torch.device, threshold: float = 0.5):
    if problem_type == "regression":
        return RegressionMetrics(device)
    if problem_type == "multi_label_classification":
        return MultiLabelMetrics(num_labels, device, threshold)
    return ClassificationMetrics(num_labels, device)


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
            MulticlassMatthewsCorrCoef,
            MulticlassPrecision,
            MulticlassRecall,
        )

        self.binary = num_labels == 2
        n = dict(num_classes=num_labels)
        self.metrics = MetricCollection({
            "accuracy": MulticlassAccuracy(**n, average="micro"),
            "mcc": MulticlassMatthewsCorrCoef(**n),
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
        # MCC is 0/0 when only one class is predicted (or true); the official GLUE metric (sklearn's) reports 0
        # there, while torchmetrics 1.9 perturbs the counts and reports a small non-zero value (its issue #3355)
        if (confusion.sum(0) > 0).sum() < 2 or (confusion.sum(1) > 0).sum() < 2:
            values["mcc"] = torch.tensor(0.0)
        return {
            "loss": float(self.mean_loss.compute()),
            "accuracy": float(values["accuracy"]),
            "mcc": float(values["mcc"]),
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


class RegressionMetrics:
    """Scores against float labels: the mean squared error (the loss), Pearson and Spearman correlation."""

    def __init__(self, device: torch.device) -> None:
        import warnings

        from torchmetrics import MeanMetric, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef

        with warnings.catch_warnings():  # that ranking keeps every score: one float pair per dev example is fine
            warnings.filterwarnings("ignore", message=".*SpearmanCorrcoef.*buffer")
            spearman = SpearmanCorrCoef()
        self.metrics = MetricCollection({"pearson": PearsonCorrCoef(), "spearman": spearman}).to(device)
        self.mean_loss = MeanMetric().to(device)
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        scores = logits.float().squeeze(-1)
        self.mean_loss.update(F.mse_loss(scores, labels.float(), reduction="none"))
        self.metrics.update(scores, labels.float())
        self.count += len(labels)

    def compute(self) -> Dict[str, Any]:
        values = self.metrics.compute()
        return {"loss": float(self.mean_loss.compute()), "pearson": float(values["pearson"]),
                "spearman": float(values["spearman"]), "num_examples": self.count}


class MultiLabelMetrics:
    """Multi-hot labels against sigmoid(logits) >= threshold: micro/macro F1, precision and recall, exact match."""

    def __init__(self, num_labels: int, device: torch.device, threshold: float = 0.5) -> None:
        from torchmetrics import MeanMetric, MetricCollection
        from torchmetrics.classification import (
            MultilabelExactMatch,
            MultilabelF1Score,
            MultilabelPrecision,
            MultilabelRecall,
        )

        n = dict(num_labels=num_labels, threshold=threshold)
        self.metrics = MetricCollection({
            "f1_micro": MultilabelF1Score(**n, average="micro"),
            "f1_macro": MultilabelF1Score(**n, average="macro"),
            "precision_micro": MultilabelPrecision(**n, average="micro"),
            "recall_micro": MultilabelRecall(**n, average="micro"),
            "exact_match": MultilabelExactMatch(**n),
            "label_f1": MultilabelF1Score(**n, average="none"),
        }).to(device)
        self.mean_loss = MeanMetric().to(device)
        self.threshold, self.count = threshold, 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        self.mean_loss.update(F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1))
        self.metrics.update(logits.sigmoid(), labels.long())
        self.count += len(labels)

    def compute(self) -> Dict[str, Any]:
        values = self.metrics.compute()
        out = {"loss": float(self.mean_loss.compute())}
        out.update({k: float(v) for k, v in values.items() if k != "label_f1"})
        out.update(label_f1=values["label_f1"].tolist(), threshold=self.threshold, num_examples=self.count)
        return out


def metrics_report(metrics: Dict[str, Any], id2label: Dict[int, str]) -> Dict[str, Any]:
    """The top of a classifier's `metrics.json`: the headline metrics, then per class (the loop adds which model
    was chosen, and how)."""
    if "confusion_matrix" not in metrics:  # regression or multi-label
        report = {k: v for k, v in metrics.items() if k != "label_f1"}
        if "label_f1" in metrics:
            names = label_names(id2label, len(metrics["label_f1"]))
            report["per_label_f1"] = dict(zip(names, metrics["label_f1"]))
        report.update(num_labels=len(id2label), id2label={str(i): n for i, n in id2label.items()})
        return report
    names = label_names(id2label, len(metrics["support"]))
    per_class = {name: {"id": i, "precision": metrics["class_precision"][i], "recall": metrics["class_recall"][i],
                        "f1": metrics["class_f1"][i], "support": metrics["support"][i]} for i, name in enumerate(names)}
    return {
        "loss": metrics["loss"],
        "accuracy": metrics["accuracy"],
        "mcc": metrics["mcc"],
        "f1": metrics["f1"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "average": metrics["average"],
        "positive_label": names[1] if metrics["average"] == "binary" else None,
        "per_class": per_class,
        "confusion_matrix": metrics["confusion_matrix"],
        "confusion_matrix_axes": "rows: true label, columns: predicted label (label id order)",
        "num_examples": metrics["num_examples"],
        "num_labels": len(names),
        "id2label": {str(i): name for i, name in enumerate(names)},
    }


def report_json(report: Dict[str, Any]) -> str:
    """`json.dumps` with each list of numbers (a confusion-matrix row) on one line."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


HEADLINE = ("loss", "accuracy", "mcc", "f1", "precision", "recall", "pearson", "spearman", "f1_micro", "f1_macro",
            "precision_micro", "recall_micro", "exact_match")


def headline(metrics: Dict[str, Any]) -> str:
    return " | ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if k in metrics)


def report_title(report: Dict[str, Any]) -> str:
    """Which split the figures are from, and which model: the epoch the validation split chose, or the last."""
    selected = report["selected_by"]
    epochs = f"{report['epochs_run']}" + (f", stopped early (--num_epochs {report['num_epochs']})"
                                          if report["epochs_run"] < report["num_epochs"] else "")
    if selected["split"] == "none":
        model = f"the last epoch ({report['best_epoch']} of {epochs}; no validation split, so nothing was chosen)"
    else:
        model = (f"epoch {report['best_epoch']} of {epochs}, chosen by {selected['metric']} on the "
                 f"{selected['split']} split ({selected['source']})")
    return f"Metrics on {report['test_split']} of {model}"


def format_report(report: Dict[str, Any]) -> str:
    title = f"{report_title(report)}, {report['num_examples']} examples"
    if "per_class" not in report:  # regression or multi-label
        lines = [title, "  " + headline(report)]
        for name, f1 in report.get("per_label_f1", {}).items():
            lines.append(f"  {name:<16} f1 {f1:.4f}")
        for name, extra in report.get("extra_tests", {}).items():
            lines.append(f"  {name}: {headline(extra)}")
        return "\n".join(lines)
    names = list(report["per_class"])
    avg = (f"binary, positive class 1 ({report['positive_label']})" if report["average"] == "binary"
           else "macro average over classes")
    lines = [f"{title}; precision/recall/f1: {avg}", "  " + headline(report)]
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
    for name, extra in report.get("extra_tests", {}).items():
        lines.append(f"  {name}: {headline(extra)}")
    return "\n".join(lines)


def tagging_metrics(true: List[List[str]], predicted: List[List[str]], bio: bool) -> Dict[str, Any]:
    """Word-level accuracy; with BIO tags also seqeval's micro precision/recall/F1 over entities and per type."""
    from seqeval.metrics import accuracy_score, classification_report

    out: Dict[str, Any] = {"accuracy": float(accuracy_score(true, predicted))}
    if bio:
        report = classification_report(true, predicted, output_dict=True, zero_division=0)
        micro = report.pop("micro avg")
        out.update(precision=float(micro["precision"]), recall=float(micro["recall"]), f1=float(micro["f1-score"]))
        out["per_type"] = {name: {"precision": float(r["precision"]), "recall": float(r["recall"]),
                                  "f1": float(r["f1-score"]), "support": int(r["support"])}
                           for name, r in report.items() if not name.endswith(" avg")}
    out["num_sentences"] = len(true)
    out["num_words"] = sum(map(len, true))
    return out


def format_tagging_report(report: Dict[str, Any]) -> str:
    lines = [f"{report_title(report)}, {report['num_sentences']} sentences, {report['num_words']} words; entities by"
             " seqeval", "  " + headline(report)]
    for name, r in report.get("per_type", {}).items():
        lines.append(f"  {name:<12} precision {r['precision']:.4f} | recall {r['recall']:.4f} | f1 {r['f1']:.4f} | "
                     f"support {r['support']}")
    return "\n".join(lines)


def squad_scores(predictions: List[str], golds: List[List[str]]) -> List[Tuple[float, float]]:
    """Per question (exact match, F1) in [0, 1], by torchmetrics' SQuAD metric (the official answer normalisation,
    the best over the gold answers). A question without gold answers (SQuAD v2) is scored against "": 1 for an
    answer that normalises to nothing, else 0, as the official v2 script scores it."""
    from torchmetrics.functional.text import squad

    out = []
    for prediction, answers in zip(predictions, golds):
        answers = answers or [""]
        scores = squad([{"prediction_text": prediction, "id": "q"}],
                       [{"answers": {"text": answers, "answer_start": [0] * len(answers)}, "id": "q"}])
        out.append((float(scores["exact_match"]) / 100, float(scores["f1"]) / 100))
    return out


def best_null_threshold(margins: List[float], answered: List[Tuple[float, float]],
                        abstained: List[Tuple[float, float]]) -> Tuple[float, float]:
    """SQuAD v2: the threshold on (null score - best span score) above which answering "" gives the best mean F1
    over the dev questions, given each question's (EM, F1) when answered and when abstained. Returns (threshold,
    that F1). Thresholds sit halfway between consecutive margins; +inf never abstains."""
    order = sorted(range(len(margins)), key=lambda i: -margins[i])
    total = sum(f1 for _, f1 in answered)
    best_total, best_threshold = total, math.inf
    for rank, i in enumerate(order):
        total += abstained[i][1] - answered[i][1]  # every question from here on with a larger margin abstains
        below = margins[order[rank + 1]] if rank + 1 < len(order) else margins[i] - 1.0
        if below == margins[i]:  # a tie: no threshold separates the two
            continue
        if total > best_total + 1e-12:
            best_total, best_threshold = total, (margins[i] + below) / 2
    return best_threshold, best_total / max(len(margins), 1)

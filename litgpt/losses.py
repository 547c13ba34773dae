"""The finetuning heads' losses: each is HuggingFace's loss for that head, written as a function of the head's
output and the batch's labels, so the padded and the packed model (`litgpt.packing`) share it.

- Sequence classification (`classification_loss`): by HF's `problem_type`, cross-entropy over class ids, MSE against
  a float score (regression, one output) or per-label binary cross-entropy on multi-hot labels (multi-label).
- Token classification (`token_loss`): cross-entropy over the labelled tokens (-100 elsewhere). The padded head gives
  `[B, T, L]` logits against `[B, T]` labels; the packed head gives only the labelled tokens', `[M, L]`, against
  `labels[packing.selected]`. The mean is over the same tokens either way.
- Extractive QA (`span_loss`): the mean of the start and the end cross-entropy over each window's real tokens. HF's
  also counts the pad positions' logits in the softmax, so its loss depends on how much padding a batch happens to
  have; here a pad is never a candidate (the packed head cannot score pads at all), which is the same as HF's on a
  batch without padding.
"""

from typing import Optional

import torch
import torch.nn.functional as F

# HF's `problem_type` names, by `--problem_type`; each decides the loss (and the finetuning metrics)
PROBLEM_TYPES = {"single_label": "single_label_classification", "regression": "regression",
                 "multi_label": "multi_label_classification"}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: Optional[str]) -> torch.Tensor:
    """HF `RobertaForSequenceClassification`'s loss for `problem_type` (None: single-label)."""
    logits = logits.float()
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `[..., L]` logits against the labels of the same positions (-100: not scored)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                           reduction=reduction)


def span_loss(start: torch.Tensor, end: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor,
              attention_mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(start cross-entropy + end cross-entropy) / 2 over `[B, T]` logits, pads excluded from the softmax."""
    pad = ~attention_mask.bool()
    start = start.float().masked_fill(pad, float("-inf"))
    end = end.float().masked_fill(pad, float("-inf"))
    return (F.cross_entropy(start, start_positions, reduction=reduction)
            + F.cross_entropy(end, end_positions, reduction=reduction)) / 2

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
- Sentence embeddings, sentence-transformers' losses of the same names: `mnrl_loss` (in-batch negatives) and
  `cosent_loss` (scored pairs), on the vectors of `litgpt.embedding.SentenceEmbedder`.
"""

from typing import Callable, Optional, Sequence

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


def mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: Sequence[torch.Tensor] = (),
              scale: float = 20.0, symmetric: bool = False,
              gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, rank: int = 0) -> torch.Tensor:
    """Multiple negatives ranking loss (InfoNCE), sentence-transformers' `MultipleNegativesRankingLoss`: for each
    anchor, cross-entropy over its cosine similarities (times `scale`) to every candidate of the batch, its own
    positive the right one and every other anchor's positive, and every hard negative, the wrong ones.

    `symmetric` adds the other direction, each positive against every anchor, and averages the two (its
    `directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"`). On several devices `gather`
    (an all-gather that carries gradients back) makes every device's texts candidates for every anchor; this
    device's anchors are then rows `rank * B ..` of the gathered ones."""
    from litgpt.embedding import cosine_matrix

    queries, docs = anchors, [positives, *negatives]
    if gather is not None:
        queries, docs = gather(anchors), [gather(d) for d in docs]
    local = torch.arange(rank * anchors.size(0), (rank + 1) * anchors.size(0), device=anchors.device)
    loss = F.cross_entropy(cosine_matrix(queries[local], torch.cat(docs)) * scale, local)
    if symmetric:
        loss = (loss + F.cross_entropy(cosine_matrix(queries, docs[0][local]).T * scale, local)) / 2
    return loss


def cosent_loss(first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """CoSENT, sentence-transformers' `CoSENTLoss`: log(1 + sum over every two pairs i, j whose gold scores rank i
    below j of exp(scale * (cos_i - cos_j))), so the pairs' cosine similarities learn the gold order."""
    cos = (F.normalize(first, dim=-1) * F.normalize(second, dim=-1)).sum(-1) * scale
    below = scores[:, None] < scores[None, :]
    return torch.logsumexp(torch.cat([cos.new_zeros(1), (cos[:, None] - cos[None, :])[below]]), 0)

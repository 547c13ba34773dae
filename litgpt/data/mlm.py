"""Dynamic masking (BERT/RoBERTa 80/10/10) and batch collation for masked or causal language modelling.

How many tokens are selected: per sequence, `k = floor(mask_prob * n + u)` with `u ~ U[0, 1)` over its `n` ordinary
tokens (not special, not pad), at least `min_masked` (1 by default, as in Google's BERT, so no sequence is left without
a target). This is fairseq's RoBERTa rule: the expected rate is exactly `mask_prob` for sequences of at least
`1 / mask_prob` ordinary tokens, with less spread than independent coin flips. The `k` positions are drawn uniformly
without replacement; each selected token independently becomes `<mask>` (80%), a random ordinary token (10%) or stays
(10%). Labels are the original ids at the selected positions and -100 elsewhere.

Reproducibility: every draw comes from the `torch.Generator` passed in. Data modules derive one per example from
(seed, epoch, index) with `example_generator`, so masks are the same whatever the batch size or worker count, differ
from epoch to epoch, and come back identically after a resume.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from litgpt.packing import IGNORE_INDEX, loss_positions, pack_tokens
from litgpt.utils import UsageError, pad_right

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from a few integers (seed, epoch, index ...); nearby inputs give unrelated seeds."""
    h = 0x2545F4914F6CDD1D
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator that masks example `index` in `epoch`. Validation uses epoch -1, a fixed stream."""
    return torch.Generator().manual_seed(derive_seed(seed, epoch, index))


def check_mask_probs(mask_prob: float, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1) -> None:
    if not 0.0 < mask_prob < 1.0:
        raise UsageError(f"--train.mask_prob {mask_prob}: expected a fraction strictly between 0 and 1")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
        raise UsageError(f"--train.mask_replace_prob {mask_replace_prob} and --train.random_replace_prob "
                         f"{random_replace_prob}: expected non-negative fractions that add up to at most 1")


class MLMMasker:
    """Selects and corrupts tokens for masked language modelling; see the module docstring for the rule.

    `masker(ids, generator)` takes a 1-D sequence or a padded 2-D batch of ids and returns `(input_ids, labels)`.
    """

    def __init__(self, mask_id: int, vocab_size: int, special_ids: Sequence[int], mask_prob: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1, min_masked: int = 1) -> None:
        check_mask_probs(mask_prob, mask_replace_prob, random_replace_prob)
        self.mask_id = int(mask_id)
        self.vocab_size = int(vocab_size)
        self.special_ids = torch.tensor(sorted({int(i) for i in special_ids} | {self.mask_id}), dtype=torch.long)
        self.mask_prob = float(mask_prob)
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        self.min_masked = int(min_masked)
        is_special = torch.zeros(self.vocab_size, dtype=torch.bool)
        is_special[self.special_ids[self.special_ids < self.vocab_size]] = True
        self.ordinary_ids = torch.nonzero(~is_special).flatten()
        if len(self.ordinary_ids) == 0:
            raise ValueError("the vocabulary has no ordinary (non-special) tokens")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> "MLMMasker":
        return cls(tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, **kwargs)

    def candidates(self, ids: torch.Tensor) -> torch.Tensor:
        """Positions that may be selected: ordinary tokens (special tokens, padding and `<mask>` never are)."""
        return ~torch.isin(ids, self.special_ids)

    def __call__(self, input_ids: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        squeeze = ids.dim() == 1
        if squeeze:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"expected a 1-D or 2-D tensor of ids, got shape {tuple(input_ids.shape)}")
        B, T = ids.shape
        cand = self.candidates(ids)
        n = cand.sum(1)
        # all draws happen in a fixed order and shape, so one generator state gives one result
        u = torch.rand(B, generator=generator)
        scores = torch.rand(B, T, generator=generator)
        action = torch.rand(B, T, generator=generator)
        random_pick = torch.randint(len(self.ordinary_ids), (B, T), generator=generator)

        k = torch.floor(self.mask_prob * n + u).long()
        k = torch.minimum(torch.maximum(k, torch.full_like(k, self.min_masked)), n)
        scores = scores.masked_fill(~cand, 2.0)  # non-candidates sort last
        order = scores.argsort(dim=1)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(T).expand(B, T).contiguous())
        selected = (rank < k.unsqueeze(1)) & cand

        to_mask = selected & (action < self.mask_replace_prob)
        to_random = selected & (action >= self.mask_replace_prob) & (
            action < self.mask_replace_prob + self.random_replace_prob)
        out = ids.clone()
        out[to_mask] = self.mask_id
        out[to_random] = self.ordinary_ids[random_pick[to_random]]
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[selected] = ids[selected]
        if squeeze:
            return out[0], labels[0]
        return out, labels


def mask_tokens(input_ids: torch.Tensor, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                mask_prob: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                generator: Optional[torch.Generator] = None, min_masked: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Functional form of `MLMMasker`: returns `(input_ids, labels)`."""
    masker = MLMMasker(mask_id, vocab_size, special_ids, mask_prob, mask_replace_prob, random_replace_prob, min_masked)
    return masker(input_ids, generator)


Example = Union[torch.Tensor, List[int], Dict[str, Any]]


class MLMCollator:
    """Masks (or not) and pads a list of examples into a batch dict of `input_ids`, `labels`, `attention_mask`.

    An example is a 1-D tensor/list of ids or a dict with `input_ids` and optionally:
      - `labels` (already masked upstream: only padded here),
      - `index` and `epoch` (ints): masking uses `example_generator(seed, epoch, index)`, so it does not depend on
        the batch the example lands in. Without them the collator's own generator (seeded with `seed`) is used.
    `objective="clm"`: no masking, labels are the input ids. Padding is on the right to the longest sequence in the
    batch, with `pad_id` in `input_ids`, -100 in `labels` and 0 in `attention_mask`. The batch also carries its
    `packing` (`litgpt.packing`): where its real tokens and labelled positions are, for the model's unpadded path,
    computed here in the loader workers so that the training step never waits for the device. With
    `document_start_id` (packed rows of several documents), each document starts at that token and attends only to
    itself. Instances pickle, so they can run in DataLoader workers.
    """

    def __init__(self, pad_id: int, masker: Optional[MLMMasker] = None, objective: str = "mlm", seed: int = 42,
                 document_start_id: Optional[int] = None) -> None:
        if objective not in ("mlm", "clm"):
            raise ValueError(f"objective must be 'mlm' or 'clm', got {objective!r}")
        if objective == "mlm" and masker is None:
            raise ValueError("objective 'mlm' needs a masker")
        self.pad_id = int(pad_id)
        self.masker = masker
        self.objective = objective
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.document_start_id = document_start_id

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, objective: str = "mlm", seed: int = 42, documents: bool = False,
                       **masker_kwargs: Any) -> "MLMCollator":
        masker = MLMMasker.from_tokenizer(tokenizer, **masker_kwargs) if objective == "mlm" else None
        return cls(tokenizer.pad_id, masker, objective, seed, tokenizer.bos_id if documents else None)

    def __call__(self, examples: Sequence[Example]) -> Dict[str, torch.Tensor]:
        seqs, labels = [], []
        for ex in examples:
            if not isinstance(ex, dict):
                ex = {"input_ids": ex}
            ids = torch.as_tensor(ex["input_ids"], dtype=torch.long).flatten()
            if "labels" in ex and ex["labels"] is not None:
                lab = torch.as_tensor(ex["labels"], dtype=torch.long).flatten()
            elif self.objective == "clm":
                lab = ids.clone()
            else:
                g = (example_generator(self.seed, int(ex["epoch"]), int(ex["index"]))
                     if ex.get("index") is not None else self.generator)
                ids, lab = self.masker(ids, g)
            seqs.append(ids)
            labels.append(lab)
        batch = {"input_ids": pad_right(seqs, self.pad_id), "labels": pad_right(labels, IGNORE_INDEX),
                 "attention_mask": pad_right([torch.ones_like(s) for s in seqs], 0)}
        scored = loss_positions(batch["labels"], self.objective == "clm").ne(IGNORE_INDEX)
        starts = None if self.document_start_id is None else batch["input_ids"].eq(self.document_start_id)
        batch["packing"] = pack_tokens(batch["attention_mask"], scored, starts)
        return batch

"""Where a batch's real tokens go: the index tensors that let the encoder run on its real tokens only, built once
per batch on the host (by the collators, in the loader workers) so that the step itself never asks the device for a
data-dependent size. That keeps a CUDA step free of host syncs and a compiled step free of graph breaks.

A batch is `[B, T]` token ids with an attention mask (1 = real token). Its real tokens become `N` rows, in row-major
order, grouped into `S` sequences: one per batch row, or with `starts` one per document when a row packs several
(each document then attends only to itself and counts its positions from its own start). `selected` marks the
positions a head reads (the labelled tokens of the MLM loss, `<s>` for a classifier): `M` of them.

`kernels.TokenLayout` reads a `Packing`: `cu_seqlens` for the variable-length attention kernel, or the slots of a
per-sequence padded `[S, L]` layout for SDPA where that kernel cannot serve.
"""

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class Packing:
    rows: torch.Tensor           # [N] int64: flat index into B * T of each computed token (real, or a selected pad)
    cu_seqlens: torch.Tensor     # [S + 1] int32: sequence s owns rows cu_seqlens[s]:cu_seqlens[s + 1]
    seq_slots: torch.Tensor      # [N] int64: each row's flat index into the padded [S, L] layout
    key_mask: torch.Tensor       # [S, L] bool: True at real tokens; L, the longest sequence, comes from its shape
    selected: torch.Tensor       # [M] int64: flat index into B * T of each selected position (row-major)
    selected_rows: torch.Tensor  # [M] int64: index of each selected position among the N rows
    cu_selected: torch.Tensor    # [S + 1] int32: sequence s owns selected positions cu_selected[s]:cu_selected[s + 1]
    query_slots: torch.Tensor    # [M] int64: each selected position's flat index into a padded [S, Q] layout
    query_mask: torch.Tensor     # [S, Q] bool: True at a selected position; Q, the most per sequence, from its shape
    offsets: Optional[torch.Tensor] = None  # [N] int64: each row's index in its document (documents only)
    full: bool = False           # every sequence has L real tokens: no mask, and the slots are 0..N-1
    rows_are_keys: bool = True   # no row is a selected pad (a query that must not be a key)

    def to(self, device, non_blocking: bool = False) -> "Packing":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self) if torch.is_tensor(getattr(self, f.name))})

    def pin_memory(self) -> "Packing":  # DataLoader(pin_memory=True) calls this on a batch's members
        return replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                for f in fields(self) if torch.is_tensor(getattr(self, f.name))})


def pack_tokens(attention_mask: torch.Tensor, selected: torch.Tensor, starts: Optional[torch.Tensor] = None
                ) -> Packing:
    """The `Packing` of a `[B, T]` batch: `attention_mask` (1 = real token), `selected` (bool, the positions a head
    reads), `starts` (bool, optional: True where a new document begins inside a row). A selected pad position is
    computed too, as a query that no other token sees. Runs wherever its inputs are; on the host it costs the step
    nothing."""
    real = attention_mask.bool()
    selected = selected.bool()
    B, T = real.shape
    rows = (real | selected).reshape(-1).nonzero().squeeze(1)
    N = rows.numel()
    device = rows.device
    # a sequence begins at each batch row's first computed token, and with documents at every start
    new_sequence = torch.ones(N, dtype=torch.bool, device=device)
    row_of = rows // T
    new_sequence[1:] = row_of[1:] != row_of[:-1]
    if starts is not None:
        new_sequence |= starts.bool().reshape(-1)[rows]
    sequence = new_sequence.long().cumsum(0) - 1
    S = int(sequence[-1]) + 1 if N else 0
    lengths = torch.bincount(sequence, minlength=S)
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0))
    L = int(lengths.max()) if S else 0
    offsets = torch.arange(N, device=device) - cu_seqlens[sequence]
    seq_slots = sequence * L + offsets
    is_key = real.reshape(-1)[rows]
    key_mask = torch.zeros(S * L, dtype=torch.bool, device=device).index_copy_(0, seq_slots, is_key).view(S, L)

    flat_selected = selected.reshape(-1).nonzero().squeeze(1)
    selected_rows = torch.searchsorted(rows, flat_selected)
    selected_sequence = sequence[selected_rows]
    counts = torch.bincount(selected_sequence, minlength=S)
    cu_selected = F.pad(counts.cumsum(0), (1, 0))
    Q = int(counts.max()) if S else 0
    query_offsets = torch.arange(flat_selected.numel(), device=device) - cu_selected[selected_sequence]

    return Packing(
        rows=rows,
        cu_seqlens=cu_seqlens.int(),
        seq_slots=seq_slots,
        key_mask=key_mask,
        selected=flat_selected,
        selected_rows=selected_rows,
        cu_selected=cu_selected.int(),
        query_slots=selected_sequence * Q + query_offsets,
        query_mask=torch.arange(Q, device=device) < counts[:, None],
        offsets=offsets if starts is not None else None,
        full=bool(key_mask.all()),
        rows_are_keys=bool(is_key.all()),
    )


def loss_positions(labels: torch.Tensor, causal: bool) -> torch.Tensor:
    """The labels each position is scored against: MLM labels as they are; for a causal LM, position t predicts
    token t + 1, so the labels move one to the left (the last position predicts nothing)."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) if causal else labels


def first_tokens(input_ids: torch.Tensor) -> torch.Tensor:
    """The bool `[B, T]` positions a sequence classifier reads: the first token (`<s>`, `[CLS]`) of each row."""
    first = torch.zeros_like(input_ids, dtype=torch.bool)
    first[:, 0] = True
    return first


def pooled_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The bool `[B, T]` positions a sentence embedding's pooling reads: the first token ("cls"), or every real
    token ("mean", "max")."""
    return first_tokens(input_ids) if pooling == "cls" else attention_mask.bool()

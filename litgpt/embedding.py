"""A sentence-embedding model: the encoder, then one vector per text pooled from its real tokens, as
sentence-transformers' Transformer -> Pooling (-> Normalize) modules compute it.

- `pooling`: "mean" or "max" over the text's real tokens (the special tokens included, the padding not), or
  "cls", the first token's state;
- `normalize`: unit length, so a dot product is the cosine similarity.

The encoder runs on the real tokens alone (`RobertaModel.hidden_at` with the batch's `packing`, built by the
collator on the host) and the last block computes only the rows the pooling reads. `pool_rows` is the one pooling,
shared with inference (`litgpt.api`).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from litgpt.config import Config
from litgpt.model_roberta import RobertaModel, _RobertaPreTrained
from litgpt.packing import Packing, pack_tokens, pooled_positions

POOLING = ("mean", "cls", "max")


def pool_rows(hidden: torch.Tensor, owner: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """`[B, C]` float32 vectors from the pooled positions' hidden states `hidden` (`[M, C]`, row-major), `owner[m]`
    being the text of row m and `lengths` each text's number of real tokens."""
    hidden = hidden.float()
    if pooling == "cls":
        return hidden
    B, C = lengths.size(0), hidden.size(-1)
    if pooling == "max":
        return hidden.new_full((B, C), float("-inf")).scatter_reduce(0, owner[:, None].expand(-1, C), hidden, "amax")
    return hidden.new_zeros(B, C).index_add(0, owner, hidden) / lengths[:, None].to(hidden.dtype)


class SentenceEmbedder(_RobertaPreTrained):
    """The encoder (`roberta`) with its pooling. A BERT's pooler layer is kept, frozen and unused, as
    sentence-transformers keeps it: the saved folder stays a complete `BertModel`."""

    def __init__(self, config: Config, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"pooling {pooling!r}: expected one of {', '.join(POOLING)}")
        self.config = config
        self.roberta = RobertaModel(config)
        self.pooling, self.normalize = pooling, normalize
        self.init_weights()
        if self.roberta.pooler is not None:
            self.roberta.pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None, packing: Optional[Packing] = None) -> torch.Tensor:
        """`[B, n_embd]` float32 sentence vectors. `packing` is the collator's, selecting `pooled_positions`;
        without it, it is built here (which waits for the device)."""
        if packing is None:
            packing = pack_tokens(attention_mask, pooled_positions(input_ids, attention_mask, self.pooling))
        hidden = self.roberta.hidden_at(input_ids, attention_mask, None, token_type_ids, packing)
        vectors = pool_rows(hidden, packing.selected // input_ids.size(1), attention_mask.sum(1), self.pooling)
        return F.normalize(vectors, dim=-1) if self.normalize else vectors


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`[len(a), len(b)]` cosine similarities, as sentence-transformers' `cos_sim`."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

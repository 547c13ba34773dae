"""RoBERTa and the BERT family, the architecture in one file, read top to bottom.

RoBERTa is a post-LayerNorm BERT: embeddings -> N x (self-attention, FFN), each sub-layer followed by dropout, the
residual add and LayerNorm. BERT and MiniLM are the same encoder with a few config switches: positions counted from
0 (`pad_aware_positions=False`), two token types, and a pooler (dense + tanh on [CLS]) in front of the classifier
(`pooler`). Numerically it matches HuggingFace `transformers`' RoBERTa and BERT on the same weights;
`litgpt/convert.py` maps the weight names.

Two ways through the encoder:
- `RobertaModel.forward`: every position of the padded batch, as HuggingFace computes it;
- `RobertaModel.hidden_at`: only the positions a head reads (the masked tokens for the MLM loss, `<s>` for a
  classifier). The encoder then runs on the real tokens alone, packed (`litgpt/packing.py`, built by the collators
  on the host), and the last block computes only those positions.
`config.causal` makes the same weights a left-to-right language model: a causal mask and a next-token loss.

The speed machinery (the token layout and its attention call, variable-length on CUDA, oneDNN linear layers with
fused GELU on AVX-512 CPUs, the tied embedding node, in-place inference ops) lives in `litgpt/kernels.py`.
"""

import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.config import Config
from litgpt.kernels import Linear, TiedEmbedding, TokenLayout, embedding, linear, residual_add
from litgpt.packing import Packing, first_tokens, loss_positions, pack_tokens


def position_ids(input_ids: torch.Tensor, config: Config) -> torch.Tensor:
    """RoBERTa's positions start at `pad_token_id + 1` and only count non-pad tokens; pads keep `pad_token_id`.
    BERT's are 0, 1, 2, ... at every position, pads included."""
    if not config.pad_aware_positions:
        return torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    not_pad = input_ids.ne(config.pad_token_id).int()
    return (torch.cumsum(not_pad, dim=1) * not_pad).long() + config.pad_token_id


class RobertaModel(nn.Module):
    """The encoder: embeddings, then `n_layer` blocks. `attention_mask` is 1 for real tokens, 0 for padding;
    `token_type_ids` (BERT's sentence A/B) default to type 0. With `config.pooler` (BERT) it also carries the pooler
    its classifier reads, unless `add_pooler=False` (the MLM model, as in HuggingFace)."""

    def __init__(self, config: Config, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd, padding_idx=config.pad_token_id)
        # only RoBERTa's table has a pad row: BERT's position `pad_token_id` is a real position
        pad_position = config.pad_token_id if config.pad_aware_positions else None
        self.wpe = nn.Embedding(config.max_position_embeddings, config.n_embd, padding_idx=pad_position)
        self.wtte = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.ln_emb = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.pooler = nn.Linear(config.n_embd, config.n_embd) if config.pooler and add_pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The last hidden states `[B, T, n_embd]` at every position, pads included."""
        return self._encode(input_ids, attention_mask, token_type_ids, None, None, tied=False)[0]

    def hidden_at(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        positions: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor] = None,
        packing: Optional[Packing] = None,
    ) -> torch.Tensor:
        """`forward(...)[positions]` for a bool `[B, T]` `positions`: `[M, n_embd]` in row-major order, computed
        only where needed. The encoder runs on the real tokens (and any selected pad) alone and, unless causal, the
        last block computes only `positions` (its keys and values still come from every real token). `packing`,
        built on the host by the collators (`litgpt.packing.pack_tokens`), describes the same batch and positions
        (then `positions` may be None): without it, it is built here, which waits for the device."""
        return self._encode(input_ids, attention_mask, token_type_ids, positions, packing, tied=False)[0]

    def hidden_and_decoder(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], positions: Optional[torch.Tensor] = None,
        packing: Optional[Packing] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """For the MLM head: `forward`'s output (`hidden_at`'s given `positions` or `packing`) and the word
        embeddings as the tied decoder weight. When gradients flow, both uses come from one `TiedEmbedding` node, so
        the `[V, C]` gradient is built in one buffer."""
        return self._encode(input_ids, attention_mask, None, positions, packing, tied=True)

    def _encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        positions: Optional[torch.Tensor],
        packing: Optional[Packing],
        tied: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        B, T = input_ids.shape
        if T > self.config.block_size:
            raise ValueError(f"Sequence length {T} exceeds the model's {self.config.block_size} positions")
        if packing is None and positions is not None:
            packing = pack_tokens(torch.ones_like(input_ids) if attention_mask is None else attention_mask, positions)
        layout = TokenLayout(attention_mask, (B, T), self.config.causal, packing)
        if packing is not None and packing.offsets is not None:  # packed documents count from their own start
            pos = packing.offsets + (self.config.pad_token_id + 1 if self.config.pad_aware_positions else 0)
        else:
            pos = layout.gather(position_ids(input_ids, self.config))
        input_ids = layout.gather(input_ids)
        types = self.wtte.weight[0] if token_type_ids is None else embedding(layout.gather(token_type_ids),
                                                                              self.wtte.weight)
        if tied and torch.is_grad_enabled() and self.wte.weight.requires_grad:
            tokens, decoder_weight = TiedEmbedding.apply(input_ids, self.wte.weight, self.wte.padding_idx)
        else:
            tokens, decoder_weight = embedding(input_ids, self.wte.weight, self.wte.padding_idx), self.wte.weight
        x = self.drop(self.ln_emb(tokens + types + embedding(pos, self.wpe.weight, self.wpe.padding_idx)))

        # a head reads only the selected positions: the last block computes just those (a causal mask would not fit)
        last_at_selected = packing is not None and not self.config.causal
        for block in self.h[:-1] if last_at_selected else self.h:
            x = block(x, layout)
        if last_at_selected:
            return self.h[-1].at_selected(x, layout), decoder_weight
        return (x if packing is None else layout.select(x)), decoder_weight


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.norm_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)
        self.norm_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        x = self.norm_1(residual_add(x, self.drop(self.attn(x, layout))))
        return self.norm_2(residual_add(x, self.drop(self.mlp(x))))

    def at_selected(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """The block's output at the layout's selected positions only, `[M, C]`."""
        x_sel = layout.select(x)
        h = self.norm_1(residual_add(x_sel, self.drop(self.attn.at_selected(x, x_sel, layout))))
        return self.norm_2(residual_add(h, self.drop(self.mlp(h))))


class SelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.qkv = Linear(config.n_embd, 3 * config.n_embd)  # one fused projection for queries, keys, values
        self.proj = Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.dropout = config.attention_dropout

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        y = layout.attention(self.qkv(x), self.n_head, self.dropout if self.training else 0.0)
        return self.proj(y)

    def at_selected(self, x: torch.Tensor, x_sel: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Queries only at the selected rows `x_sel`; keys and values from every row of `x`."""
        C = x.size(-1)
        q, kv = self.qkv(x_sel, rows=slice(0, C)), self.qkv(x, rows=slice(C, None))
        y = layout.attention_at_selected(q, kv, self.n_head, self.dropout if self.training else 0.0)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc = Linear(config.n_embd, config.intermediate_size)
        self.proj = Linear(config.intermediate_size, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.fc(x, gelu=True))


class LMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to the word embeddings, with its own bias."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.dense = Linear(config.n_embd, config.n_embd)
        self.norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return linear(self.norm(self.dense(x, gelu=True)), decoder_weight, self.bias)


class ClassificationHead(nn.Module):
    """On the first token's (`<s>`, `[CLS]`) hidden state `[B, C]`. RoBERTa: dropout -> dense -> tanh -> dropout
    -> projection. BERT: the encoder's pooler (dense -> tanh) -> dropout -> projection, so the head is only the
    dropout and the projection."""

    def __init__(self, config: Config, num_labels: int) -> None:
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.drop = nn.Dropout(dropout)
        self.dense = None if config.pooler else nn.Linear(config.n_embd, config.n_embd)
        self.out_proj = nn.Linear(config.n_embd, num_labels)

    def forward(self, first_token: torch.Tensor, pooler: Optional[nn.Linear]) -> torch.Tensor:
        x = torch.tanh(pooler(first_token) if pooler is not None else self.dense(self.drop(first_token)))
        return self.out_proj(self.drop(x))


class _RobertaPreTrained(nn.Module):
    def init_weights(self) -> None:
        """HuggingFace's initialisation: N(0, initializer_range) for weights, zeros for biases and the pad rows."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, LMHead):
                nn.init.zeros_(module.bias)


class RobertaForMaskedLM(_RobertaPreTrained):
    """Encoder + LM head. Masked language modelling, or with `config.causal` a left-to-right language model like
    HF's `RobertaForCausalLM`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooler=False)
        self.lm_head = LMHead(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        packing: Optional[Packing] = None,
    ) -> torch.Tensor:
        """Without `labels`: logits `[B, T, padded_vocab_size]`. With `labels` (-100 = ignore): the mean loss."""
        if labels is not None:
            return self.mlm_loss(input_ids, attention_mask, labels, packing)[0]
        hidden, decoder_weight = self.roberta.hidden_and_decoder(input_ids, attention_mask)
        return self.lm_head(hidden, decoder_weight)

    def mlm_loss(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], labels: torch.Tensor,
        packing: Optional[Packing] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the labelled positions, correct argmax predictions, labelled count), as tensors
        (no host sync). The LM head runs only at the labelled positions, never building `[B, T, V]` logits.
        `packing` (from the collator, whose selected positions are the labelled ones) keeps the step free of host
        syncs and data-dependent shapes; without it, it is built here."""
        labels = loss_positions(labels, self.config.causal)
        selected = labels.ne(-100) if packing is None else None
        hidden, decoder_weight = self.roberta.hidden_and_decoder(input_ids, attention_mask, selected, packing)
        targets = labels.reshape(-1)[selected.reshape(-1)] if packing is None else labels.reshape(-1)[packing.selected]
        logits = self.lm_head(hidden, decoder_weight).float()
        count = labels.ne(-100).sum()
        loss = F.cross_entropy(logits, targets, reduction="sum") / count.clamp(min=1)
        correct = (logits.detach().argmax(-1) == targets).sum()
        return loss, correct, count


class RobertaForCausalLM(RobertaForMaskedLM):
    """`RobertaForMaskedLM` with `config.causal` set (HF's `RobertaForCausalLM`)."""

    def __init__(self, config: Config) -> None:
        super().__init__(dataclasses.replace(config, causal=True))


def with_num_labels(config: Config, num_labels: Optional[int]) -> Config:
    """`config` for a head of `num_labels` outputs (given, else the config's, else 2)."""
    num_labels = num_labels or config.num_labels or 2
    return config if config.num_labels == num_labels else dataclasses.replace(config, num_labels=num_labels)


class RobertaForSequenceClassification(_RobertaPreTrained):
    def __init__(self, config: Config, num_labels: Optional[int] = None) -> None:
        super().__init__()
        self.config = config = with_num_labels(config, num_labels)
        self.num_labels = num_labels = config.num_labels
        self.roberta = RobertaModel(config)
        self.classifier = ClassificationHead(config, num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        packing: Optional[Packing] = None,
    ) -> torch.Tensor:
        """Returns logits `[B, num_labels]`, from the first token (`<s>`, `[CLS]`). A compiled call without
        `packing` runs the padded encoder, which a traced graph can hold without data-dependent shapes."""
        if packing is None and torch.compiler.is_compiling():
            first = self.roberta(input_ids, attention_mask, token_type_ids)[:, 0]
        else:
            positions = first_tokens(input_ids) if packing is None else None
            first = self.roberta.hidden_at(input_ids, attention_mask, positions, token_type_ids, packing)
        return self.classifier(first, self.roberta.pooler)


class RobertaForTokenClassification(_RobertaPreTrained):
    """A label per token (NER, POS tagging): dropout and a linear layer on every position's hidden state, as HF's
    `RobertaForTokenClassification` / `BertForTokenClassification` (no pooler)."""

    def __init__(self, config: Config, num_labels: Optional[int] = None) -> None:
        super().__init__()
        self.config = config = with_num_labels(config, num_labels)
        self.num_labels = num_labels = config.num_labels
        self.roberta = RobertaModel(config, add_pooler=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.drop = nn.Dropout(dropout)
        self.token_classifier = nn.Linear(config.n_embd, num_labels)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, packing: Optional[Packing] = None) -> torch.Tensor:
        """Returns logits `[B, T, num_labels]` at every position, pads included (as HF computes them); with a
        `packing`, only at its selected positions (the labelled tokens), `[M, num_labels]` in row-major order, the
        encoder running on the real tokens alone."""
        if packing is None:
            hidden = self.roberta(input_ids, attention_mask, token_type_ids)
        else:
            hidden = self.roberta.hidden_at(input_ids, attention_mask, None, token_type_ids, packing)
        return self.token_classifier(self.drop(hidden))


class RobertaForQuestionAnswering(_RobertaPreTrained):
    """Extractive QA: a start and an end logit per token from one linear layer, as HF's
    `RobertaForQuestionAnswering` / `BertForQuestionAnswering` (no pooler)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config, add_pooler=False)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, packing: Optional[Packing] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (start logits, end logits), each `[B, T]`. With a `packing` whose selected positions are the real
        tokens, the encoder runs on those alone and a pad's logits are -inf (a pad is never part of an answer)."""
        if packing is None:
            logits = self.qa_outputs(self.roberta(input_ids, attention_mask, token_type_ids))
        else:
            rows = self.qa_outputs(self.roberta.hidden_at(input_ids, attention_mask, None, token_type_ids, packing))
            logits = rows.new_full((input_ids.numel(), 2), float("-inf")).index_copy(0, packing.selected, rows)
            logits = logits.view(*input_ids.shape, 2)
        start, end = logits.unbind(-1)
        return start.contiguous(), end.contiguous()


# `--lora_targets` names -> the linear layers of every block that get an adapter (`kernels.add_lora`)
LORA_TARGETS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc": "mlp.fc", "mlp_proj": "mlp.proj"}


# the first name component of each head's weights; everything else is the encoder (`roberta.`)
HEAD_PREFIXES = ("lm_head.", "classifier.", "token_classifier.", "qa_outputs.")


def headed_names(state_dict: dict) -> dict:
    """A state dict in a headed model's names: a bare encoder's `wte.weight` becomes `roberta.wte.weight`."""
    return {k if k.startswith(("roberta.", *HEAD_PREFIXES)) else f"roberta.{k}": v for k, v in state_dict.items()}


def model_class_for_state_dict(state_dict) -> str:
    """Which head a litgpt state dict carries: "mlm", "classification", "token_classification", "qa" or "base"."""
    if any(k.startswith("token_classifier.") for k in state_dict):
        return "token_classification"
    if any(k.startswith("qa_outputs.") for k in state_dict):
        return "qa"
    if any(k.startswith("classifier.") for k in state_dict):
        return "classification"
    if any(k.startswith("lm_head.") for k in state_dict):
        return "mlm"
    return "base"

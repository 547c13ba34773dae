"""RoBERTa, the whole encoder in one file.

RoBERTa is a post-LayerNorm BERT: embeddings -> N x (self-attention, FFN), each sub-layer followed by
dropout, the residual add and LayerNorm. Numerically it matches HuggingFace `transformers`' RoBERTa on the
same weights; `litgpt/scripts/convert_hf_checkpoint.py` maps the weight names.

Speed choices (see `benchmarks/compare_hf.py`):
- one fused QKV projection per block;
- the attention mask is built once per batch, not once per layer;
- with padded batches, the token-wise layers (projections, FFN, LayerNorm) only run on real tokens:
  they are gathered once, and scattered into the padded layout only around attention;
- the MLM loss path runs the LM head only at the labelled positions, never materialising [B, T, V];
- the last block only computes the positions that are read: the masked ones for the MLM loss, `<s>` for a
  classifier;
- the word embeddings and the tied decoder share one autograd node, so their `[vocab, n_embd]` gradient is
  built in one buffer (see `TiedEmbedding`);
- fp32 linear layers on CPU run on oneDNN's kernels, with bias and GELU fused in at inference (see `linear`).
"""

from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.config import Config


def position_ids_from_input_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """RoBERTa's positions start at `pad_token_id + 1` and only count non-pad tokens; pads keep `pad_token_id`."""
    not_pad = input_ids.ne(pad_token_id).int()
    return (torch.cumsum(not_pad, dim=1) * not_pad).long() + pad_token_id


class TiedEmbedding(torch.autograd.Function):
    """Token embedding lookup that also hands out the same weight for the tied LM-head decoder.

    Autograd would otherwise build the word-embedding gradient three times over: a zero-filled `[V, C]`
    buffer for the lookup's few rows, the decoder's dense `[V, C]` gradient, and their sum. One node that
    owns both uses receives both gradients together and adds the looked-up rows into the decoder's gradient
    in place. The numbers are the same as `nn.Embedding` + `F.linear`; only the memory traffic drops."""

    @staticmethod
    def forward(ctx, input_ids: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int]):
        ctx.save_for_backward(input_ids)
        ctx.padding_idx = padding_idx
        ctx.weight_meta = (weight.shape, weight.dtype, weight.device)
        ctx.set_materialize_grads(False)
        return F.embedding(input_ids, weight, padding_idx), weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad_tokens: Optional[torch.Tensor], grad_decoder: Optional[torch.Tensor]):
        shape, dtype, device = ctx.weight_meta
        if grad_decoder is None:
            grad = torch.zeros(shape, dtype=dtype, device=device)
        elif grad_decoder.is_contiguous() and grad_decoder.dtype == dtype:
            grad = grad_decoder  # autograd hands this buffer to this node alone: it may be written in place
        else:
            grad = grad_decoder.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
        if grad_tokens is not None:
            (input_ids,) = ctx.saved_tensors
            ids = input_ids.reshape(-1)
            rows = grad_tokens.reshape(ids.numel(), -1).to(dtype)
            if ctx.padding_idx is not None:  # as in nn.Embedding, the pad row gets no gradient from the lookup
                keep = ids.ne(ctx.padding_idx)
                ids, rows = ids[keep], rows[keep]
            grad.index_add_(0, ids, rows)
        return None, grad, None


class RobertaModel(nn.Module):
    """The encoder: returns the last hidden states `[B, T, n_embd]`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd, padding_idx=config.pad_token_id)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.n_embd, padding_idx=config.pad_token_id)
        self.wtte = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.ln_emb = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        causal: bool = False,
        token_type_ids: Optional[torch.Tensor] = None,
        unpad: bool = False,
        output_mask: Optional[torch.Tensor] = None,
        return_decoder_weight: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """`attention_mask` is 1 for real tokens and 0 for padding. With `unpad=True` the token-wise layers skip
        padding; the hidden states at pad positions are then zeros instead of values nobody should read.
        With `output_mask` (bool `[B, T]`, not with `causal`) only those positions come out, as `[M, n_embd]` in
        row-major order, and the last block computes only them: the MLM loss reads the masked positions, a
        classifier reads `<s>`. `return_decoder_weight=True` also returns the word embeddings to use as the tied
        decoder, through `TiedEmbedding` when gradients flow."""
        B, T = input_ids.shape
        if T > self.config.block_size:
            raise ValueError(f"Sequence length {T} exceeds the model's {self.config.block_size} positions")
        positions = position_ids_from_input_ids(input_ids, self.config.pad_token_id)
        token_types = self.wtte.weight[0] if token_type_ids is None else self.wtte(token_type_ids)
        if return_decoder_weight and torch.is_grad_enabled() and self.wte.weight.requires_grad:
            tokens, decoder_weight = TiedEmbedding.apply(input_ids, self.wte.weight, self.wte.padding_idx)
        else:
            tokens, decoder_weight = self.wte(input_ids), self.wte.weight
        x = tokens + token_types
        x = x + self.wpe(positions)
        x = self.drop(self.ln_emb(x))

        # padding that is absent needs no mask: SDPA then takes its fastest path
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        mask = build_attention_mask(attention_mask, causal, T, x.device)
        is_causal = causal and mask is None

        if output_mask is not None and causal:
            raise ValueError("output_mask is not supported with causal=True")
        blocks = self.h[:-1] if output_mask is not None else self.h
        if unpad and attention_mask is not None:
            keep = attention_mask.reshape(-1).nonzero().squeeze(1)
            x = x.reshape(B * T, -1).index_select(0, keep)
            for block in blocks:
                x = block(x, mask, is_causal, keep, (B, T))
            x = x.new_zeros(B * T, x.size(-1)).index_copy_(0, keep, x).view(B, T, -1)
        else:
            for block in blocks:
                x = block(x, mask, is_causal)
        if output_mask is not None:
            x = self.h[-1].selected(x, mask, output_mask)
        return (x, decoder_weight) if return_decoder_weight else x


def build_attention_mask(
    attention_mask: Optional[torch.Tensor], causal: bool, T: int, device: torch.device
) -> Optional[torch.Tensor]:
    """A boolean SDPA mask (True = attend), built once per batch: `[B, 1, 1, T]` for padding, `[B, 1, T, T]` with causality."""
    if attention_mask is None:
        return None
    mask = attention_mask.bool()[:, None, None, :]
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return mask


def no_autograd(t: torch.Tensor) -> bool:
    """True when autograd does not record `t` (inference): in-place ops on a fresh output are then safe."""
    return not (torch.is_grad_enabled() and t.requires_grad)


# oneDNN's fp32 matmul, with the bias (and GELU) fused in: the kernel torch.compile's CPU backend emits. On this
# project's CPU it runs the roberta-base layer shapes at 145-185 GFLOP/s where F.linear's BLAS call gets 95-140.
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, gelu: bool = False):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


class OneDNNLinear(torch.autograd.Function):
    """`F.linear` with oneDNN's kernels forward and backward (the kernel itself has no backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t())  # grad @ W
        grad_2d = grad.reshape(-1, grad.size(-1))
        if ctx.needs_input_grad[1]:
            grad_weight = _onednn_linear(grad_2d.t(), x.reshape(-1, x.size(-1)).t())  # grad^T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_2d.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False) -> torch.Tensor:
    """`F.linear` (then exact GELU). In fp32 on CPU the matmuls go to oneDNN; at inference as one call with the
    bias and GELU fused, which also saves the passes that copy the bias in and apply GELU. Everywhere else (GPU,
    autocast, torch.compile, which fuses on its own) it is plain `F.linear`."""
    if (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    ):
        if not torch.is_grad_enabled():
            return _onednn_linear(x, weight, bias, gelu)
        y = OneDNNLinear.apply(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    if not gelu:
        return y
    # at inference GELU may overwrite its input: the [tokens, 4 * n_embd] buffer is the largest activation
    return torch._C._nn.gelu_(y) if no_autograd(y) else F.gelu(y)


def residual_add(x: torch.Tensor, sublayer_out: torch.Tensor) -> torch.Tensor:
    """`x + sublayer_out`; at inference written into `sublayer_out`, a fresh buffer nobody else reads,
    which saves allocating (and page-faulting) another activation per sub-layer."""
    if no_autograd(sublayer_out) and sublayer_out.dtype == torch.result_type(x, sublayer_out):
        return sublayer_out.add_(x)
    return x + sublayer_out  # under autocast the bf16 output + fp32 residual promotes to fp32


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.norm_1 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)
        self.norm_2 = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor],
        is_causal: bool,
        keep: Optional[torch.Tensor] = None,
        padded_shape: Optional[Tuple[int, int]] = None,
    ) -> torch.Tensor:
        x = self.norm_1(residual_add(x, self.drop(self.attn(x, mask, is_causal, keep, padded_shape))))
        return self.norm_2(residual_add(x, self.drop(self.mlp(x))))

    def selected(self, x: torch.Tensor, mask: Optional[torch.Tensor], output_mask: torch.Tensor) -> torch.Tensor:
        """The block's output at the `output_mask` positions only, `[M, C]`; keys and values come from every token."""
        rows, cols = output_mask.nonzero(as_tuple=True)
        x_sel = x[rows, cols]
        h = self.norm_1(residual_add(x_sel, self.drop(self.attn.selected_queries(x, mask, output_mask, rows, cols, x_sel))))
        return self.norm_2(residual_add(h, self.drop(self.mlp(h))))


class SelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.head_size = config.head_size
        self.dropout = config.attention_dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor],
        is_causal: bool,
        keep: Optional[torch.Tensor] = None,
        padded_shape: Optional[Tuple[int, int]] = None,
    ) -> torch.Tensor:
        qkv = linear(x, self.qkv.weight, self.qkv.bias)
        if keep is not None:
            # x holds only real tokens: scatter into the padded layout for attention, gather back after
            B, T = padded_shape
            qkv = qkv.new_zeros(B * T, qkv.size(-1)).index_copy_(0, keep, qkv)
        else:
            B, T = x.shape[:2]
        q, k, v = qkv.view(B, T, 3, self.n_head, self.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).reshape(B, T, -1)
        if keep is not None:
            y = y.reshape(B * T, -1).index_select(0, keep)
        return linear(y, self.proj.weight, self.proj.bias)


    def selected_queries(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor],
        output_mask: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        x_sel: torch.Tensor,
    ) -> torch.Tensor:
        """Attention output for the selected queries only. They are packed per sequence into `[B, Q, C]`
        (Q = most selected in one sequence) so one SDPA call serves the batch."""
        B, T, C = x.shape
        slots = (torch.cumsum(output_mask, dim=1) - 1)[rows, cols]
        Q = int(output_mask.sum(dim=1).max()) if rows.numel() else 0
        q_sel = linear(x_sel, self.qkv.weight[:C], self.qkv.bias[:C])
        q = q_sel.new_zeros(B, Q, C)  # the projection's dtype: under autocast it is bf16/fp16, not x's fp32
        q[rows, slots] = q_sel
        kv = linear(x, self.qkv.weight[C:], self.qkv.bias[C:])
        k, v = kv.view(B, T, 2, self.n_head, self.head_size).permute(2, 0, 3, 1, 4).unbind(0)
        q = q.view(B, Q, self.n_head, self.head_size).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return linear(y.transpose(1, 2).reshape(B, Q, C)[rows, slots], self.proj.weight, self.proj.bias)


class MLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(linear(x, self.fc.weight, self.fc.bias, gelu=True), self.proj.weight, self.proj.bias)


class LMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to the word embeddings, with its own bias."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        return linear(self.norm(linear(x, self.dense.weight, self.dense.bias, gelu=True)), decoder_weight, self.bias)


class ClassificationHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> projection, on the first token (`<s>`)."""

    def __init__(self, config: Config, num_labels: int) -> None:
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.drop = nn.Dropout(dropout)
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.out_proj = nn.Linear(config.n_embd, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.drop(features[:, 0])
        x = self.drop(torch.tanh(self.dense(x)))
        return self.out_proj(x)


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
    """Encoder + LM head. Masked language modelling by default; `config.causal=True` (or `causal=True` in
    `forward`) turns it into a left-to-right language model like HF's `RobertaForCausalLM`."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)
        self.lm_head = LMHead(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        causal: Optional[bool] = None,
        return_stats: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Without `labels`: logits `[B, T, padded_vocab_size]`. With `labels` (-100 = ignore): the mean
        cross-entropy over labelled positions; `return_stats=True` adds (correct predictions, labelled count)."""
        causal = self.config.causal if causal is None else causal
        if labels is None:
            hidden, decoder_weight = self.roberta(input_ids, attention_mask, causal=causal, return_decoder_weight=True)
            return self.lm_head(hidden, decoder_weight)

        if causal:
            # position t predicts token t + 1
            labels = F.pad(labels[:, 1:], (0, 1), value=-100)
        selected = labels.ne(-100)
        if causal:
            hidden, decoder_weight = self.roberta(
                input_ids, attention_mask, causal=True, unpad=True, return_decoder_weight=True
            )
            hidden = hidden[selected]
        else:
            hidden, decoder_weight = self.roberta(
                input_ids, attention_mask, unpad=True, output_mask=selected, return_decoder_weight=True
            )
        targets = labels[selected]
        logits = self.lm_head(hidden, decoder_weight).float()
        count = selected.sum()
        loss = F.cross_entropy(logits, targets, reduction="sum") / count.clamp(min=1)
        if not return_stats:
            return loss
        correct = (logits.argmax(-1) == targets).sum()
        return loss, correct, count


class RobertaForCausalLM(RobertaForMaskedLM):
    """The same weights with a causal mask and a next-token loss (HF's `RobertaForCausalLM`)."""

    def __init__(self, config: Config) -> None:
        if not config.causal:
            config = Config(**{**config.to_dict(), "causal": True})
        super().__init__(config)


class RobertaForSequenceClassification(_RobertaPreTrained):
    def __init__(self, config: Config, num_labels: Optional[int] = None) -> None:
        super().__init__()
        num_labels = num_labels or config.num_labels or 2
        if config.num_labels != num_labels:
            config = Config(**{**config.to_dict(), "num_labels": num_labels})
        self.config = config
        self.num_labels = num_labels
        self.roberta = RobertaModel(config)
        self.classifier = ClassificationHead(config, num_labels)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Returns logits `[B, num_labels]`."""
        first = torch.zeros_like(input_ids, dtype=torch.bool)
        first[:, 0] = True
        hidden = self.roberta(input_ids, attention_mask, unpad=True, output_mask=first)
        return self.classifier(hidden[:, None])


def model_class_for_state_dict(state_dict) -> str:
    """Which head a litgpt state dict carries: "mlm", "classification" or "base"."""
    if any(k.startswith("classifier.") for k in state_dict):
        return "classification"
    if any(k.startswith("lm_head.") for k in state_dict):
        return "mlm"
    return "base"

"""The speed machinery behind `litgpt/model_roberta.py`. Nothing here changes what the model computes, only how fast
(and in how much memory) it does so. `benchmarks/compare_hf.py` measures it against HuggingFace.

- `TokenLayout`: where a batch's tokens live between the blocks (padded, or only the real tokens, packed as
  `litgpt/packing.py` describes them), and the attention call that goes with that layout: SDPA, or on CUDA
  PyTorch's variable-length flash kernel (`varlen_attn`);
- `linear`: fp32 linear layers on oneDNN's CPU kernels where the CPU has AVX-512, with bias and GELU fused in
  at inference;
- `TiedEmbedding`, `embedding`: lookups whose backward neither waits for the device nor builds more than one
  `[V, C]` gradient (one autograd node for the word embeddings and the tied MLM decoder);
- `residual_add`, `writable`: in-place writes into fresh buffers at inference;
- `Linear`, `LoRALinear`: the model's linear layers (through `linear`), and LoRA's low-rank update on top of them.
"""

import inspect
import math
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.packing import Packing


def build_attention_mask(key_mask: Optional[torch.Tensor], causal: bool, T: int) -> Optional[torch.Tensor]:
    """A boolean SDPA mask (True = attend) from a `[B, T]` key mask: `[B, 1, 1, T]`, or `[B, 1, T, T]` with
    causality."""
    if key_mask is None:
        return None
    mask = key_mask.bool()[:, None, None, :]
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
    return mask


# PyTorch's flash-attention kernel for packed sequences (torch >= 2.10). Imported only where CUDA is: the import
# loads torch._dynamo, a second at every start of a CPU-only command.
varlen_attn = None
_VARLEN_CAUSAL = {"window_size": (-1, 0)}  # torch >= 2.11; 2.10 spells it is_causal=True
if torch.cuda.is_available():
    try:
        from torch.nn.attention.varlen import varlen_attn
        if "window_size" not in inspect.signature(varlen_attn).parameters:
            _VARLEN_CAUSAL = {"is_causal": True}
    except ImportError:
        pass


def varlen_serves(x: torch.Tensor, head_dim: int, dropout_p: float, packing: Packing) -> bool:
    """Whether `varlen_attn` can run this attention: CUDA, half precision (flash attention's), a head size it has
    kernels for, no attention dropout (which it does not implement), and every row a key. Elsewhere SDPA runs it,
    padded."""
    return (varlen_attn is not None and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 256 and dropout_p == 0.0 and packing.rows_are_keys)


class TokenLayout:
    """How one batch's tokens are laid out through the blocks, built once per batch rather than once per layer,
    with the attention call that goes with that layout.

    Padded (no `packing`; `RobertaModel.forward`): hidden states are `[B, T, C]` and every position is computed,
    pads included, as HuggingFace does.

    Packed (a `litgpt.packing.Packing`; `RobertaModel.hidden_at`): hidden states are `[N, C]`, the real tokens
    only, so the token-wise layers (projections, FFN, LayerNorm), most of the compute, skip padding. Attention runs
    on the same rows: on CUDA through `varlen_attn` with the sequences' offsets (no padding anywhere); elsewhere
    (CPU, fp32, attention dropout in training) each sequence is scattered into a padded `[S, L]` layout for SDPA,
    whose mask hides the pad slots, and gathered back. Every index comes with the packing, so nothing here waits for
    the device or depends on its data.
    """

    def __init__(self, attention_mask: Optional[torch.Tensor], shape: Tuple[int, int], causal: bool,
                 packing: Optional[Packing] = None) -> None:
        self.shape = shape
        self.causal = causal
        self.packing = packing
        if packing is not None:
            L = packing.key_mask.size(1)
            self.mask = None if packing.full else build_attention_mask(packing.key_mask, causal, L)
        else:
            # padding that is absent needs no mask, so SDPA takes its fastest path; asking costs a host sync and
            # a traced graph cannot branch on data, so a compiled model keeps the mask
            if attention_mask is not None and not torch.compiler.is_compiling() and bool(attention_mask.all()):
                attention_mask = None
            self.mask = build_attention_mask(attention_mask, causal, shape[1])
        self.is_causal = causal and self.mask is None

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """A per-token input `[B, T, ...]` in this layout: unchanged when padded, else its real tokens `[N, ...]`."""
        if self.packing is None:
            return t
        return t.flatten(0, 1).index_select(0, self.packing.rows)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """The selected positions' rows of the hidden states `x` (`[N, C]`), as `[M, C]` in row-major order."""
        return x.index_select(0, self.packing.selected_rows)

    def attention(self, qkv: torch.Tensor, n_head: int, dropout_p: float) -> torch.Tensor:
        """Multi-head attention over the fused projection `qkv` (`[..., 3C]`), answered in the same layout."""
        C = qkv.size(-1) // 3
        D = C // n_head
        p = self.packing
        if p is None:
            B, T = self.shape
            q, k, v = qkv.view(B, T, 3, n_head, D).permute(2, 0, 3, 1, 4).unbind(0)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout_p,
                                               is_causal=self.is_causal)
            return y.transpose(1, 2).reshape(B, T, C)
        N = qkv.size(0)
        S, L = p.key_mask.shape
        if varlen_serves(qkv, D, dropout_p, p):
            q, k, v = qkv.view(N, 3, n_head, D).unbind(1)
            return varlen_attention(q, k, v, p.cu_seqlens, p.cu_seqlens, L, L, self.causal).reshape(N, C)
        q, k, v = self._padded(qkv, p, S, L).view(S, L, 3, n_head, D).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout_p, is_causal=self.is_causal)
        y = y.transpose(1, 2).reshape(S * L, C)
        return y if p.full else y.index_select(0, p.seq_slots)

    def attention_at_selected(self, q: torch.Tensor, kv: torch.Tensor, n_head: int, dropout_p: float) -> torch.Tensor:
        """Attention for the selected positions' queries only (`q`: `[M, C]`) over every row's keys and values
        (`kv`: `[N, 2C]`): what a last block needs when a head reads only those positions. Not with a causal mask,
        whose rows would have to follow the selected queries."""
        p = self.packing
        if p is None or self.causal:
            raise ValueError("attention_at_selected needs a packing and no causal mask")
        M, C = q.shape
        D = C // n_head
        S, L = p.key_mask.shape
        Q = p.query_mask.size(1)
        if varlen_serves(q, D, dropout_p, p):
            k, v = kv.view(-1, 2, n_head, D).unbind(1)
            return varlen_attention(q.view(M, n_head, D), k, v, p.cu_selected, p.cu_seqlens, Q, L).reshape(M, C)
        k, v = self._padded(kv, p, S, L).view(S, L, 2, n_head, D).permute(2, 0, 3, 1, 4).unbind(0)
        queries = q.new_zeros(S * Q, C).index_copy_(0, p.query_slots, q).view(S, Q, n_head, D).transpose(1, 2)
        y = F.scaled_dot_product_attention(queries, k, v, attn_mask=self.mask, dropout_p=dropout_p)
        return y.transpose(1, 2).reshape(S * Q, C).index_select(0, p.query_slots)

    @staticmethod
    def _padded(t: torch.Tensor, p: Packing, S: int, L: int) -> torch.Tensor:
        """Rows `[N, D]` in the per-sequence padded layout `[S * L, D]`: scattered into zeros at their slots (the
        pad slots stay hidden by the mask), or as they are when no sequence is short (the slots are then 0..N-1)."""
        return t if p.full else t.new_zeros(S * L, t.size(-1)).index_copy_(0, p.seq_slots, t)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                     max_q: int, max_k: int, causal: bool = False) -> torch.Tensor:
    """`varlen_attn` on `[rows, heads, head_dim]` queries, keys and values grouped by the offsets `cu_q`/`cu_k`."""
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, **(_VARLEN_CAUSAL if causal else {}))


class TiedEmbedding(torch.autograd.Function):
    """Token embedding lookup that also hands out the same weight for the tied LM-head decoder. Used by the MLM
    model (`RobertaModel.hidden_and_decoder`) when gradients flow into the word embeddings.

    Autograd would otherwise build the word-embedding gradient three times over: a zero-filled `[V, C]` buffer
    for the lookup's few rows, the decoder's dense `[V, C]` gradient, and their sum. One node that owns both uses
    receives both gradients together and adds the looked-up rows into the decoder's gradient in place. The
    numbers are the same as `nn.Embedding` + `F.linear`; only the memory traffic drops."""

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
                rows = rows.masked_fill(ids.eq(ctx.padding_idx)[:, None], 0)  # (no data-dependent shape)
            grad.index_add_(0, ids, rows)
        return None, grad, None


def embedding(ids: torch.Tensor, weight: torch.Tensor, padding_idx: Optional[int] = None) -> torch.Tensor:
    """`F.embedding`, used by the model's position and token-type tables (and word embeddings when untied). When
    gradients flow it is an `index_select`, whose backward is one `index_add_`: `F.embedding`'s CUDA backward sorts
    the ids and reads a count back to the host once there are more than a few thousand, a sync in every step. As
    in `nn.Embedding`, the pad row gets no gradient from the lookup."""
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return F.embedding(ids, weight)
    out = weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.size(-1))
    if padding_idx is not None:
        out = torch.where(ids.eq(padding_idx).unsqueeze(-1), out.detach(), out)
    return out


def writable(t: torch.Tensor) -> bool:
    """True when a fresh output `t` may be overwritten in place: autograd does not record it (inference), and no
    compiler is tracing (which plans its own buffers)."""
    return not (torch.is_grad_enabled() and t.requires_grad) and not torch.compiler.is_compiling()


def residual_add(x: torch.Tensor, sublayer_out: torch.Tensor) -> torch.Tensor:
    """`x + sublayer_out`, used by every block. At inference it is written into `sublayer_out`, a fresh buffer
    nobody else reads, which saves allocating (and page-faulting) another activation per sub-layer."""
    if writable(sublayer_out) and sublayer_out.dtype == torch.result_type(x, sublayer_out):
        return sublayer_out.add_(x)
    return x + sublayer_out  # under autocast the bf16 output + fp32 residual promotes to fp32


# oneDNN's fp32 matmul, with the bias (and GELU) fused in: the kernel torch.compile's CPU backend emits. On an
# AVX-512 CPU (AMD EPYC with AVX-512) it ran the roberta-base layer shapes at 145-185 GFLOP/s where F.linear's MKL
# call got 95-140. On an AVX2-only AMD EPYC MKL was the faster one, forward and backward (150-180 GFLOP/s against
# 110-150; all-MiniLM-L6-v2's training step 743 vs 911 ms, its embeddings 226 vs 169-197 texts/s), so only AVX-512
# CPUs take it.
_ONEDNN_KERNEL = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_LINEAR = _ONEDNN_KERNEL and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, gelu: bool = False):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


class OneDNNLinear(torch.autograd.Function):
    """`F.linear` with oneDNN's kernels forward and backward (the fused kernel itself has no backward). Used by
    `linear` when gradients flow."""

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
    """`F.linear` (then exact GELU), used by every linear layer of the model. In fp32 on an AVX-512 CPU the matmuls go
    to oneDNN; at inference as one call with the bias and GELU fused, which also saves the passes that copy the bias
    in and apply GELU. Everywhere else (GPU, autocast, torch.compile, which fuses on its own) it is `F.linear`."""
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
    return torch._C._nn.gelu_(y) if writable(y) else F.gelu(y)


class Linear(nn.Linear):
    """`nn.Linear` through `linear`; `rows` computes only a slice of the outputs (the attention's queries, or its
    keys and values), `gelu` applies GELU after."""

    def forward(self, x: torch.Tensor, rows: slice = slice(None), gelu: bool = False) -> torch.Tensor:
        return linear(x, self.weight[rows], None if self.bias is None else self.bias[rows], gelu)


class LoRALinear(Linear):
    """LoRA (Hu et al., 2021): `W x + (alpha / r) B A dropout(x)` with `W` frozen and only `A` `[r, in]` and `B`
    `[out, r]` trained. `B` starts at zero, so a fresh adapter leaves the model as it was."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        super().__init__(base.in_features, base.out_features, base.bias is not None, base.weight.device,
                         base.weight.dtype)
        self.load_state_dict(base.state_dict())
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=self.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=self.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rows: slice = slice(None), gelu: bool = False) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B[rows]) * self.scaling
        y = super().forward(x, rows) + update
        return F.gelu(y) if gelu else y


def add_lora(model: nn.Module, targets: Iterable[str], r: int, alpha: float, dropout: float) -> int:
    """Replaces every `Linear` whose qualified name ends with one of `targets` (e.g. `attn.qkv`) by a `LoRALinear`,
    freezes every other parameter, and returns how many layers got an adapter (the caller unfreezes its heads)."""
    targets = tuple(targets)
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, Linear) and not isinstance(module, LoRALinear) and name.endswith(targets)]
    for param in model.parameters():
        param.requires_grad_(False)
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, LoRALinear(module, r, alpha, dropout).train(module.training))
    return len(found)


def fold_lora(state: Dict[str, torch.Tensor], scaling: float) -> Dict[str, torch.Tensor]:
    """A state dict with adapters -> the plain one: every `W` becomes `W + scaling B A` and the adapters go. The
    model it loads into computes what the model with adapters computed."""
    folded = {k: v for k, v in state.items() if ".lora_" not in k}
    for key in state:
        if key.endswith(".lora_A"):
            prefix = key[: -len("lora_A")]
            weight = folded[prefix + "weight"]
            update = state[prefix + "lora_B"].float() @ state[key].float()
            folded[prefix + "weight"] = (weight.float() + scaling * update).to(weight.dtype)
    return folded

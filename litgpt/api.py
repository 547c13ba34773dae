"""Python API for inference: load any checkpoint, then fill masks, embed or classify text.

```python
from litgpt.api import MaskedLM, Classifier

mlm = MaskedLM.load("out/pretrain-demo/final")
mlm.fill_mask("The capital of France is <mask>.", top_k=5)
mlm.embed(["a sentence", "another one"])
clf = Classifier.load("out/roberta_finetuned")
clf.predict(["great movie", "boring plot"])
```

`source` is anything `litgpt.checkpoint.load_checkpoint` reads: a litgpt checkpoint dir, a pretraining out_dir,
a training-state file, a HuggingFace dir, or a registry name that `litgpt download` fetched.
Texts go through the model in padded batches of `batch_size`, sorted by length so little compute goes to padding.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from litgpt.utils import UsageError, pad_right

Candidate = Dict[str, Any]  # {"token_id": int, "token": str, "score": float}


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """`None` picks the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    return device


def _as_texts(texts: Union[str, Sequence[str]], what: str) -> List[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{what} expects a str or a list of str, got a list holding {bad[0]}")
    return texts


class _Inference:
    """What both wrappers share: the model in eval mode on its device, the tokenizer and padded batching."""

    kind: str = ""  # "mlm" or "classification": which head `load` requires

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, batch_size: int = 32,
                 source: str = "") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size {batch_size!r}: must be a positive integer")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = device
        self.batch_size = batch_size
        self.source = source

    @classmethod
    def load(cls, source: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
             batch_size: int = 32, checkpoints_dir: Path = Path("checkpoints")):
        """Loads the weights, config and tokenizer found at `source` onto `device` (default: GPU if any, else CPU)."""
        from litgpt.checkpoint import build_model, load_checkpoint
        from litgpt.model_roberta import model_class_for_state_dict

        device = resolve_device(device)
        checkpoint = load_checkpoint(source, checkpoints_dir)
        kind = model_class_for_state_dict(checkpoint.state_dict)
        if kind != cls.kind and not (cls.kind == "mlm" and kind == "base"):
            if cls.kind == "classification":
                what = "a masked LM" if kind == "mlm" else "a bare encoder"
                raise UsageError(
                    f"{checkpoint.source}: has no classification head (it is {what}); finetune it first with"
                    " `litgpt finetune`, or use `litgpt fill_mask` / MaskedLM"
                )
            raise UsageError(
                f"{checkpoint.source}: is a sequence classifier, not a masked LM; use `litgpt classify` / Classifier"
            )
        tokenizer = checkpoint.load_tokenizer()
        model = build_model(checkpoint.config, checkpoint.state_dict, checkpoint.source)
        return cls(model, tokenizer, device, batch_size, checkpoint.source)

    @property
    def encoder(self) -> torch.nn.Module:
        return getattr(self.model, "roberta", self.model)

    def _encode(self, texts: List[str], truncate: bool) -> List[List[int]]:
        limit = self.config.block_size
        if truncate:
            return self.tokenizer.encode_batch(texts, max_length=limit)
        encoded = self.tokenizer.encode_batch(texts)
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise UsageError(f"text {i + 1} is {len(ids)} tokens long; the model takes at most {limit}")
        return encoded

    def _batches(self, encoded: List[List[int]]):
        """Yields (indices into `encoded`, input_ids, attention_mask), right-padded, longest texts first."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seqs = [torch.tensor(encoded[i], dtype=torch.long) for i in idx]
            input_ids = pad_right(seqs, self.tokenizer.pad_id)
            attention_mask = pad_right([torch.ones_like(s) for s in seqs], 0)
            yield idx, input_ids.to(self.device), attention_mask.to(self.device)

    @torch.inference_mode()
    def embed(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """One vector per text, `[N, n_embd]` float32 on the CPU.

        The mean of the encoder's last hidden states over the text's real tokens, `<s>` and `</s>` included and
        padding excluded (as sentence-transformers pools), so a text's vector does not depend on its batch.
        Texts longer than the model's `block_size` are truncated.
        """
        texts = _as_texts(texts, "embed")
        out = torch.empty(len(texts), self.config.n_embd, dtype=torch.float32)
        for idx, input_ids, attention_mask in self._batches(self._encode(texts, truncate=True)):
            real = attention_mask.bool()
            hidden = self.encoder.hidden_at(input_ids, attention_mask, real).float()  # [real tokens, C], row-major
            text_of_token = real.nonzero(as_tuple=True)[0]
            sums = hidden.new_zeros(len(idx), hidden.size(-1)).index_add_(0, text_of_token, hidden)
            out[torch.tensor(idx)] = (sums / real.sum(1, keepdim=True)).cpu()
        return out


class MaskedLM(_Inference):
    """A masked language model (or a bare encoder, for `embed` only) ready for inference."""

    kind = "mlm"

    @torch.inference_mode()
    def fill_mask(self, text_or_texts: Union[str, Sequence[str]], top_k: int = 5):
        """The `top_k` most likely tokens at every `<mask>`.

        For one str: a list with one entry per `<mask>`, each a list of candidates
        `{"token_id": int, "token": str, "score": float}`, best first. For a list of texts: one such entry per text
        (the `litgpt fill_mask --json` format). `score` is the softmax over the vocabulary at the mask position and
        `token` is `decode([token_id])`, as in transformers' fill-mask pipeline `token_str`.
        """
        if not hasattr(self.model, "lm_head"):
            raise UsageError(f"{self.source}: a bare encoder without an LM head cannot fill masks (embed works)")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k {top_k!r}: must be a positive integer")
        single = isinstance(text_or_texts, str)
        texts = _as_texts(text_or_texts, "fill_mask")
        encoded = self._encode(texts, truncate=False)
        mask_token = self.tokenizer.id_to_token(self.tokenizer.mask_id)
        for i, ids in enumerate(encoded):
            if self.tokenizer.mask_id not in ids:
                raise UsageError(f"text {i + 1} has no {mask_token}: {texts[i]!r}")

        top_k = min(top_k, self.config.padded_vocab_size)
        results: List[Optional[List[List[Candidate]]]] = [None] * len(texts)
        for idx, input_ids, attention_mask in self._batches(encoded):
            where = input_ids == self.tokenizer.mask_id  # row-major: texts in batch order, masks left to right
            hidden = self.encoder.hidden_at(input_ids, attention_mask, where)
            logits = self.model.lm_head(hidden, self.encoder.wte.weight).float()
            scores, token_ids = logits.softmax(dim=-1).topk(top_k, dim=-1)
            scores, token_ids = scores.tolist(), token_ids.tolist()
            counts = where.sum(1).tolist()
            offset = 0
            for i, count in zip(idx, counts):
                results[i] = [self._candidates(token_ids[m], scores[m]) for m in range(offset, offset + count)]
                offset += count
        return results[0] if single else results

    def _candidates(self, token_ids: List[int], scores: List[float]) -> List[Candidate]:
        return [
            {"token_id": t, "token": self.tokenizer.decode([t], skip_special_tokens=False), "score": s}
            for t, s in zip(token_ids, scores)
        ]


class Classifier(_Inference):
    """A sequence classifier (e.g. the output of `litgpt finetune`) ready for inference."""

    kind = "classification"

    @property
    def labels(self) -> List[str]:
        """Label names ordered by label id, from the checkpoint's `id2label` (`LABEL_i` where missing)."""
        return [self.config.id2label.get(i, f"LABEL_{i}") for i in range(self.model.num_labels)]

    @torch.inference_mode()
    def predict(self, texts: Union[str, Sequence[str]]) -> List[Dict[str, Any]]:
        """One `{"text", "label", "label_id", "probabilities"}` per text (the `litgpt classify --json` format).

        `probabilities` is the softmax over the labels, ordered by label id. Texts longer than the model's
        `block_size` are truncated, as in finetuning.
        """
        texts = _as_texts(texts, "predict")
        probabilities: List[Optional[List[float]]] = [None] * len(texts)
        for idx, input_ids, attention_mask in self._batches(self._encode(texts, truncate=True)):
            probs = self.model(input_ids, attention_mask).float().softmax(dim=-1).tolist()
            for i, p in zip(idx, probs):
                probabilities[i] = p
        labels = self.labels
        out = []
        for text, probs in zip(texts, probabilities):
            label_id = max(range(len(probs)), key=probs.__getitem__)
            out.append({"text": text, "label": labels[label_id], "label_id": label_id, "probabilities": probs})
        return out


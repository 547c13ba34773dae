"""What every inference object shares: the device, the model in eval mode, loading any checkpoint with the head a
class needs, length-sorted padded batches with rounded shapes, and pooling the encoder's states into sentence
vectors."""


import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from litgpt.embedding import POOLING, pool_rows
from litgpt.packing import first_tokens
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


# Inference shapes are rounded up to these multiples: every new shape costs oneDNN kernels and heap fragments that
# are kept, so a long run over ever-different shapes grew without bound (4.2 GB over 100k texts) where rounded ones
# stay flat. Padding to a multiple of 16 positions costs only attention; the extra rows are a few pad tokens.
LENGTH_MULTIPLE = 16
ROW_MULTIPLE = 64


def pool(encoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str
         ) -> torch.Tensor:
    """`[B, n_embd]` float32 sentence vectors: the first token's state, or the mean or max over the real tokens.
    Only the rows pooling reads are computed (`hidden_at`), plus a few pad rows that round their number up to a
    multiple of `ROW_MULTIPLE` (pad rows never change real ones; they are dropped here)."""
    real = attention_mask.bool()
    wanted = real if pooling != "cls" else first_tokens(input_ids)
    rows = wanted | _round_up_rows(real | wanted, ROW_MULTIPLE)
    hidden = encoder.hidden_at(input_ids, attention_mask, rows).float()[wanted[rows]]  # row-major
    return pool_rows(hidden, wanted.nonzero(as_tuple=True)[0], real.sum(1), pooling)


def _round_up_rows(computed: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad positions (not in `computed`, first ones first) that bring `computed`'s count up to a multiple of
    `multiple`, as far as there are pads."""
    extra = torch.zeros_like(computed)
    missing = -int(computed.sum()) % multiple
    if missing:
        pads = (~computed).flatten().nonzero().squeeze(1)[:missing]
        extra.view(-1)[pads] = True
    return extra


# `precision` of a PyTorch model: fp32, bf16 autocast, or the faster of the two that this device runs well
PRECISIONS = ("fp32", "bf16", "auto")


def fastest_precision(device: torch.device) -> str:
    """What `precision="auto"` runs: bf16 autocast on a CPU with bf16 dot products (AMX or AVX512-BF16), where it
    measured faster than fp32 with embeddings within 1e-4 cosine of fp32 (benchmarks/cpu_inference.py); fp32
    elsewhere."""
    if device.type != "cpu":
        return "fp32"
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's, private: absent means no
    return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in checks) else "fp32"


def inference(method: Callable) -> Callable:
    """Runs an inference method in `torch.inference_mode`, under bf16 autocast where the object was loaded so."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return method(self, *args, **kwargs)

    return run


# a checkpoint's head -> (what it is, the head the others lack, what reads it)
HEADS = {
    "mlm": ("a masked LM", "LM head", "`litgpt fill_mask` / MaskedLM"),
    "base": ("a bare encoder", "head", "`litgpt embed` / Embedder"),
    "classification": ("a sequence classifier", "classification head", "`litgpt classify` / Classifier"),
    "token_classification": ("a token classifier", "token classification head", "`litgpt ner` / TokenClassifier"),
    "qa": ("a question-answering model", "question-answering head", "`litgpt qa` / QuestionAnswerer"),
}
# the command that reads each head; `litgpt serve --task` and `litgpt export --task` take these names
TASK_OF_HEAD = {"classification": "classify", "mlm": "fill_mask", "base": "embed", "token_classification": "ner",
                "qa": "qa"}
TASKS = ("classify", "fill_mask", "embed", "ner", "qa")


@dataclass
class Opened:
    """What a source holds, before any model is built."""

    head: str  # `HEADS`' names
    config: Any  # litgpt.Config
    tokenizer: Any  # litgpt.Tokenizer, checked against the model
    folder: Optional[Path]  # the checkpoint's own files (recipe, metrics.json), beside its tokenizer
    where: str  # one line for users: what was loaded
    checkpoint: Any  # the PyTorch weights (`LoadedCheckpoint`); None for a `litgpt export` folder (ONNX Runtime)


def open_source(source: Union[str, Path], checkpoints_dir: Path = Path("checkpoints")) -> Opened:
    """Any source `litgpt.checkpoint.load_checkpoint` reads, or a folder written by `litgpt export`."""
    from litgpt.api.onnx_runtime import export_head, is_export
    from litgpt.checkpoint import check_tokenizer, load_checkpoint
    from litgpt.model_roberta import model_class_for_state_dict
    from litgpt.tokenizer import Tokenizer

    if is_export(source):
        folder = Path(source)
        head, config = export_head(folder)
        tokenizer = Tokenizer(folder)
        check_tokenizer(tokenizer, config, str(folder))
        return Opened(head, config, tokenizer, folder, f"ONNX export {folder}", None)
    checkpoint = load_checkpoint(source, checkpoints_dir)
    return Opened(model_class_for_state_dict(checkpoint.state_dict), checkpoint.config, checkpoint.load_tokenizer(),
                  checkpoint.tokenizer_dir, checkpoint.source, checkpoint)


def check_precision(precision: str, opened: Opened) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and opened.checkpoint is None:
        raise UsageError(f"--precision bf16: {opened.where} runs at the precision it was exported with")


class _Inference:
    """What every inference object shares: the model in eval mode on its device, the tokenizer and padded batching."""

    kind: str = ""  # the head `load` requires (`model_class_for_state_dict`'s names; "": any)

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, batch_size: int = 32,
                 source: str = "") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size {batch_size!r}: must be a positive integer")
        # a PyTorch model, or an exported graph on ONNX Runtime (`api/onnx_runtime.py`), which answers the same calls
        self.model = model.to(device).eval() if isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self.max_length = self.config.block_size  # longer texts are truncated (fill_mask refuses them)
        self.folder: Optional[Path] = None  # the checkpoint's folder, when loaded from one
        self.head = ""  # the loaded checkpoint's head (`HEADS`)
        self.precision = "fp32"  # a PyTorch model's: fp32, or bf16 (autocast)
        self.length_multiple = getattr(model, "length_multiple", LENGTH_MULTIPLE)  # the runtime's bucket step

    @classmethod
    def load(cls, source: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
             batch_size: int = 32, checkpoints_dir: Path = Path("checkpoints"), precision: str = "fp32"):
        """Loads the weights, config and tokenizer found at `source` onto `device` (default: GPU if any, else CPU).
        A folder written by `litgpt export` runs on ONNX Runtime, on the CPU. `precision` (PyTorch): `fp32`, `bf16`
        (autocast) or `auto` (`fastest_precision`)."""
        from litgpt.api.onnx_runtime import OnnxModel
        from litgpt.checkpoint import build_model

        opened = open_source(source, checkpoints_dir)
        check_precision(precision, opened)
        if cls.kind and opened.head != cls.kind and not (cls.kind == "mlm" and opened.head == "base"):
            hint = " (finetune it first with `litgpt finetune`)" if opened.head in ("mlm", "base") else ""
            raise UsageError(f"{opened.where}: is {HEADS[opened.head][0]}, not {HEADS[cls.kind][0]} (it has no "
                             f"{HEADS[cls.kind][1]}); use {HEADS[opened.head][2]}{hint}")
        if opened.checkpoint is None:
            device = resolve_device(device or "cpu")
            if device.type != "cpu":
                raise UsageError(f"--device {device}: {source} is an ONNX export, which runs on the CPU; use "
                                 "--device cpu")
            model = OnnxModel(opened.folder)
        else:
            device = resolve_device(device)
            model = build_model(opened.config, opened.checkpoint.state_dict, opened.where)
        loaded = cls(model, opened.tokenizer, device, batch_size, opened.where)
        loaded.folder, loaded.head = opened.folder, opened.head
        if opened.checkpoint is not None:
            loaded.precision = fastest_precision(device) if precision == "auto" else precision
        return loaded

    @property
    def runtime(self) -> str:
        """Which path runs the model, in a few words for users."""
        if isinstance(self.model, torch.nn.Module):
            return "PyTorch bf16 autocast" if self.precision == "bf16" else "PyTorch fp32"
        threads = self.model.session.get_session_options().intra_op_num_threads
        return f"ONNX Runtime {self.model.precision}, {threads} threads"

    @property
    def summary(self) -> str:
        """One line for users: what was loaded, where it runs and how."""
        return f"{self.source} on {self.device} ({self.runtime})"

    @property
    def encoder(self) -> torch.nn.Module:
        return getattr(self.model, "roberta", self.model)

    def _encode(self, texts: List[str], truncate: bool) -> List[List[int]]:
        limit = self.max_length
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
            lengths = torch.tensor([len(encoded[i]) for i in idx])
            input_ids = pad_right([torch.tensor(encoded[i], dtype=torch.long) for i in idx], self.tokenizer.pad_id)
            # the length rounded up to the runtime's multiple (within the model's), for few distinct shapes
            length = min(-(-input_ids.size(1) // self.length_multiple) * self.length_multiple, self.config.block_size)
            input_ids = F.pad(input_ids, (0, length - input_ids.size(1)), value=self.tokenizer.pad_id)
            attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
            yield idx, input_ids.to(self.device), attention_mask.to(self.device)

    @inference
    def embed(self, texts: Union[str, Sequence[str]], pooling: str = "mean", normalize: bool = False) -> torch.Tensor:
        """One vector per text, `[N, n_embd]` float32 on the CPU, pooled from the encoder's last hidden states.

        `pooling`: "mean" or "max" over the text's real tokens (`<s>`/`[CLS]` and `</s>`/`[SEP]` included, padding
        excluded, as sentence-transformers pools), or "cls", the first token's state. A text's vector therefore does
        not depend on its batch. `normalize` scales each vector to unit length (cosine similarity = dot product).
        Texts longer than `max_length` tokens are truncated.
        """
        if pooling not in POOLING:
            raise UsageError(f"pooling {pooling!r}: expected one of {', '.join(POOLING)}")
        texts = _as_texts(texts, "embed")
        out = torch.empty(len(texts), self.config.n_embd, dtype=torch.float32)
        for idx, input_ids, attention_mask in self._batches(self._encode(texts, truncate=True)):
            vectors = pool(self.encoder, input_ids, attention_mask, pooling)
            out[torch.tensor(idx)] = (F.normalize(vectors, dim=-1) if normalize else vectors).cpu()
        return out



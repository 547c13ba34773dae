"""Small helpers shared by the commands: atomic writes, safe loads and user-facing errors."""

import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


class UsageError(Exception):
    """Bad input from the user: printed as one line and exits with code 2, no traceback."""


class RunError(Exception):
    """A run that cannot go on (e.g. a non-finite loss): printed as one line and exits with code 1."""


@contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yields a temp path in the same folder; it is renamed onto `path` only if the block succeeds.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: Union[str, Path]) -> Iterator[Path]:
    """Yields a temp folder beside `path` (which must be absent or empty); it is renamed onto `path` only if the
    block succeeds, so `path` never holds half a result."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        os.replace(tmp, path)  # an empty folder at `path` is replaced too
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_save_safetensors(state_dict: Dict[str, torch.Tensor], path: Union[str, Path], metadata=None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def first_line(ex: BaseException, limit: Optional[int] = 200) -> str:
    """The first line of an exception's message (cut to `limit` characters), or "" when it has none: one-line
    errors quote the library's reason without its traceback-sized detail."""
    text = str(ex).strip()
    line = text.splitlines()[0] if text else ""
    return line if limit is None else line[:limit]


def read_json(path: Union[str, Path]) -> Any:
    """A JSON file's value; anything unreadable is one `UsageError` naming the file and the reason."""
    import json

    try:
        with open(path, encoding="utf-8") as fp:
            return json.load(fp)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as ex:
        raise UsageError(f"{path}: not a readable JSON file ({ex.__class__.__name__}: {first_line(ex)})") from None


def safe_torch_load(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """`torch.load` restricted to tensors and plain containers; pickled code is refused, never run."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    import warnings

    try:
        # the restricted unpickler warns about newer pickle protocols; it still refuses code
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True, mmap=False)
    except pickle.UnpicklingError as ex:
        reason = first_line(ex, limit=None) or ex.__class__.__name__
        raise UsageError(f"{path}: refused to load, it holds more than tensors and plain data ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as ex:
        reason = ex.__class__.__name__
        raise UsageError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: {reason})") from None


def load_state_dict_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Loads weights from `.safetensors` or a weights-only `.pth/.bin/.pt` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise UsageError(f"{path}: file not found")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as ex:
            raise UsageError(f"{path}: not a readable safetensors file ({ex})") from None
    state = safe_torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: expected a state dict of tensors")
    return state


def check_writable_dir(path: Union[str, Path], flag: str) -> Path:
    """Fails early with one line when `path` cannot be used as an output folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{flag} {path}: not writable")
    return path


def num_parameters(module: torch.nn.Module, requires_grad: bool = None) -> int:
    return sum(p.numel() for p in module.parameters() if requires_grad is None or p.requires_grad == requires_grad)


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device,
               betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (every 1-d parameter), as RoBERTa trains.

    It uses the fused kernel on CPU and CUDA: for roberta-base on CPU it measured ~20x faster than the foreach path,
    with no temporary copies of the parameters.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = True if device.type in ("cuda", "cpu") else None
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def capture_rng() -> Dict[str, Any]:
    """Python's and torch's RNG states as plain data (loadable with `weights_only=True`), for exact resume."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(internal), "python_version": version, "python_gauss": gauss}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pad_right(seqs: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    """The 1-D tensors `seqs` as one `[B, T]` tensor, right-padded with `value` to the longest (every collator's
    padding: ids with the pad id, per-token labels with -100, attention masks with 0)."""
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)


def release_freed_memory() -> None:
    """Hands the heap memory that freed tensors left behind back to the OS (glibc's `malloc_trim`; a no-op where
    there is none). A long inference run over batches of ever-different shapes otherwise grows glibc's heap with
    fragments it never reuses: `litgpt embed --input` on 100k lines reached 4.2 GB instead of staying near 1.3 GB."""
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


_LIBC: Any = None

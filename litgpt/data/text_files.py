"""A folder of `.txt` / `.jsonl` text for real pretraining: tokenized once in parallel with `litdata.optimize` into
a cache, then read with `litdata.StreamingDataset` (memory-mapped chunks) in the order of `EpochStream`.

- `mode="packed"` (RoBERTa's FULL-SENTENCES): every document becomes `<s> ... </s>`; the documents are concatenated
  and cut into `max_seq_length` blocks, which cross document boundaries and need no padding. A `.txt` document is a
  run of non-blank lines (blank lines separate documents, as in fairseq); a `.jsonl` record's `text` is one.
  With `documents=True` (RoBERTa's DOC-SENTENCES, through the same offsets as unpadding) the blocks are the same,
  but each document in a block attends only to itself and counts its positions from its own `<s>`.
- `mode="lines"`: one sequence per non-blank line or record, `<s> line </s>` cut to `max_seq_length`, padded per batch.

Validation is `val_data_path` when given, else the documents (lines) whose hash of (file, byte offset) falls under
`val_fraction` (the split does not depend on the seed). The cache is keyed on the files (path, size, mtime), the
tokenizer, the mode and the split; a matching cache is reused, anything else is rebuilt. The tokenizing itself
(`litgpt/data/text_tokenize.py`) reads files in slices and never holds a huge single line in memory.
Bad input (invalid UTF-8, NUL bytes, broken JSON) stops the build with a UsageError naming file and line; the
workers report errors through files instead of raising, since a raising litdata worker can leave `optimize` hanging.
Order and ranks: the train split is read in `litgpt.data.base.EpochStream`'s order (each sequence once per epoch
across all ranks of all nodes, the same steps at any world size), masked from (seed, epoch, index); validation is
dealt to the ranks by `EvalLoader`. litdata's own sharding is not used: it guesses the number of nodes from the CUDA
device count, and measured on a 2-node run it left sequences unread every epoch, read others twice from the second
epoch on, and gave ranks different numbers of batches (`benchmarks/litdata_nodes.py` measures it). Resuming: the
position is `EpochLoader.state_dict()`, so a restored loader continues with exactly the batches an uninterrupted run
would see (with the same batch size and number of devices; any num_workers).
"""

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request on every dataset

import numpy as np
import torch
from litdata import StreamingDataset, TokensLoader

from litgpt.data.base import DataModule, EpochLoader, EvalLoader
from litgpt.data.mlm import MLMCollator
from litgpt.data.readers import find_text_files, plan_ranges
from litgpt.data.text_tokenize import Tokenize
from litgpt.utils import UsageError, atomic_write_text

CACHE_VERSION = 1
MARKER = ".litgpt_text_files"
# packed-mode chunk size, in tokens (each chunk drops its last partial block)
CHUNK_TOKENS = 1 << 22
# big files are cut into byte ranges of at least this size so several workers share them
MIN_RANGE_BYTES = 1 << 20
VAL_EPOCH = -1


class _Sequences(torch.utils.data.Dataset):
    """A split of the cache as a map-style dataset: `dataset[(epoch, i)]` is `{"input_ids", "index", "epoch"}`, so the
    collator masks sequence i from (seed, epoch, i); `dataset[i]` takes `fixed_epoch` (validation's)."""

    def __init__(self, root: Path, block_size: Optional[int], fixed_epoch: int = VAL_EPOCH) -> None:
        from litdata.utilities.env import _DistributedEnv

        loader = TokensLoader(block_size=block_size) if block_size else None
        self.streaming = StreamingDataset(str(root), item_loader=loader)
        # every rank reads its own sequences by index, so litdata must see the whole split: one process, no drop
        self.streaming.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
        self.streaming.set_drop_last(False)
        self.fixed_epoch = fixed_epoch
        self.size = len(self.streaming)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: Any) -> Dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.fixed_epoch, key)
        ids = torch.as_tensor(np.asarray(self.streaming[int(index)]).astype(np.int64))
        return {"input_ids": ids, "index": int(index), "epoch": int(epoch)}


def _start_method() -> str:
    # fork starts workers in milliseconds; spawn when CUDA is live in this process (fork would break it)
    if sys.platform.startswith("linux") and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


@dataclass
class TextFiles(DataModule):
    """Pretraining text from a folder of `.txt` (blank lines separate documents) and `.jsonl` (`text` field) files,
    tokenized once into a litdata cache and streamed.

    Args:
        train_data_path: A folder (searched recursively) or a single .txt/.jsonl file of training text.
        val_data_path: Held-out validation text (folder or file); without it `val_fraction` of the documents is
            held out.
        val_fraction: Fraction of documents (lines in lines mode) held out for validation when there is no
            val_data_path.
        cache_dir: Where the tokenized data goes (default ~/.cache/litgpt/text_files/<hash>); reused when it matches.
        num_workers: Worker processes for tokenizing and for loading (the batches do not depend on it).
        mode: packed: documents concatenated and cut into full blocks; lines: one padded sequence per line.
        documents: Packed mode: each document of a block attends only to itself, its positions counted from its
            own `<s>` (DOC-SENTENCES); otherwise attention spans the whole block (FULL-SENTENCES).
        seed: Seed for shuffling and masking.
        errors: Invalid UTF-8: strict stops with the file and line; replace substitutes U+FFFD.
    """

    train_data_path: Path
    val_data_path: Optional[Path] = None
    val_fraction: float = 0.01
    cache_dir: Optional[Path] = None
    num_workers: int = 4
    mode: Literal["packed", "lines"] = "packed"
    documents: bool = False
    seed: int = 42
    errors: Literal["strict", "replace"] = "strict"

    def __post_init__(self) -> None:
        self.train_data_path = Path(self.train_data_path)
        self.val_data_path = Path(self.val_data_path) if self.val_data_path is not None else None
        self.cache_dir = Path(self.cache_dir).expanduser() if self.cache_dir is not None else None
        if self.mode not in ("packed", "lines"):
            raise UsageError(f"--data.mode {self.mode!r}: expected 'packed' or 'lines'")
        if self.documents and self.mode != "packed":
            raise UsageError("--data.documents true: needs --data.mode packed (a lines-mode row is one document)")
        if self.errors not in ("strict", "replace"):
            raise UsageError(f"--data.errors {self.errors!r}: expected 'strict' or 'replace'")
        if self.val_data_path is None and not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--data.val_fraction {self.val_fraction}: expected a fraction strictly between 0 and 1 "
                             "(or give --data.val_data_path)")
        if self.num_workers < 0:
            raise UsageError(f"--data.num_workers {self.num_workers}: expected >= 0")
        self._train_loader = None
        self._root: Optional[Path] = None

    def connect(self, *args: Any, **kwargs: Any) -> None:
        super().connect(*args, **kwargs)
        self._root = None  # the cache key depends on the tokenizer and, in lines mode, the block size
        self._train_loader = None

    # ---- the cache ------------------------------------------------------------------------------------------
    def _files(self) -> Tuple[List[Path], Optional[List[Path]]]:
        train = find_text_files(self.train_data_path, "--data.train_data_path")
        val = find_text_files(self.val_data_path, "--data.val_data_path") if self.val_data_path else None
        return train, val

    def _meta(self, train: List[Path], val: Optional[List[Path]]) -> Dict[str, Any]:
        def listing(files: List[Path]) -> List[List[Any]]:
            return [[str(f.resolve()), st.st_size, st.st_mtime_ns] for f in files for st in (f.stat(),)]

        return {
            "version": CACHE_VERSION,
            "mode": self.mode,
            "block_size": self.max_seq_length if self.mode == "lines" else None,
            "errors": self.errors,
            "tokenizer": self.tokenizer.fingerprint,
            "train": listing(train),
            "val": listing(val) if val is not None else None,
            "val_fraction": self.val_fraction if val is None else None,
        }

    def cache_root(self) -> Path:
        """The cache folder for the current files, tokenizer and settings."""
        self._require_connected()
        if self._root is None:
            meta = self._meta(*self._files())
            if self.cache_dir is not None:
                self._root = self.cache_dir
            else:
                key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
                base = Path(os.environ.get("LITGPT_CACHE", Path.home() / ".cache" / "litgpt")).expanduser()
                self._root = base / "text_files" / key
            self._meta_cache = meta
        return self._root

    def _cache_matches(self) -> bool:
        root = self.cache_root()
        try:
            stored = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return False
        built = all((root / s / "index.json").is_file() for s in ("train", "val"))
        return stored.get("key") == self._meta_cache and built

    def prepare_data(self) -> None:
        """Tokenizes the text into the cache unless a matching cache is there (run on global rank 0)."""
        self._require_connected()
        if self._cache_matches():
            return
        root = self.cache_root()
        if root.exists() and not root.is_dir():
            raise UsageError(f"--data.cache_dir {root}: exists and is not a folder")
        if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
            raise UsageError(f"--data.cache_dir {root}: not empty and not a litgpt text cache; pick another folder")
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).touch()
        (root / "meta.json").unlink(missing_ok=True)
        for name in ("train", "val", "train.tmp", "val.tmp", "train.reports", "val.reports"):
            shutil.rmtree(root / name, ignore_errors=True)
        self._build(root)

    def _tasks(self, files: List[Path], base: Path, range_bytes: int) -> List[Tuple[str, str, int, int, int]]:
        unit = "doc" if self.mode == "packed" else "line"
        tasks = []
        for f in files:
            key = f.name if base.is_file() else f.relative_to(base).as_posix()
            tasks.extend((str(f), key, start, end, line) for start, end, line in plan_ranges(f, unit, range_bytes))
        return tasks

    def _build(self, root: Path) -> None:
        from litdata import optimize

        t0 = time.perf_counter()
        train_files, val_files = self._files()
        workers = max(1, self.num_workers)
        total = sum(f.stat().st_size for f in train_files + (val_files or []))
        range_bytes = max(MIN_RANGE_BYTES, total // (workers * 8) + 1)
        train_tasks = self._tasks(train_files, self.train_data_path, range_bytes)
        if val_files is not None:
            val_tasks = self._tasks(val_files, self.val_data_path, range_bytes)
            splits = {"train": (train_tasks, None), "val": (val_tasks, None)}
        else:
            splits = {"train": (train_tasks, ("train", self.val_fraction)),
                      "val": (train_tasks, ("val", self.val_fraction))}
        stats = {}
        for name, (tasks, split) in splits.items():
            t1 = time.perf_counter()
            tmp, reports = root / f"{name}.tmp", root / f"{name}.reports"
            reports.mkdir()
            fn = Tokenize(self.tokenizer, tasks, self.mode, self.max_seq_length, self.errors, split, reports)
            kwargs = dict(chunk_size=CHUNK_TOKENS, item_loader=TokensLoader()) if self.mode == "packed" else dict(
                chunk_bytes="64MB")
            optimize(fn=fn, inputs=list(range(len(tasks))), output_dir=str(tmp), num_workers=min(workers, len(tasks)),
                     keep_data_ordered=True, verbose=False, start_method=_start_method(), **kwargs)
            results = [json.loads((reports / f"{i}.json").read_text()) if (reports / f"{i}.json").is_file()
                       else {"error": f"{tasks[i][0]}: the tokenizer worker stopped without a report"}
                       for i in range(len(tasks))]
            shutil.rmtree(reports)
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                shutil.rmtree(tmp, ignore_errors=True)
                message = errors[0]
                if "invalid UTF-8" in message:
                    message = (message.replace("; expected UTF-8 text", "")
                               + "; fix the file or pass --data.errors replace")
                raise UsageError(message)
            units, tokens = sum(r["units"] for r in results), sum(r["tokens"] for r in results)
            if units == 0:
                shutil.rmtree(tmp, ignore_errors=True)
                if name == "val" and val_files is None:
                    raise UsageError(f"--data.val_fraction {self.val_fraction}: no document of {self.train_data_path}"
                                     " fell in the validation split; raise it or give --data.val_data_path")
                where = self.train_data_path if name == "train" else self.val_data_path
                raise UsageError(f"--data.{name}_data_path {where}: no text found in "
                                 f"{len(train_files if name == 'train' else val_files)} file(s)")
            os.replace(tmp, root / name)
            stats[name] = {"documents" if self.mode == "packed" else "lines": units, "tokens": tokens,
                           "seconds": round(time.perf_counter() - t1, 3)}
        meta = {"key": self._meta_cache, "stats": stats, "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_text(root / "meta.json", json.dumps(meta, indent=1))

    # ---- loading --------------------------------------------------------------------------------------------
    def setup(self, stage: str = "") -> None:
        """Checks the cache (building it here when running as a single process) and that each split has data."""
        self._require_connected()
        if not self._cache_matches():
            if self.world_size > 1:  # rank 0 built it (prepare_data) before this rank got here
                raise UsageError(f"--data.cache_dir {self.cache_root()}: rank {self.rank} does not see the cache rank 0"
                                 " built; on several nodes put it on a filesystem that every node shares")
            self.prepare_data()
        for name in ("train", "val"):
            if len(self._dataset(name)) == 0:
                raise UsageError(f"the {name} split has no {'block' if self.mode == 'packed' else 'sequence'} "
                                 f"of {self.max_seq_length} tokens; add text or lower max_seq_length")
        self._train_loader = None

    def tokenizer_training_texts(self) -> List[Path]:
        return self._files()[0]

    def _dataset(self, name: str) -> _Sequences:
        return _Sequences(self.cache_root() / name, self.max_seq_length if self.mode == "packed" else None)

    def _collator(self) -> MLMCollator:
        return MLMCollator.from_tokenizer(self.tokenizer, objective=self.objective, seed=self.seed,
                                          documents=self.documents, mask_prob=self.mask_prob,
                                          mask_replace_prob=self.mask_replace_prob,
                                          random_replace_prob=self.random_replace_prob)

    def _make_train_loader(self) -> EpochLoader:
        train = self._dataset("train")
        return EpochLoader(train, range(len(train)), self.batch_size, self._collator(), seed=self.seed,
                           rank=self.rank, world_size=self.world_size, num_workers=self.num_workers)

    def val_dataloader(self) -> EvalLoader:
        """Validation batches in a fixed order with fixed masks, dealt to the ranks."""
        val = self._dataset("val")
        batches = [range(i, min(i + self.batch_size, len(val))) for i in range(0, len(val), self.batch_size)]
        return EvalLoader(val, batches, self._collator(), self.rank, self.world_size, self.num_workers, self.seed)

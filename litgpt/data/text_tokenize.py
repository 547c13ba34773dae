"""Text files -> token arrays for `TextFiles`' litdata cache: the function `litdata.optimize` runs in each worker
(one byte range of one file at a time), and the hash that puts a document or line in the validation split.

Files are read in slices; long documents are tokenized in pieces cut where tokenization is unaffected, and
lines-mode lines are cut to `LINE_CHARS_PER_TOKEN * block_size` characters first, so a huge single line never has to
fit in memory. A worker never raises into litdata (a failing worker can leave `optimize` hanging): it writes its
error, or its counts, to a report file that the parent reads.
"""

import json
import os
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from litgpt.data.mlm import derive_seed
from litgpt.data.readers import iter_units, split_for_tokenizer
from litgpt.utils import UsageError, atomic_write_text

# tokenization batches and pieces of long documents, in characters
BATCH_CHARS = 1 << 18
PIECE_CHARS = 1 << 18
LINE_CHARS_PER_TOKEN = 32


def in_val(key: str, offset: int, fraction: float) -> bool:
    """Whether the unit starting at byte `offset` of file `key` belongs to the validation split."""
    return derive_seed(zlib.crc32(key.encode("utf-8")), offset) < fraction * (1 << 63)


class Tokenize:
    """The function `litdata.optimize` runs in each worker: one byte range of one file -> arrays of token ids."""

    def __init__(self, tokenizer: Any, tasks: List[Tuple[str, str, int, int, int]], mode: str, block_size: int,
                 errors: str, split: Optional[Tuple[str, float]], report_dir: Path) -> None:
        self.tokenizer = tokenizer
        self.report_dir = report_dir
        self.tasks = tasks
        self.mode = mode
        self.block_size = block_size
        self.errors = errors
        self.split = split
        self.dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32
        self.parent_pid = os.getpid()

    def _units(self, task_index: int) -> Iterator[Tuple[str, bool, bool]]:
        """(text, first piece of its unit, last piece of its unit) for the selected units of the task."""
        path, key, start, end, first_line = self.tasks[task_index]
        max_chars = self.block_size * LINE_CHARS_PER_TOKEN if self.mode == "lines" else None
        unit = "doc" if self.mode == "packed" else "line"
        last_offset, keep, first = -1, True, True
        for offset, _, piece, last in iter_units(path, unit=unit, errors=self.errors, start=start, end=end,
                                                 first_line=first_line, max_chars=max_chars):
            if offset != last_offset:
                last_offset, first = offset, True
                keep = self.split is None or in_val(key, offset, self.split[1]) == (self.split[0] == "val")
            if keep:
                if first:
                    self.units += 1
                yield piece, first, last
                first = False

    def __call__(self, task_index: int) -> Iterator[np.ndarray]:
        if os.getpid() != self.parent_pid:
            # a forked worker cannot use the parent's Rust thread pool (it would hang if the user forced
            # TOKENIZERS_PARALLELISM=true); the workers are the parallelism, so tokenize serially in each
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.units = self.tokens = 0
        report: Dict[str, Any] = {}
        try:
            for array in (self._lines(task_index) if self.mode == "lines" else self._packed(task_index)):
                self.tokens += len(array)
                yield array
        except Exception as ex:
            # never raise into litdata: a failing worker can leave optimize hanging; the parent reports it
            path = self.tasks[task_index][0]
            report["error"] = str(ex) if isinstance(ex, UsageError) else f"{path}: {ex.__class__.__name__}: {ex}"
        report.update(units=self.units, tokens=self.tokens)
        atomic_write_text(self.report_dir / f"{task_index}.json", json.dumps(report))

    def _lines(self, task_index: int) -> Iterator[np.ndarray]:
        texts: List[str] = []
        buf, chars = "", 0
        for piece, _, last in self._units(task_index):
            buf += piece
            if last:
                texts.append(buf)
                chars += len(buf)
                buf = ""
                if chars >= BATCH_CHARS:
                    yield from self._encode_lines(texts)
                    texts, chars = [], 0
        if texts:
            yield from self._encode_lines(texts)

    def _encode_lines(self, texts: List[str]) -> Iterator[np.ndarray]:
        for ids in self.tokenizer.encode_batch(texts, max_length=self.block_size):
            yield np.asarray(ids, dtype=self.dtype)

    def _packed(self, task_index: int) -> Iterator[np.ndarray]:
        segments: List[Tuple[str, bool, bool]] = []  # (text, starts a document, ends a document)
        buf, starts, chars = "", True, 0
        for piece, first, last in self._units(task_index):
            if first:
                buf, starts = "", True
            buf += piece
            while len(buf) > PIECE_CHARS:
                head, buf = split_for_tokenizer(buf, PIECE_CHARS)
                segments.append((head, starts, False))
                chars += len(head)
                starts = False
            if last:
                segments.append((buf, starts, True))
                chars += len(buf)
                buf = ""
            if chars >= BATCH_CHARS:
                yield self._encode_segments(segments)
                segments, chars = [], 0
        if segments:
            yield self._encode_segments(segments)

    def _encode_segments(self, segments: List[Tuple[str, bool, bool]]) -> np.ndarray:
        tok = self.tokenizer
        bos, eos = np.asarray([tok.bos_id], dtype=self.dtype), np.asarray([tok.eos_id], dtype=self.dtype)
        parts: List[np.ndarray] = []
        encoded = tok.encode_batch([s[0] for s in segments], add_special_tokens=False)
        for (_, starts, ends), ids in zip(segments, encoded):
            if starts:
                parts.append(bos)
            parts.append(np.asarray(ids, dtype=self.dtype))
            if ends:
                parts.append(eos)
        return np.concatenate(parts)

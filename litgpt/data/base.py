"""The DataModule base class, a resumable epoch loader, and the text-file readers the data modules share.

How the pretraining loop uses a data module::

    data.connect(tokenizer, batch_size, max_seq_length, mask_prob=..., objective=..., seed=..., rank=..., world_size=...)
    if global_rank == 0:
        data.prepare_data()      # one-time work: create test.txt, tokenize a corpus into a cache
    barrier()
    data.setup()                 # every rank
    train_loader = data.train_dataloader()   # yields dicts of input_ids, labels, attention_mask (masked, padded)
    val_loader = data.val_dataloader()       # same, with the same masks at every evaluation
    state = data.state_dict()    # plain data, save it with the checkpoint
    data.load_state_dict(state)  # after this, iterating train_loader continues exactly where `state` was taken

The train loader is iterated epoch after epoch: when an iterator is exhausted, `iter(train_loader)` starts the next
epoch, reshuffled from (seed, epoch) and re-masked. Ranks: `connect(rank=, world_size=)` gives each DDP rank a
disjoint shard of every epoch (for streaming data litdata does the split from torch.distributed). Do not pass the
loaders through `fabric.setup_dataloaders` (it would replace the sampler); move batches to the device yourself.
"""

import codecs
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from litgpt.utils import UsageError

TEXT_SUFFIXES = (".txt", ".jsonl")
# pieces of very long lines are read and handed on in slices of this many bytes, so memory stays bounded
READ_BYTES = 1 << 20
# a `.jsonl` record must be parsed whole; longer lines are refused instead of filling memory
MAX_JSONL_LINE_BYTES = 256 << 20


# ---- the DataModule base ------------------------------------------------------------------------------------
class DataModule:
    """Base for data modules. Subclasses are dataclasses whose fields are the `--data.*` flags."""

    tokenizer: Any = None
    batch_size: int = 1
    max_seq_length: int = 512
    mask_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    objective: str = "mlm"
    rank: int = 0
    world_size: int = 1

    def connect(self, tokenizer: Any, batch_size: int = 1, max_seq_length: Optional[int] = None,
                mask_prob: float = 0.15, objective: str = "mlm", seed: Optional[int] = None,
                mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                rank: int = 0, world_size: int = 1) -> None:
        """Hands over what the data module needs from the training run.

        `seed=None` keeps the module's own `seed` field. `rank`/`world_size` select this process's shard.
        """
        from litgpt.data.mlm import check_mask_probs

        if objective not in ("mlm", "clm"):
            raise UsageError(f"--train.objective {objective!r}: expected 'mlm' or 'clm'")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch size {batch_size!r}: expected a positive integer")
        if max_seq_length is not None and (not isinstance(max_seq_length, int) or max_seq_length < 2):
            raise UsageError(f"max_seq_length {max_seq_length!r}: expected an integer >= 2")
        if not (0 <= rank < world_size):
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        check_mask_probs(mask_prob, mask_replace_prob, random_replace_prob)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length or getattr(tokenizer, "model_max_length", None) or 512
        self.mask_prob = mask_prob
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.objective = objective
        if seed is not None:
            self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def _require_connected(self) -> None:
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}: call connect(tokenizer, ...) before setup()")

    def prepare_data(self) -> None:
        """One-time preparation, run on global rank 0 before `setup()` (other ranks wait at a barrier)."""

    def setup(self, stage: str = "") -> None:
        """Loads the data on every rank."""

    def tokenizer_training_texts(self) -> List[Union[str, Path]]:
        """Texts (`str`) or files (`Path`) to train a tokenizer on when the run has none."""
        raise NotImplementedError(f"{type(self).__name__} cannot provide tokenizer training text")

    def _make_train_loader(self) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        """The (single, stateful) train loader; `state_dict()` reports its position."""
        if getattr(self, "_train_loader", None) is None:
            self._train_loader = self._make_train_loader()
            pending = getattr(self, "_pending_state", None)
            if pending is not None:
                self._train_loader.load_state_dict(pending)
                self._pending_state = None
        return self._train_loader

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """The train loader's position as plain Python data (safe for `torch.load(weights_only=True)`)."""
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            pending = getattr(self, "_pending_state", None)
            return {"module": type(self).__name__, "loader": pending}
        return {"module": type(self).__name__, "loader": loader.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores the train loader's position; works before or after `train_dataloader()` was called."""
        if not isinstance(state, dict) or "loader" not in state:
            raise UsageError("data state in the checkpoint is not a data module state")
        if state.get("module") != type(self).__name__:
            raise UsageError(f"the checkpoint's data state is from {state.get('module')}, not {type(self).__name__};"
                             " resume with the same --data")
        if state["loader"] is None:
            return
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            self._pending_state = state["loader"]
        else:
            loader.load_state_dict(state["loader"])


# ---- a resumable, per-epoch shuffled loader over a map-style dataset -------------------------------------------
class EpochLoader:
    """Batches of a map-style dataset, reshuffled every epoch from (seed, epoch), sharded across ranks, resumable.

    The dataset is indexed with `(epoch, index)` keys when `pass_epoch=True` so an example's masking can be derived
    from (seed, epoch, index): the same batches come out whatever `num_workers` is, and a restored loader continues
    exactly. Each rank takes every `world_size`-th micro-batch of the epoch's order; the order is first padded by
    repeating its start (like `DistributedSampler`) so every rank gets the same number of full batches.
    `state_dict()` counts the examples this rank has consumed in the current epoch.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], batch_size: int, collate_fn: Callable,
                 shuffle: bool = True, seed: int = 42, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pass_epoch: bool = True) -> None:
        if len(indices) == 0:
            raise ValueError("EpochLoader needs at least one example")
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.pass_epoch = pass_epoch
        self.epoch = 0
        self.offset = 0

    @property
    def examples_per_rank(self) -> int:
        batches = -(-len(self.indices) // (self.batch_size * self.world_size))
        return batches * self.batch_size

    def __len__(self) -> int:
        return -(-self.examples_per_rank // self.batch_size)

    def order(self, epoch: int) -> List[int]:
        """This rank's example indices for `epoch`, in order."""
        from litgpt.data.mlm import derive_seed

        idx = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -1))
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        total = self.examples_per_rank * self.world_size
        idx = (idx * (-(-total // len(idx))))[:total]
        # shard whole micro-batches: rank r takes batches r, r + W, ... of the global order, so W ranks with
        # accumulation A see exactly the micro-batches one process with accumulation W * A would
        batches = [idx[i:i + self.batch_size] for i in range(0, total, self.batch_size)]
        return [i for batch in batches[self.rank::self.world_size] for i in batch]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        from torch.utils.data import DataLoader

        if self.offset >= self.examples_per_rank:
            self.epoch, self.offset = self.epoch + 1, 0
        epoch = self.epoch
        order = self.order(epoch)[self.offset:]
        keys = [(epoch, i) for i in order] if self.pass_epoch else order
        # a generator of its own: creating the iterator must not draw from the global RNG (dropout's), or a
        # resumed run, which creates it at a different moment, would drift from an uninterrupted one
        from litgpt.data.mlm import derive_seed

        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -2))
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=keys, collate_fn=self.collate_fn,
                            num_workers=self.num_workers, generator=generator)
        for batch in loader:
            self.offset += len(batch["input_ids"])
            yield batch
        self.epoch, self.offset = epoch + 1, 0

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "num_examples": len(self.indices),
                "world_size": self.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("num_examples") != len(self.indices) or state.get("world_size") != self.world_size:
            raise UsageError(f"cannot resume the data position: the checkpoint saw {state.get('num_examples')} examples"
                             f" on {state.get('world_size')} rank(s), now there are {len(self.indices)} on "
                             f"{self.world_size}; resume with the same data and number of devices")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


# ---- reading text files ---------------------------------------------------------------------------------------
def find_text_files(path: Union[str, Path], flag: str = "") -> List[Path]:
    """`path` itself if it is a `.txt`/`.jsonl` file, else those files under it (recursive, sorted, hidden skipped)."""
    path = Path(path)
    where = f"{flag} {path}".strip()
    if not path.exists():
        raise UsageError(f"{where}: not found")
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise UsageError(f"{where}: expected a .txt or .jsonl file, or a folder of them")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise UsageError(f"{where}: no .txt or .jsonl files in this folder")
    return files


def read_text_lines(path: Union[str, Path]) -> List[str]:
    """All lines of a small UTF-8 text file; a missing, binary, empty or non-UTF-8 file is a UsageError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as ex:
        raise UsageError(f"{path}: cannot read ({ex.strerror or ex.__class__.__name__})") from None
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise UsageError(f"{path}:{line}: NUL byte; this looks like a binary file, expected UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as ex:
        line = data.count(b"\n", 0, ex.start) + 1
        raise UsageError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[ex.start]:02x}); expected UTF-8 text") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise UsageError(f"{path}: empty file, expected one text per line")
    return text.splitlines()


def iter_units(path: Union[str, Path], unit: str = "doc", errors: str = "strict", start: int = 0,
               end: Optional[int] = None, first_line: int = 1, max_chars: Optional[int] = None,
               ) -> Iterator[Tuple[int, int, str, bool]]:
    """Streams the texts of a `.txt` or `.jsonl` file as `(offset, line, piece, last)` tuples, in bounded memory.

    A unit is one text: with `unit="doc"` a `.txt` document is a run of non-blank lines (blank lines separate
    documents, the fairseq/RoBERTa convention), joined with "\\n"; with `unit="line"` each non-blank line is one.
    In `.jsonl` each record's `text` is one unit either way. Lines are stripped. A unit arrives as one or more
    pieces (long lines come in slices of about 1 MiB), the last one with `last=True`; `offset` and `line` are where
    the unit starts. `max_chars` cuts every unit to that many characters (the rest is read past, not kept).
    `start`/`end` restrict reading to the lines that start in that byte range (it must begin at a unit boundary).
    `errors="strict"` makes invalid UTF-8 a UsageError naming file and line; `"replace"` substitutes U+FFFD.
    """
    path = Path(path)
    jsonl = path.suffix == ".jsonl"
    if unit not in ("doc", "line"):
        raise ValueError(f"unit must be 'doc' or 'line', got {unit!r}")
    try:
        fp = open(path, "rb")
    except OSError as ex:
        raise UsageError(f"{path}: cannot read ({ex.strerror or ex.__class__.__name__})") from None
    with fp:
        fp.seek(start)
        pos, line_no = start, first_line
        state = _UnitState(unit="line" if jsonl else unit, max_chars=max_chars)
        while end is None or pos < end:
            line_start = pos
            chunk = fp.readline(READ_BYTES)
            if not chunk:
                break
            if pos == 0 and chunk.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                pos, chunk = 3, chunk[3:]
            decoder = codecs.getincrementaldecoder("utf-8")(errors)
            if jsonl:
                parts = [chunk]
                while not parts[-1].endswith(b"\n"):
                    more = fp.readline(READ_BYTES)
                    if not more:
                        break
                    parts.append(more)
                    if sum(map(len, parts)) > MAX_JSONL_LINE_BYTES:
                        raise UsageError(f"{path}:{line_no}: JSON line longer than {MAX_JSONL_LINE_BYTES >> 20} MiB")
                raw = b"".join(parts)
                pos += len(raw)
                text = _decode(decoder, raw, True, path, line_no)
                record_text = _parse_jsonl(text, path, line_no)
                if record_text is not None:
                    yield from state.add_line(line_start, line_no, [record_text])
                line_no += 1
                continue
            pieces: List[str] = []
            while True:
                pos += len(chunk)
                done = chunk.endswith(b"\n")
                text = _decode(decoder, chunk, done, path, line_no)
                pieces.append(text)
                if done:
                    break
                # a line longer than READ_BYTES: hand its pieces on as they come
                yield from state.add_partial(line_start, line_no, pieces)
                pieces = []
                chunk = fp.readline(READ_BYTES)
                if not chunk:
                    text = _decode(decoder, b"", True, path, line_no)
                    pieces.append(text)
                    break
            yield from state.add_line(line_start, line_no, pieces)
            line_no += 1
        yield from state.finish()


def _decode(decoder, data: bytes, final: bool, path: Path, line_no: int) -> str:
    if b"\x00" in data:
        raise UsageError(f"{path}:{line_no}: NUL byte; this looks like a binary file, expected UTF-8 text")
    try:
        return decoder.decode(data, final)
    except UnicodeDecodeError as ex:
        raise UsageError(f"{path}:{line_no}: invalid UTF-8 (byte 0x{ex.object[ex.start]:02x}); expected UTF-8 text"
                         ) from None


def _parse_jsonl(text: str, path: Path, line_no: int) -> Optional[str]:
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as ex:
        raise UsageError(f"{path}:{line_no}: not valid JSON ({ex.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UsageError(f"{path}:{line_no}: expected a JSON object with a string 'text' field")
    return record["text"]


class _UnitState:
    """Turns the pieces of stripped lines into units (documents or lines); whitespace is held back until it is
    known to sit between content, so stripping works on lines that arrive in slices."""

    def __init__(self, unit: str, max_chars: Optional[int]) -> None:
        self.unit = unit
        self.max_chars = max_chars
        self.open: Optional[Tuple[int, int]] = None  # (offset, line) of the unit being emitted
        self.emitted = 0
        self.line_has_content = False
        self.pending_ws = ""
        self.pending_out: Optional[str] = None

    def _emit(self, offset: int, line_no: int, text: str) -> Iterator[Tuple[int, int, str, bool]]:
        if not text:
            return
        if self.open is None:
            self.open = (offset, line_no)
            self.emitted = 0
        if self.max_chars is not None:
            text = text[: max(0, self.max_chars - self.emitted)]
            if not text:
                return
        self.emitted += len(text)
        # keep one piece back so the unit's final piece can carry last=True
        if self.pending_out is not None:
            yield self.open[0], self.open[1], self.pending_out, False
        self.pending_out = text

    def _close(self) -> Iterator[Tuple[int, int, str, bool]]:
        if self.open is not None:
            yield self.open[0], self.open[1], self.pending_out or "", True
        self.open, self.pending_out, self.emitted = None, None, 0

    def add_partial(self, offset: int, line_no: int, pieces: List[str]) -> Iterator[Tuple[int, int, str, bool]]:
        for piece in pieces:
            if not self.line_has_content:
                piece = piece.lstrip()
                if not piece:
                    continue
                if self.open is not None and self.unit == "doc":
                    piece = "\n" + piece
                self.line_has_content = True
                self.pending_ws = ""
            content = self.pending_ws + piece
            core = content.rstrip()
            self.pending_ws = content[len(core):][:READ_BYTES]
            start = self.open if self.open is not None else (offset, line_no)
            yield from self._emit(start[0], start[1], core)

    def add_line(self, offset: int, line_no: int, pieces: List[str]) -> Iterator[Tuple[int, int, str, bool]]:
        yield from self.add_partial(offset, line_no, pieces)
        had_content = self.line_has_content
        self.line_has_content = False
        self.pending_ws = ""
        if self.unit == "line" or not had_content:
            yield from self._close()

    def finish(self) -> Iterator[Tuple[int, int, str, bool]]:
        yield from self._close()


def plan_ranges(path: Union[str, Path], unit: str = "doc", range_bytes: Optional[int] = None
                ) -> List[Tuple[int, int, int]]:
    """Cuts a file into `(start, end, first_line)` byte ranges of about `range_bytes` that begin at unit boundaries,
    so several workers can read one big file with `iter_units(start=, end=, first_line=)`. Only a few lines around
    each cut are read, plus a fast newline count for the line numbers; nothing is decoded or validated here."""
    path = Path(path)
    size = path.stat().st_size
    if not range_bytes or size <= range_bytes:
        return [(0, size, 1)]
    if path.suffix == ".jsonl":
        unit = "line"
    cuts = [0]
    with open(path, "rb") as fp:
        target = range_bytes
        while target < size:
            cut, searched_to = _next_boundary(fp, target, unit, limit=64 * range_bytes)
            if cut is not None and cuts[-1] < cut < size:
                cuts.append(cut)
            target = max(cut or 0, searched_to) + range_bytes
        lines = [1]
        for a, b in zip(cuts, cuts[1:]):
            lines.append(lines[-1] + _count_newlines(fp, a, b))
    return list(zip(cuts, cuts[1:] + [size], lines))


def _read_line(fp) -> Tuple[bool, bool]:
    """Reads one line in slices: (whether it had any bytes, whether it is blank)."""
    blank, got = True, False
    while True:
        chunk = fp.readline(READ_BYTES)
        if not chunk:
            return got, blank
        got = True
        if blank and chunk.decode("utf-8", "replace").strip():
            blank = False
        if chunk.endswith(b"\n"):
            return got, blank


def _next_boundary(fp, pos: int, unit: str, limit: int) -> Tuple[Optional[int], int]:
    """The first unit boundary at or after `pos` (None if none within `limit` bytes), and how far it looked."""
    fp.seek(pos - 1)
    _read_line(fp)  # the rest of the line holding byte pos - 1: the next line starts at or after pos
    if unit == "line":
        return fp.tell(), fp.tell()
    while fp.tell() - pos < limit:
        got, blank = _read_line(fp)
        if not got:
            return None, fp.tell()
        if blank:  # the line after a blank line starts a document
            return fp.tell(), fp.tell()
    return None, fp.tell()


def _count_newlines(fp, start: int, end: int) -> int:
    fp.seek(start)
    count, left = 0, end - start
    while left > 0:
        block = fp.read(min(left, 16 << 20))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def split_for_tokenizer(text: str, max_chars: int) -> Tuple[str, str]:
    """Splits a long text in two where byte-level BPE tokenizes both halves exactly as it tokenizes the whole:
    before a single whitespace character that has non-space on both sides (GPT-2's pre-tokenizer never joins
    across that point). Falls back to a hard cut when the last 64K characters before `max_chars` have none."""
    if len(text) <= max_chars:
        return text, ""
    for i in range(max_chars - 1, max(0, max_chars - 65536), -1):
        if text[i].isspace() and not text[i - 1].isspace() and not text[i + 1].isspace():
            return text[:i], text[i:]
    return text[:max_chars], text[max_chars:]

"""Reading UTF-8 text files: small ones whole (`read_text`), big `.txt` / `.jsonl` corpora streamed in bounded
memory (`iter_units`), and cut into byte ranges so several workers can share one file (`plan_ranges`).

Every reader checks bytes the same way (`decode_utf8`): a NUL byte or invalid UTF-8 is a UsageError naming the file
and the line, and a UTF-8 byte-order mark is dropped.
"""

import codecs
import json
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from litgpt.utils import UsageError

TEXT_SUFFIXES = (".txt", ".jsonl")
# pieces of very long lines are read and handed on in slices of this many bytes, so memory stays bounded
READ_BYTES = 1 << 20
# a `.jsonl` record must be parsed whole; longer lines are refused instead of filling memory
MAX_JSONL_LINE_BYTES = 256 << 20


def decode_utf8(data: bytes, path: Path, first_line: int = 1, decoder: Optional[codecs.IncrementalDecoder] = None,
                final: bool = True) -> str:
    """`data` as text; `first_line` is the line number where `data` starts, `decoder` carries a line read in slices."""
    if b"\x00" in data:
        line = first_line + data.count(b"\n", 0, data.index(b"\x00"))
        raise UsageError(f"{path}:{line}: NUL byte; this looks like a binary file, expected UTF-8 text")
    try:
        return decoder.decode(data, final) if decoder is not None else data.decode("utf-8")
    except UnicodeDecodeError as ex:
        line = first_line + ex.object.count(b"\n", 0, ex.start)
        raise UsageError(f"{path}:{line}: invalid UTF-8 (byte 0x{ex.object[ex.start]:02x}); expected UTF-8 text"
                         ) from None


def _cannot_read(path: Path, ex: OSError) -> UsageError:
    return UsageError(f"{path}: cannot read ({ex.strerror or ex.__class__.__name__})")


# ---- small files, read whole ------------------------------------------------------------------------------------
def read_text(path: Union[str, Path]) -> str:
    """The whole of a UTF-8 file, without its byte-order mark."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as ex:
        raise _cannot_read(path, ex) from None
    return decode_utf8(data, path).removeprefix("\ufeff")


def read_text_lines(path: Union[str, Path]) -> List[str]:
    """All lines of a small UTF-8 text file; an empty (or blank) file is a UsageError."""
    text = read_text(path)
    if not text.strip():
        raise UsageError(f"{path}: empty file, expected one text per line")
    return text.splitlines()


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


# ---- big files, streamed ----------------------------------------------------------------------------------------
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
        raise _cannot_read(path, ex) from None
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
                record_text = _parse_jsonl(decode_utf8(raw, path, line_no, decoder), path, line_no)
                if record_text is not None:
                    yield from state.add_line(line_start, line_no, [record_text])
                line_no += 1
                continue
            pieces: List[str] = []
            while True:
                pos += len(chunk)
                done = chunk.endswith(b"\n")
                pieces.append(decode_utf8(chunk, path, line_no, decoder, final=done))
                if done:
                    break
                # a line longer than READ_BYTES: hand its pieces on as they come
                yield from state.add_partial(line_start, line_no, pieces)
                pieces = []
                chunk = fp.readline(READ_BYTES)
                if not chunk:
                    pieces.append(decode_utf8(b"", path, line_no, decoder))
                    break
            yield from state.add_line(line_start, line_no, pieces)
            line_no += 1
        yield from state.finish()


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


# ---- cutting big files for parallel readers ---------------------------------------------------------------------
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


def read_label_names(path: Path) -> List[str]:
    """`labels.txt`: one class name per line, in id order."""
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise UsageError(f"{path}: no class names; expected one name per line, in label id order")
    return names

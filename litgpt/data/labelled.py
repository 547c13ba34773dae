"""Reading labelled text: the files of a classification data folder, checked row by row into `Split`s.

Files in a data folder, per split (the first one found wins):
    train.json / train.jsonl / train.csv / train.tsv   and   test.json / test.jsonl / test.csv / test.tsv

- `.json`: a list of `{"text": ..., "label": ...}` records (a file of one object per line is read as JSON Lines);
- `.jsonl`: one such record per line;
- `.csv` / `.tsv`: a header row naming a `text` (or `sentence`) and a `label` column; other columns are ignored.
  TSV is read without quoting, as GLUE ships it (`read_table` also reads GLUE's files, `litgpt.data.glue`).
- Sentence pairs: a second text column, found by name (`text`/`text_b`, `sentence1`/`sentence2`, `question`/
  `sentence`, `premise`/`hypothesis`, `question1`/`question2`) or named with `text_columns=["a", "b"]`. Every row
  of a pair file needs both texts.
- AG News (`agnews=True`): the JSONL layout above with labels 0-3, or the original `train.csv`/`test.csv` without
  a header: class index 1-4, title, description -> text = "title description", label = index - 1.

Labels (a `label`, `labels` or `score` column) depend on the problem type:
- `single_label`: one class per example, an id (`0`, `"1"`) or a name;
- `regression`: one number per example;
- `multi_label`: a list of classes per example (a JSON list; in CSV/TSV a comma-separated cell), ids or names; an
  example may have none (`[]`).

Every problem is a `UsageError` naming the file and the row. Names become ids in `classification.assign_labels`.
"""

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from litgpt.data.agnews import AGNEWS_LABELS, read_parquet_split
from litgpt.data.readers import read_text
from litgpt.utils import UsageError

SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
TEXT_KEYS = ("text", "sentence")
# a second text column is found by these names (first and second), unless `text_columns` names both
PAIR_KEYS = (("text", "text_b"), ("sentence1", "sentence2"), ("question", "sentence"), ("premise", "hypothesis"),
             ("question1", "question2"))
LABEL_KEYS = ("label", "labels", "score")
PROBLEM_TYPES = ("single_label", "regression", "multi_label")

Label = Union[int, str, float, List[Union[int, str]]]
Record = Tuple[str, str, Optional[str], Label]  # (where in the file, text, second text or None, raw label)


@dataclass
class Split:
    """One split read from disk; `rows[i]` says where example i came from ("record 3", "line 7")."""

    path: Path
    texts: List[str]
    raw_labels: List[Label]
    rows: List[str]
    labels: List[Any] = field(default_factory=list)  # class ids, floats (regression) or lists of ids (multi-label)
    texts_b: Optional[List[str]] = None  # the second texts of a pair file

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        return f"{self.path}: {self.rows[i]}"


# ---- finding and reading files --------------------------------------------------------------------------------
def parquet_split(path: Path) -> Split:
    texts, labels = read_parquet_split(path)
    return Split(path=path, texts=texts, raw_labels=labels, rows=[f"row {i}" for i in range(1, len(texts) + 1)])


def find_split_file(data_dir: Path, split: str, suffixes: Sequence[str] = SUFFIXES) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir}: not a folder")
    names = [f"{split}{suffix}" for suffix in suffixes]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise UsageError(f"--data_dir {data_dir}: no {split} split; looked for {', '.join(names)}")


@dataclass(frozen=True)
class Columns:
    """Which fields of a file's records hold the text(s) and the label, and what kind of label it is."""

    text: str
    text_b: Optional[str]
    label: str
    problem_type: str = "single_label"

    def expected(self) -> str:
        texts = f"'{self.text}' and '{self.text_b}' (a pair file)" if self.text_b else f"'{self.text}'"
        return f"every record needs {texts} and '{self.label}'"


def find_columns(keys: Sequence[str], text_columns: Optional[Sequence[str]], problem_type: str,
                 where: str) -> Columns:
    """The columns among a file's field names: `text_columns` when given, else a known pair, else one text."""
    keys = list(keys)
    if text_columns:
        missing = [c for c in text_columns if c not in keys]
        if missing:
            raise UsageError(f"{where}: no {missing[0]!r} column for --text_columns {','.join(text_columns)}; "
                             f"found {', '.join(map(str, keys[:10]))}")
        text, text_b = text_columns[0], (text_columns[1] if len(text_columns) > 1 else None)
    else:
        text, text_b = next(((a, b) for a, b in PAIR_KEYS if a in keys and b in keys),
                            (next((k for k in TEXT_KEYS if k in keys), None), None))
    label = next((k for k in LABEL_KEYS if k in keys), None)
    if text is None or label is None:
        raise UsageError(f"{where}: expected a 'text' and a 'label' field (or --text_columns), found "
                         f"{', '.join(map(str, keys[:10])) or 'none'}")
    return Columns(text, text_b, label, problem_type)


def _parse_label(value: Any, where: str) -> Label:
    if isinstance(value, bool):
        raise UsageError(f"{where}: label {value!r} is a boolean; expected a class id or a class name")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        s = value.strip()
        return int(s) if re.fullmatch(r"[+-]?\d+", s) else s
    raise UsageError(f"{where}: label {value!r} is not a class id or a class name")


def _parse_score(value: Any, where: str) -> float:
    try:
        score = float(value) if not isinstance(value, bool) and isinstance(value, (int, float, str)) else None
    except ValueError:
        score = None
    if score is None or not math.isfinite(score):
        raise UsageError(f"{where}: label {value!r} is not a number; --problem_type regression needs a numeric "
                         "label on every row")
    return score


def _parse_label_list(value: Any, where: str) -> List[Union[int, str]]:
    if isinstance(value, str):  # a CSV/TSV cell: "sports,politics" or "0,3"
        value = [part for part in value.split(",") if part.strip()] if value.strip() else None
    if not isinstance(value, list):
        raise UsageError(f"{where}: label {value!r} is not a list of classes; --problem_type multi_label expects a "
                         'list per example, e.g. ["sports", "politics"] (in CSV/TSV: "sports,politics")')
    return [_parse_label(v, where) for v in value]


def parse_label(value: Any, where: str, problem_type: str) -> Label:
    if problem_type == "regression":
        return _parse_score(value, where)
    if problem_type == "multi_label":
        return _parse_label_list(value, where)
    return _parse_label(value, where)


def _record(obj: Any, where: str, columns: Columns) -> Tuple[str, Optional[str], Label]:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected an object with '{columns.text}' and '{columns.label}', found "
                         f"{type(obj).__name__}")
    texts = []
    for name in (columns.text, columns.text_b):
        if name is None:
            texts.append(None)
            continue
        text = obj.get(name)
        if not isinstance(text, str) or not text.strip():
            what = (f"no {name!r}" if text is None else f"an empty {name!r}" if isinstance(text, str)
                    else f"a {type(text).__name__} {name!r}")
            raise UsageError(f"{where}: record has {what}; {columns.expected()}")
        texts.append(text)
    if obj.get(columns.label) is None:
        raise UsageError(f"{where}: record has no {columns.label!r}; {columns.expected()}")
    return texts[0], texts[1], parse_label(obj[columns.label], where, columns.problem_type)


def read_rows(path: Path) -> List[Tuple[str, Any]]:
    """Every record of a `.json` (a list), `.jsonl` or `.csv`/`.tsv` (a header row names the fields) file, as
    (where in the file, the record: a dict unless the file is malformed)."""
    text = read_text(path)
    if path.suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, text)
        first = next(rows, None)
        header = [h.strip() for h in first[1]] if first else []
        out = []
        for line, row in rows:
            if len(row) != len(header):
                raise UsageError(f"{path}: line {line}: {len(row)} columns, the header has {len(header)}")
            out.append((f"line {line}", dict(zip(header, row))))
        return out
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as ex:
            raise UsageError(f"{path}:{ex.lineno}: not valid JSON ({ex.msg})") from None
        if not isinstance(records, list):
            raise UsageError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
        return [(f"record {i}", obj) for i, obj in enumerate(records, 1)]
    return jsonl_records(path, text)


def jsonl_records(path: Path, text: str) -> List[Tuple[str, Any]]:
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"line {i}", json.loads(line)))
            except json.JSONDecodeError as ex:
                raise UsageError(f"{path}:{i}: not valid JSON ({ex.msg})") from None
    return records


def _json_columns(path: Path, records: List[Any], text_columns, problem_type: str) -> Columns:
    keys: Dict[str, None] = {}  # the union of the records' fields, in order: a field on only some rows is missing
    for obj in records:
        if isinstance(obj, dict):
            keys.update(dict.fromkeys(obj))
    return find_columns(list(keys), text_columns, problem_type, str(path))


def _read_json(path: Path, text: str, text_columns, problem_type: str) -> Iterator[Record]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as ex:
        if ex.msg == "Extra data" and text.lstrip().startswith("{"):  # one object per line, as AG News often comes
            yield from _read_jsonl(path, text, text_columns, problem_type)
            return
        raise UsageError(f"{path}:{ex.lineno}: not valid JSON ({ex.msg})") from None
    if not isinstance(records, list):
        raise UsageError(f"{path}: expected a JSON list of {{\"text\", \"label\"}} records, "
                         f"found {type(records).__name__}")
    columns = _json_columns(path, records, text_columns, problem_type) if records else None
    for i, obj in enumerate(records, 1):
        row = f"record {i}"
        yield (row, *_record(obj, f"{path}: {row}", columns))


def _read_jsonl(path: Path, text: str, text_columns, problem_type: str) -> Iterator[Record]:
    records = jsonl_records(path, text)
    columns = _json_columns(path, [obj for _, obj in records], text_columns, problem_type) if records else None
    for row, obj in records:
        yield (row, *_record(obj, f"{path}: {row}", columns))


def _csv_rows(path: Path, text: str) -> Iterator[Tuple[int, List[str]]]:
    tsv = path.suffix == ".tsv"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    line = 1
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield line, row
            line = reader.line_num + 1
    except csv.Error as ex:
        raise UsageError(f"{path}:{reader.line_num}: not valid CSV ({ex})") from None


def read_table(path: Path, text: str, columns: Optional[Columns], text_columns=None, problem_type: str = "single_label",
               header: Optional[List[str]] = None) -> Iterator[Record]:
    """CSV/TSV rows as records. The first row is the header unless `header` names the columns (a file without one,
    as GLUE's CoLA); `columns` fixes the fields to read, else they are found in the header."""
    rows = _csv_rows(path, text)
    if header is None:
        first = next(rows, None)
        if first is None:
            return
        header = [h.strip() for h in first[1]]
        where = f"{path}:{first[0]}"
    else:
        where = str(path)
    if columns is not None:
        missing = [c for c in (columns.text, columns.text_b, columns.label) if c is not None and c not in header]
        if missing:
            raise UsageError(f"{where}: no {missing[0]!r} column; found {', '.join(header[:12])}")
    else:
        lowered = [h.lower() for h in header]
        wanted = [c.lower() for c in text_columns] if text_columns else None
        try:
            found = find_columns(lowered, wanted, problem_type, where)
        except UsageError as ex:
            raise UsageError(f"{ex}; for the original AG News CSV (no header) pass --use_agnews") from None
        header = lowered
        columns = found
    for line, row in rows:
        row_where = f"{path}: line {line}"
        if len(row) != len(header):
            raise UsageError(f"{row_where}: {len(row)} columns, the header has {len(header)}")
        yield (f"line {line}", *_record(dict(zip(header, row)), row_where, columns))


def _read_agnews_csv(path: Path, text: str) -> Iterator[Tuple[str, str, Label]]:
    for n, (line, row) in enumerate(_csv_rows(path, text)):
        where = f"{path}: line {line}"
        if n == 0 and row and not row[0].strip().lstrip("+-").isdigit():
            continue  # a "Class Index,Title,Description" header, as some mirrors add
        if len(row) != 3:
            raise UsageError(f"{where}: {len(row)} columns; AG News CSV rows are: class index (1-4), title, "
                             "description")
        index = _parse_label(row[0], where)
        if not isinstance(index, int) or not 1 <= index <= len(AGNEWS_LABELS):
            raise UsageError(f"{where}: class index {row[0]!r}; AG News CSV uses 1-4 (World, Sports, Business, "
                             "Sci/Tech)")
        title, description = row[1].strip(), row[2].strip()
        body = " ".join(part for part in (title, description) if part)
        if not body:
            raise UsageError(f"{where}: record has an empty text (title and description)")
        yield f"line {line}", body, index - 1


def _has_text_label_header(path: Path, text: str) -> bool:
    first = next(_csv_rows(path, text), None)
    header = {h.strip().lower() for h in first[1]} if first else set()
    return bool(header & set(TEXT_KEYS)) and bool(header & set(LABEL_KEYS))


def read_split(path: Path, agnews: bool = False, text_columns: Optional[Sequence[str]] = None,
               problem_type: str = "single_label") -> Split:
    text = read_text(path)
    if path.suffix == ".json":
        records = _read_json(path, text, text_columns, problem_type)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path, text, text_columns, problem_type)
    elif agnews and path.suffix == ".csv" and not _has_text_label_header(path, text):
        records = ((row, body, None, label) for row, body, label in _read_agnews_csv(path, text))
    else:
        records = read_table(path, text, None, text_columns, problem_type)
    return collect_split(path, records)


def collect_split(path: Path, records: Iterable[Record]) -> Split:
    split = Split(path=path, texts=[], raw_labels=[], rows=[], texts_b=[])
    for row, body, second, label in records:
        split.rows.append(row)
        split.texts.append(body)
        split.texts_b.append(second)
        split.raw_labels.append(label)
    if not split.texts:
        raise UsageError(f"{path}: no examples; expected labelled records with 'text' and 'label'")
    if split.texts_b[0] is None:
        split.texts_b = None
    return split

"""Labelled text for sequence classification: `ClassificationDataModule`, its file readers, label mapping, batches.

Files in a data folder, per split (the first one found wins):
    train.json / train.jsonl / train.csv / train.tsv   and   test.json / test.jsonl / test.csv / test.tsv

- `.json`: a list of `{"text": ..., "label": ...}` records (a file of one object per line is read as JSON Lines);
- `.jsonl`: one such record per line;
- `.csv` / `.tsv`: a header row naming a `text` (or `sentence`) and a `label` column; other columns are ignored.
  TSV is read without quoting, as GLUE ships it.
- AG News (`use_agnews=True`): the JSONL layout above with labels 0-3, or the original `train.csv`/`test.csv`
  without a header: class index 1-4, title, description -> text = "title description", label = index - 1.

Labels are ids (`0`, `"1"`) or names. Names become ids through a given list of names (id order), else the
sorted unique names of the train split. An optional `labels.txt` beside the splits (one class name per line, in id
order) names the classes, as `--label_names` does. Every problem is a `UsageError` naming the file and the row.

How the finetuning loop uses it (the pretraining modules' contract, see `litgpt.data.base`)::

    data = ClassificationDataModule(data_dir, num_labels)   # reads and checks both splits now
    data.connect(tokenizer, batch_size, max_seq_length, seed=..., rank=..., world_size=...)
    data.setup()                                            # tokenizes both splits
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    for epoch in ...:
        data.set_epoch(epoch)                               # the epoch's shuffle
        for batch in train_loader: ...                      # dicts of input_ids, attention_mask, labels
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader

from litgpt.data.agnews import AGNEWS_LABELS, check_agnews_labels, fetch_agnews, read_parquet_split
from litgpt.data.base import DataModule, EpochBatches, check_batching
from litgpt.data.readers import read_label_names, read_text
from litgpt.utils import UsageError, pad_right

SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
TEXT_KEYS = ("text", "sentence")
LABEL_KEYS = ("label",)

Label = Union[int, str]


@dataclass
class Split:
    """One split read from disk; `rows[i]` says where example i came from ("record 3", "line 7")."""

    path: Path
    texts: List[str]
    raw_labels: List[Label]
    rows: List[str]
    labels: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        return f"{self.path}: {self.rows[i]}"


@dataclass
class ClassificationDataModule(DataModule):
    """The `train` and `test` splits of a folder of labelled text (layouts in the module docstring). Both are read
    and checked on creation, so bad data fails before any other work; `setup()` tokenizes them.

    Args:
        data_dir: Folder holding the train and test splits (.json, .jsonl, .csv or .tsv).
        num_labels: Number of classes.
        use_agnews: Read AG News (4 classes), also in its original header-less CSV.
        label_names: Class names in id order, mapping name labels to ids.
        num_workers: DataLoader worker processes.
    """

    data_dir: Path
    num_labels: int = 2
    use_agnews: bool = False
    label_names: Optional[List[str]] = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        label_names, names_from = self.label_names, "--label_names"
        if self.use_agnews:
            if self.num_labels != len(AGNEWS_LABELS):
                raise UsageError(f"--use_agnews: AG News has {len(AGNEWS_LABELS)} classes, got --num_labels "
                                 f"{self.num_labels}; pass --num_labels {len(AGNEWS_LABELS)}")
            label_names = label_names or AGNEWS_LABELS
        elif label_names is None and (self.data_dir / "labels.txt").is_file():
            names_from = str(self.data_dir / "labels.txt")
            label_names = read_label_names(self.data_dir / "labels.txt")
        if self.use_agnews and not any((self.data_dir / f"train{suffix}").is_file() for suffix in SUFFIXES):
            self.train, self.test = (parquet_split(path) for path in fetch_agnews().values())
        else:
            self.train = read_split(find_split_file(self.data_dir, "train"), agnews=self.use_agnews)
            self.test = read_split(find_split_file(self.data_dir, "test"), agnews=self.use_agnews)
        self.id2label = assign_labels(self.train, self.test, self.num_labels, label_names, names_from=names_from)
        if self.use_agnews:
            check_agnews_labels(self.train.labels, str(self.train.path))
        self._train_set: Optional[TokenizedSplit] = None
        self._test_set: Optional[TokenizedSplit] = None
        self._train_loader: Optional[DataLoader] = None

    @property
    def fingerprint(self) -> str:
        """A hash of the texts and label ids of both splits; a resumed run checks it sees the same data."""
        import hashlib

        h = hashlib.sha256()
        for split in (self.train, self.test):
            for text, label in zip(split.texts, split.labels):
                h.update(f"{label}\t{text}\n".encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    def connect(self, tokenizer: Any, batch_size: int = 1, max_seq_length: Optional[int] = None, seed: int = 42,
                rank: int = 0, world_size: int = 1, eval_batch_size: Optional[int] = None) -> None:
        """Hands over what the data needs from the run; `eval_batch_size` defaults to twice `batch_size`."""
        check_batching(batch_size, max_seq_length, rank, world_size)
        check_batching(eval_batch_size or 2 * batch_size, None, rank, world_size)
        self.tokenizer = tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or 2 * batch_size
        self.max_seq_length = max_seq_length or getattr(tokenizer, "model_max_length", None) or 512
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._train_loader = None

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        self._train_set = tokenize_split(self.train, self.tokenizer, self.max_seq_length)
        self._test_set = tokenize_split(self.test, self.tokenizer, self.max_seq_length)
        self._train_loader = None

    def _make_train_loader(self) -> DataLoader:
        if self._train_set is None:
            raise RuntimeError("ClassificationDataModule: call setup() before train_dataloader()")
        return make_dataloader(self._train_set, self.batch_size, self.tokenizer.pad_id, shuffle=True, seed=self.seed,
                               rank=self.rank, world_size=self.world_size, num_workers=self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's shuffle of the train loader."""
        self.train_dataloader().batch_sampler.set_epoch(epoch)

    def val_dataloader(self) -> DataLoader:
        """The test split, longest first, each rank its share."""
        if self._test_set is None:
            raise RuntimeError("ClassificationDataModule: call setup() before val_dataloader()")
        return make_dataloader(self._test_set, self.eval_batch_size, self.tokenizer.pad_id, shuffle=False,
                               rank=self.rank, world_size=self.world_size, num_workers=self.num_workers)

    def state_dict(self) -> Dict[str, Any]:
        """No mid-epoch position: finetuning resumes at an epoch boundary, with `set_epoch`."""
        return {"module": type(self).__name__, "loader": None}


# ---- finding and reading files --------------------------------------------------------------------------------
def parquet_split(path: Path) -> Split:
    texts, labels = read_parquet_split(path)
    return Split(path=path, texts=texts, raw_labels=labels, rows=[f"row {i}" for i in range(1, len(texts) + 1)])


def find_split_file(data_dir: Path, split: str) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir}: not a folder")
    names = [f"{split}{suffix}" for suffix in SUFFIXES]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise UsageError(f"--data_dir {data_dir}: no {split} split; looked for {', '.join(names)}")


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


def _record(obj: Any, where: str) -> Tuple[str, Label]:
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected an object with 'text' and 'label', found {type(obj).__name__}")
    text = next((obj[k] for k in TEXT_KEYS if k in obj), None)
    if not isinstance(text, str) or not text.strip():
        what = ("no 'text'" if text is None else "an empty text" if isinstance(text, str)
                else f"a {type(text).__name__} text")
        raise UsageError(f"{where}: record has {what}; expected {{\"text\": ..., \"label\": ...}}")
    if "label" not in obj or obj["label"] is None:
        raise UsageError(f"{where}: record has no 'label'; expected {{\"text\": ..., \"label\": ...}}")
    return text, _parse_label(obj["label"], where)


def _read_json(path: Path, text: str) -> Iterator[Tuple[str, str, Label]]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as ex:
        if ex.msg == "Extra data" and text.lstrip().startswith("{"):  # one object per line, as AG News often comes
            yield from _read_jsonl(path, text)
            return
        raise UsageError(f"{path}:{ex.lineno}: not valid JSON ({ex.msg})") from None
    if not isinstance(records, list):
        raise UsageError(f"{path}: expected a JSON list of {{\"text\", \"label\"}} records, "
                         f"found {type(records).__name__}")
    for i, obj in enumerate(records, 1):
        row = f"record {i}"
        yield (row, *_record(obj, f"{path}: {row}"))


def _read_jsonl(path: Path, text: str) -> Iterator[Tuple[str, str, Label]]:
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as ex:
            raise UsageError(f"{path}:{i}: not valid JSON ({ex.msg})") from None
        row = f"line {i}"
        yield (row, *_record(obj, f"{path}: {row}"))


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


def _read_csv(path: Path, text: str) -> Iterator[Tuple[str, str, Label]]:
    rows = _csv_rows(path, text)
    first = next(rows, None)
    if first is None:
        return
    header = [h.strip().lower() for h in first[1]]
    text_col = next((header.index(k) for k in TEXT_KEYS if k in header), None)
    label_col = next((header.index(k) for k in LABEL_KEYS if k in header), None)
    if text_col is None or label_col is None:
        raise UsageError(f"{path}:{first[0]}: expected a header row with 'text' and 'label' columns, found "
                         f"{first[1][:4]}; for the original AG News CSV (no header) pass --use_agnews")
    for line, row in rows:
        where = f"{path}: line {line}"
        if len(row) != len(header):
            raise UsageError(f"{where}: {len(row)} columns, the header has {len(header)}")
        yield (f"line {line}", *_record({"text": row[text_col], "label": row[label_col]}, where))


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


def read_split(path: Path, agnews: bool = False) -> Split:
    text = read_text(path)
    if path.suffix == ".json":
        records = _read_json(path, text)
    elif path.suffix == ".jsonl":
        records = _read_jsonl(path, text)
    elif agnews and path.suffix == ".csv" and not _has_text_label_header(path, text):
        records = _read_agnews_csv(path, text)
    else:
        records = _read_csv(path, text)
    split = Split(path=path, texts=[], raw_labels=[], rows=[])
    for row, body, label in records:
        split.rows.append(row)
        split.texts.append(body)
        split.raw_labels.append(label)
    if not split.texts:
        raise UsageError(f"{path}: no examples; expected labelled records with 'text' and 'label'")
    return split


# ---- labels ---------------------------------------------------------------------------------------------------
def assign_labels(train: Split, test: Split, num_labels: int, label_names: Optional[Sequence[str]] = None,
                  flag_hint: str = "", names_from: str = "--label_names") -> Dict[int, str]:
    """Turns raw labels into ids in [0, num_labels) and returns id2label."""
    names = list(label_names) if label_names else None
    if names is None and any(isinstance(raw, str) for raw in train.raw_labels):
        if not all(isinstance(raw, str) for raw in train.raw_labels):
            i = next(i for i, raw in enumerate(train.raw_labels) if isinstance(raw, int))
            raise UsageError(f"{train.where(i)}: label {train.raw_labels[i]!r} is an id among class names, and there "
                             "is no mapping between them; use names or ids throughout, or pass --label_names")
        names = sorted(set(train.raw_labels))
    if names is not None:
        if len(set(names)) != len(names):
            raise UsageError(f"{names_from} {names}: names must be unique")
        if len(names) != num_labels:
            source = f"{names_from} gives" if label_names else f"{train.path} has"
            raise UsageError(f"--num_labels {num_labels}, but {source} {len(names)} label names ({', '.join(names)})"
                             f"; pass --num_labels {len(names)}")
    label2id = {name: i for i, name in enumerate(names or [])}
    for split in (train, test):
        split.labels = []
        for i, raw in enumerate(split.raw_labels):
            if isinstance(raw, str):
                if raw not in label2id:
                    known = f"known names: {', '.join(label2id)}" if label2id else "the labels are ids"
                    raise UsageError(f"{split.where(i)}: label {raw!r} has no mapping to an id ({known})")
                label = label2id[raw]
            else:
                label = raw
            if not 0 <= label < num_labels:
                raise UsageError(f"{split.where(i)}: label {label} is outside [0, {num_labels}) for --num_labels "
                                 f"{num_labels}{flag_hint}")
            split.labels.append(label)
    if names is None:
        top = max(max(train.labels), max(test.labels))
        if top < num_labels - 1:
            raise UsageError(f"--num_labels {num_labels}, but the labels in {train.path.name} and {test.path.name} "
                             f"only go up to {top}; pass --num_labels {top + 1}")
        return {i: f"LABEL_{i}" for i in range(num_labels)}
    return dict(enumerate(names))


# ---- tensors and batches ----------------------------------------------------------------------------------------
class TokenizedSplit(torch.utils.data.Dataset):
    def __init__(self, input_ids: List[List[int]], labels: List[int]) -> None:
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> Tuple[List[int], int]:
        return self.input_ids[i], self.labels[i]

    @property
    def lengths(self) -> List[int]:
        return [len(ids) for ids in self.input_ids]


def tokenize_split(split: Split, tokenizer: Any, max_length: int) -> TokenizedSplit:
    return TokenizedSplit(tokenizer.encode_batch(split.texts, max_length=max_length), list(split.labels))


class ClassificationCollator:
    """`(ids, label)` pairs -> a dict of `input_ids`, `attention_mask` and `labels`, padded to the longest sequence
    of the batch (dynamic padding) with the tokenizer's pad id."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Tuple[List[int], int]]) -> Dict[str, torch.Tensor]:
        seqs = [torch.tensor(ids, dtype=torch.long) for ids, _ in items]
        return {"input_ids": pad_right(seqs, self.pad_id),
                "attention_mask": pad_right([torch.ones_like(s) for s in seqs], 0),
                "labels": torch.tensor([label for _, label in items], dtype=torch.long)}


def make_dataloader(dataset: TokenizedSplit, batch_size: int, pad_id: int, shuffle: bool, seed: int = 42,
                    rank: int = 0, world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """Training: shuffled batches of similar lengths, so padding stays small. Evaluation: longest first."""
    batches = EpochBatches(len(dataset), batch_size, shuffle, seed, rank, world_size, lengths=dataset.lengths)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=ClassificationCollator(pad_id),
                      num_workers=num_workers)

"""Labelled text for sequence classification: `ClassificationDataModule`, label mapping, batches. The files it
reads, and how (single texts or pairs, class ids, scores or label lists), are in `litgpt.data.labelled`.

Labels become ids in [0, num_labels): names through a given list of names (id order), an optional `labels.txt`
beside the splits (one class name per line, in id order, as `--label_names`), else the sorted unique names of the
train split. A pair is encoded as the model's tokenizer encodes one (`<s> a </s></s> b </s>`, `[CLS] a [SEP] b
[SEP]` with token types), truncated longest-first (HF's default) to `max_seq_length`.

How the finetuning loop uses it (the pretraining modules' contract, see `litgpt.data.base`; the splits, see
`litgpt.data.finetuning`)::

    data = ClassificationDataModule(data_dir, num_labels)   # reads and checks every split now
    data.connect(tokenizer, batch_size, max_seq_length, seed=..., rank=..., world_size=...)
    data.setup()                                            # tokenizes them
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    for epoch in ...:
        data.set_epoch(epoch)                               # the epoch's shuffle
        for batch in train_loader: ...                      # dicts of input_ids, attention_mask, labels
                                                            # (and token_type_ids for pairs of a BERT tokenizer)
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from litgpt.data.agnews import AGNEWS_LABELS, check_agnews_labels, fetch_agnews
from litgpt.data.finetuning import ExampleList, FinetuneDataModule
from litgpt.data.labelled import (
    PROBLEM_TYPES,
    SUFFIXES,
    Label,
    Split,
    find_split_file,
    parquet_split,
    read_split,
)
from litgpt.data.readers import read_label_names
from litgpt.packing import first_tokens, pack_tokens
from litgpt.utils import UsageError, pad_right

__all__ = ["AGNEWS_LABELS", "ClassificationCollator", "ClassificationDataModule", "assign_labels"]


@dataclass
class ClassificationDataModule(FinetuneDataModule):
    """The `train`, `validation` and `test` splits of a folder of labelled text (layouts in the module docstring;
    the validation split as `litgpt.data.finetuning` finds it). Every split is read and checked on creation, so bad
    data fails before any other work; `setup()` tokenizes them.

    Args:
        data_dir: Folder holding the train and test splits (.json, .jsonl, .csv or .tsv), and optionally validation.
        num_labels: Number of classes.
        use_agnews: Read AG News (4 classes), also in its original header-less CSV.
        label_names: Class names in id order, mapping name labels to ids.
        num_workers: DataLoader worker processes.
        problem_type: `single_label`, `regression` or `multi_label` (see the module docstring).
        text_columns: The text column, or the two columns of a pair; default: found by name.
        glue_task: Read the GLUE task of this name (`litgpt.data.glue`) from `data_dir` in GLUE's own layout; its
            dev split plays the test split's part.
        val_fraction: Without a validation file, hold out this share of train (stratified for single labels).
        seed: Draws the held-out share.
        select_on: "dev" makes a GLUE task's dev split the validation split too (the papers' practice).
    """

    data_dir: Path
    num_labels: int = 2
    use_agnews: bool = False
    label_names: Optional[List[str]] = None
    num_workers: int = 0
    problem_type: str = "single_label"
    text_columns: Optional[List[str]] = None
    glue_task: Optional[str] = None
    val_fraction: Optional[float] = None
    seed: int = 42
    select_on: str = "validation"
    split_suffixes = SUFFIXES

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.problem_type not in PROBLEM_TYPES:
            raise UsageError(f"--problem_type {self.problem_type!r}: expected one of {', '.join(PROBLEM_TYPES)}")
        if self.text_columns is not None and not 1 <= len(self.text_columns) <= 2:
            raise UsageError(f"--text_columns {','.join(self.text_columns)}: expected one column name, or two for "
                             "sentence pairs")
        label_names, names_from = self.label_names, "--label_names"
        if self.use_agnews:
            if self.num_labels != len(AGNEWS_LABELS):
                raise UsageError(f"--use_agnews: AG News has {len(AGNEWS_LABELS)} classes, got --num_labels "
                                 f"{self.num_labels}; pass --num_labels {len(AGNEWS_LABELS)}")
            label_names = label_names or AGNEWS_LABELS
        elif label_names is None and (self.data_dir / "labels.txt").is_file():
            names_from = str(self.data_dir / "labels.txt")
            label_names = read_label_names(self.data_dir / "labels.txt")
        # further evaluation splits beside `test` (MNLI's mismatched dev set), scored with the chosen weights
        self.extra_tests: Dict[str, Split] = {}
        strata = (lambda split: split.raw_labels) if self.problem_type == "single_label" else None
        if self.glue_task is not None:
            from litgpt.data.glue import read_glue

            self.train, self.test, self.extra_tests = read_glue(self.glue_task, self.data_dir)
            if self.select_on == "dev":
                self.validation, self.selection = self.test, "dev"
                self.validation_from = f"{self.test.path.name}, the split reported (the papers' practice)"
            else:
                self.hold_out(self.val_fraction, self.seed, strata)
        elif self.use_agnews and not any((self.data_dir / f"train{suffix}").is_file() for suffix in SUFFIXES):
            self.train, self.test = (parquet_split(path) for path in fetch_agnews().values())
            self.hold_out(self.val_fraction, self.seed, strata)
        else:
            def read(path: Path) -> Split:
                return read_split(path, self.use_agnews, self.text_columns, self.problem_type)

            self.train = read(find_split_file(self.data_dir, "train"))
            self.find_validation(read, self.val_fraction, self.seed, strata)
            self.test = read(find_split_file(self.data_dir, "test"))
        evaluated = [s for s in (self.validation, self.test, *self.extra_tests.values()) if s is not None]
        evaluated = list({id(s): s for s in evaluated}.values())  # GLUE's dev split may be validation and test
        for split in evaluated:
            if (split.texts_b is None) != (self.train.texts_b is None):
                pair, single = (self.train, split) if split.texts_b is None else (split, self.train)
                raise UsageError(f"{pair.path} holds sentence pairs but {single.path} single texts; give both "
                                 "splits the same text columns")
        self.id2label = assign_labels(self.train, evaluated, self.num_labels, label_names, names_from=names_from,
                                      problem_type=self.problem_type)
        if self.validation is not None and self.problem_type != "regression":
            check_learnable(self.train, self.validation, self.id2label, self.problem_type == "multi_label")
        if self.use_agnews:
            check_agnews_labels(self.train.labels, str(self.train.path))
        self._sets: Dict[str, ExampleList] = {}
        self._train_loader: Optional[DataLoader] = None

    def splits(self) -> Dict[str, Split]:
        return {**super().splits(), **self.extra_tests}

    def fingerprint_parts(self, split: Split) -> Any:
        return [split.texts, split.texts_b, split.labels]

    @property
    def pairs(self) -> bool:
        return self.train.texts_b is not None

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        tokenized: Dict[int, ExampleList] = {}  # a split that plays two parts is tokenized once
        for name, split in self.splits().items():
            if id(split) not in tokenized:
                tokenized[id(split)] = tokenize_split(split, self.tokenizer, self.max_seq_length)
            self._sets[name] = tokenized[id(split)]
        self._train_loader = None

    def collator(self) -> "ClassificationCollator":
        return ClassificationCollator(self.tokenizer.pad_id, self.problem_type, self.num_labels)


# ---- labels ---------------------------------------------------------------------------------------------------
def assign_labels(train: Split, tests: Sequence[Split], num_labels: int, label_names: Optional[Sequence[str]] = None,
                  flag_hint: str = "", names_from: str = "--label_names", problem_type: str = "single_label"
                  ) -> Dict[int, str]:
    """Turns raw labels into ids in [0, num_labels) (a sorted list of ids per example for multi-label; floats stay
    floats for regression) and returns id2label."""
    splits = [train, *tests]
    if problem_type == "regression":
        if num_labels != 1:
            raise UsageError(f"--num_labels {num_labels}: regression predicts one score; pass --num_labels 1")
        for split in splits:
            split.labels = [float(raw) for raw in split.raw_labels]
        return {0: "LABEL_0"}
    multi = problem_type == "multi_label"

    def each(split: Split) -> Iterator[Tuple[int, Label]]:
        for i, raw in enumerate(split.raw_labels):
            for label in raw if multi else [raw]:
                yield i, label

    names = list(label_names) if label_names else None
    train_raw = list(each(train))
    if names is None and any(isinstance(raw, str) for _, raw in train_raw):
        if not all(isinstance(raw, str) for _, raw in train_raw):
            i, raw = next((i, raw) for i, raw in train_raw if isinstance(raw, int))
            raise UsageError(f"{train.where(i)}: label {raw!r} is an id among class names, and there is no mapping "
                             "between them; use names or ids throughout, or pass --label_names")
        names = sorted({raw for _, raw in train_raw})
    if names is not None:
        if len(set(names)) != len(names):
            raise UsageError(f"{names_from} {names}: names must be unique")
        if len(names) != num_labels:
            source = f"{names_from} gives" if label_names else f"{train.path} has"
            raise UsageError(f"--num_labels {num_labels}, but {source} {len(names)} label names ({', '.join(names)})"
                             f"; pass --num_labels {len(names)}")
    label2id = {name: i for i, name in enumerate(names or [])}
    top = -1
    for split in splits:
        ids: List[List[int]] = [[] for _ in split.raw_labels]
        for i, raw in each(split):
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
            ids[i].append(label)
            top = max(top, label)
        split.labels = [sorted(set(x)) for x in ids] if multi else [x[0] for x in ids]
    if names is None:
        if top < num_labels - 1:
            raise UsageError(f"--num_labels {num_labels}, but the labels in {', '.join(s.path.name for s in splits)} "
                             f"only go up to {top}; pass --num_labels {top + 1}")
        return {i: f"LABEL_{i}" for i in range(num_labels)}
    return dict(enumerate(names))


def check_learnable(train: Split, validation: Split, id2label: Dict[int, str], multi: bool) -> None:
    """Every class of the validation split occurs in train: the model could never predict one that does not."""
    known = {label for labels in train.labels for label in (labels if multi else [labels])}
    for i, labels in enumerate(validation.labels):
        unseen = [label for label in (labels if multi else [labels]) if label not in known]
        if unseen:
            raise UsageError(f"{validation.where(i)}: label {id2label.get(unseen[0], unseen[0])!r} never occurs in "
                             f"{train.path.name}, so the model cannot learn it; a validation split holds the train "
                             "split's classes")


# ---- tensors and batches ----------------------------------------------------------------------------------------
def tokenize_split(split: Split, tokenizer: Any, max_length: int) -> ExampleList:
    """`(ids, label, token types or None)` per example."""
    if split.texts_b is None:
        ids = tokenizer.encode_batch(split.texts, max_length=max_length)
        return ExampleList([(x, label, None) for x, label in zip(ids, split.labels)])
    ids, types = tokenizer.encode_pair_batch(split.texts, split.texts_b, max_length=max_length)
    if not any(any(t) for t in types):  # RoBERTa's pairs are all type 0 (it has one token type): nothing to feed
        types = [None] * len(ids)
    return ExampleList(list(zip(ids, split.labels, types)))


class ClassificationCollator:
    """`(ids, label[, token types])` items -> a dict of `input_ids`, `attention_mask`, `labels` (and
    `token_type_ids`), padded to the longest sequence of the batch (dynamic padding) with the tokenizer's pad id.
    Labels are class ids (long), scores (float, regression) or multi-hot rows (float `[B, num_labels]`). The batch
    also carries its `packing` (`litgpt.packing`), so the classifier's step never waits for the device."""

    def __init__(self, pad_id: int, problem_type: str = "single_label", num_labels: Optional[int] = None) -> None:
        self.pad_id, self.problem_type, self.num_labels = pad_id, problem_type, num_labels

    def __call__(self, items: Sequence[Tuple[Any, ...]]) -> Dict[str, torch.Tensor]:
        seqs = [torch.tensor(item[0], dtype=torch.long) for item in items]
        labels = [item[1] for item in items]
        batch = {"input_ids": pad_right(seqs, self.pad_id),
                 "attention_mask": pad_right([torch.ones_like(s) for s in seqs], 0)}
        if self.problem_type == "regression":
            batch["labels"] = torch.tensor(labels, dtype=torch.float32)
        elif self.problem_type == "multi_label":
            batch["labels"] = torch.zeros(len(items), self.num_labels)
            for row, ids in enumerate(labels):
                batch["labels"][row, ids] = 1.0
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        if len(items[0]) > 2 and items[0][2] is not None:
            batch["token_type_ids"] = pad_right([torch.tensor(item[2], dtype=torch.long) for item in items], 0)
        batch["packing"] = pack_tokens(batch["attention_mask"], first_tokens(batch["input_ids"]))
        return batch

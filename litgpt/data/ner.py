"""Tagged words for token classification (NER, POS tagging): readers, the label set, sub-word labels, windows.

Files in a data folder, per split (the first one found wins): train.conll / .txt / .bio / .jsonl / .json, the same
for test.
- CoNLL: one word per line with its tag in the last column (columns separated by spaces or tabs), a blank line
  between sentences; `-DOCSTART-` lines are skipped.
- JSONL / JSON: `{"tokens": [...], "tags": [...]}` per sentence, one per line or in a JSON list.

The label set is the train split's tags (`O` first, then sorted), stored with the model as `id2label`. A test tag
that train never has is an error, not mapped to `O`: the model could never predict it, and a quiet `O` would change
the test set being scored.

Sub-words, as HF's `run_ner.py` labels them: every word is tokenized on its own (byte-level BPE with a leading space,
as `add_prefix_space=True` does for pre-split words), its first sub-token carries the word's label, its other
sub-tokens and the special tokens -100 (no loss, not scored). A sentence longer than `max_length` is split at word
boundaries into consecutive windows, each its own example, so no word is ever cut off.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from litgpt.data.finetuning import ExampleList, FinetuneDataModule
from litgpt.data.labelled import find_split_file, jsonl_records
from litgpt.data.readers import read_text
from litgpt.packing import pack_tokens
from litgpt.utils import UsageError, pad_right

SUFFIXES = (".conll", ".txt", ".bio", ".jsonl", ".json")


@dataclass
class TaggedSplit:
    """Sentences of words with one tag per word; `rows[i]` says where sentence i starts ("line 12", "record 3") and
    `documents[i]` which document it belongs to (CoNLL's `-DOCSTART-` lines begin one; without them, and in JSON,
    each sentence is its own), so a carved validation split takes whole documents."""

    path: Path
    sentences: List[List[str]] = field(default_factory=list)
    tags: List[List[str]] = field(default_factory=list)
    rows: List[str] = field(default_factory=list)
    documents: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sentences)

    def where(self, i: int) -> str:
        return f"{self.path}: {self.rows[i]}"


def read_tagged(path: Path) -> TaggedSplit:
    text = read_text(path)
    split = TaggedSplit(path)
    if path.suffix in (".jsonl", ".json"):
        _read_json_sentences(path, text, split)
    else:
        _read_conll(path, text, split)
    if not split.sentences:
        raise UsageError(f"{path}: no sentences; expected CoNLL lines (word ... tag) or {{\"tokens\", \"tags\"}} "
                         "records")
    return split


def _read_conll(path: Path, text: str, split: TaggedSplit) -> None:
    words: List[str] = []
    tags: List[str] = []
    start, document, marked = 0, 0, False
    for n, line in enumerate(text.splitlines() + [""], 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                split.sentences.append(words)
                split.tags.append(tags)
                split.rows.append(f"line {start}")
                split.documents.append(document if marked else -len(split.documents) - 1)  # before any: alone
            if columns:
                document, marked = document + 1, True
            words, tags = [], []
            continue
        if len(columns) < 2:
            raise UsageError(f"{path}: line {n}: {line.strip()!r} has no tag column; expected a word and its tag "
                             "(the last column), separated by spaces or tabs")
        if not words:
            start = n
        words.append(columns[0])
        tags.append(columns[-1])


def _read_json_sentences(path: Path, text: str, split: TaggedSplit) -> None:
    try:
        records = json.loads(text) if path.suffix == ".json" else None
    except json.JSONDecodeError as ex:
        raise UsageError(f"{path}:{ex.lineno}: not valid JSON ({ex.msg})") from None
    if records is None:
        records = jsonl_records(path, text)
    elif isinstance(records, list):
        records = [(f"record {i}", r) for i, r in enumerate(records, 1)]
    else:
        raise UsageError(f"{path}: expected a JSON list of {{\"tokens\", \"tags\"}} records")
    for row, record in records:
        where = f"{path}: {row}"
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list) \
                or not isinstance(record.get("tags"), list):
            raise UsageError(f"{where}: expected {{\"tokens\": [...], \"tags\": [...]}}")
        words, tags = record["tokens"], record["tags"]
        if len(words) != len(tags):
            raise UsageError(f"{where}: {len(words)} tokens but {len(tags)} tags; expected one tag per token")
        if not all(isinstance(x, str) and x.strip() and not re.search(r"\s", x) for x in words + tags):
            raise UsageError(f"{where}: tokens and tags must be non-empty strings without spaces")
        if words:
            split.sentences.append(words)
            split.tags.append(tags)
            split.rows.append(row)
            split.documents.append(len(split.documents))


def label_set(train: TaggedSplit, evaluated: Sequence[TaggedSplit]) -> List[str]:
    """The train split's tags, `O` first; a validation or test tag outside them is an error (see the module
    docstring)."""
    known = {t for tags in train.tags for t in tags}
    for split in evaluated:
        for i, tags in enumerate(split.tags):
            for tag in tags:
                if tag not in known:
                    raise UsageError(f"{split.where(i)}: tag {tag!r} never occurs in {train.path.name}, so the model "
                                     "cannot learn it; fix the tag, or add training sentences that have it")
    return sorted(known, key=lambda t: (t != "O", t))


def is_bio(labels: Sequence[str]) -> bool:
    """Whether the tags name entities (`O`, `B-TYPE`, `I-TYPE`): entity-level metrics apply."""
    return all(t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2) for t in labels)


@dataclass
class Window:
    """One example: the ids of a run of whole words with the special tokens, their labels (-100 where unscored),
    and where each word's first sub-token sits: `(position, sentence index, word index)`."""

    input_ids: List[int]
    labels: List[int]
    words: List[Tuple[int, int, int]]


def windows(pieces: List[List[int]], tag_ids: List[int], sentence: int, cls_id: int, sep_id: int,
            max_length: int) -> List[Window]:
    """A sentence's words (`pieces`: each word's sub-token ids) in windows of at most `max_length` tokens."""
    budget = max_length - 2
    out: List[Window] = []
    i = 0
    while i < len(pieces):
        ids, labels, words = [cls_id], [-100], []
        while i < len(pieces) and len(ids) - 1 + len(pieces[i]) <= budget:
            words.append((len(ids), sentence, i))
            ids += pieces[i]
            labels += [tag_ids[i]] + [-100] * (len(pieces[i]) - 1)
            i += 1
        if not words:  # one word longer than a whole window
            raise ValueError(f"word {i + 1} is {len(pieces[i])} sub-tokens long; a window holds {budget}")
        out.append(Window(ids + [sep_id], labels + [-100], words))
    return out


def tokenize_tagged(split: TaggedSplit, tokenizer: Any, label2id: Dict[str, int], max_length: int) -> ExampleList:
    examples: List[Window] = []
    for s, (words, tags) in enumerate(zip(split.sentences, split.tags)):
        pieces = tokenizer.encode_words(words)
        empty = next((j for j, p in enumerate(pieces) if not p), None)
        if empty is not None:
            raise UsageError(f"{split.where(s)}: word {empty + 1} ({words[empty]!r}) has no tokens in this "
                             "tokenizer's vocabulary")
        try:
            examples += windows(pieces, [label2id[t] for t in tags], s, tokenizer.cls_id, tokenizer.sep_id,
                                max_length)
        except ValueError as ex:
            raise UsageError(f"{split.where(s)}: {ex}; raise --max_length") from None
    return ExampleList(examples)


class TaggedCollator:
    """Windows -> `input_ids`, `attention_mask`, `labels` (pads: -100), padded to the longest in the batch, and the
    batch's `packing` (`litgpt.packing`) whose selected positions are the labelled tokens: the packed head scores
    only those."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Window]) -> Dict[str, torch.Tensor]:
        ids = [torch.tensor(w.input_ids, dtype=torch.long) for w in items]
        batch = {"input_ids": pad_right(ids, self.pad_id),
                 "attention_mask": pad_right([torch.ones_like(t) for t in ids], 0),
                 "labels": pad_right([torch.tensor(w.labels, dtype=torch.long) for w in items], -100)}
        batch["packing"] = pack_tokens(batch["attention_mask"], batch["labels"].ne(-100))
        return batch


@dataclass
class TokenClassificationDataModule(FinetuneDataModule):
    """The `train`, `validation` and `test` splits of a folder of tagged sentences (layouts in the module docstring;
    the validation split as `litgpt.data.finetuning` finds it, carved as whole documents), read and checked on
    creation; `setup()` splits words into sub-words and windows. Every rank scores a whole evaluation split (entity
    metrics need whole sentences).

    Args:
        data_dir: Folder holding the train and test splits, and optionally validation.
        num_workers: DataLoader worker processes.
        val_fraction: Without a validation file, hold out this share of train's sentences (whole documents).
        seed: Draws the held-out documents.
    """

    data_dir: Path
    num_workers: int = 0
    val_fraction: Optional[float] = None
    seed: int = 42
    shard_evaluation = False
    split_suffixes = SUFFIXES

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.train = read_tagged(find_split_file(self.data_dir, "train", SUFFIXES))
        self.find_validation(read_tagged, self.val_fraction, self.seed, groups=lambda split: split.documents)
        self.test = read_tagged(find_split_file(self.data_dir, "test", SUFFIXES))
        self.labels = label_set(self.train, [s for s in (self.validation, self.test) if s is not None])
        self.label2id = {t: i for i, t in enumerate(self.labels)}
        self.id2label = dict(enumerate(self.labels))

    def fingerprint_parts(self, split: TaggedSplit) -> Any:
        return [split.sentences, split.tags]

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        self._sets = {name: tokenize_tagged(split, self.tokenizer, self.label2id, self.max_seq_length)
                      for name, split in self.splits().items()}
        self._train_loader = None

    def collator(self) -> TaggedCollator:
        return TaggedCollator(self.tokenizer.pad_id)

"""Data for training sentence embeddings (`litgpt finetune --task embed`): the training rows, the evaluation splits,
and batches in which no text appears twice.

A data folder holds:
- `train.{jsonl,csv,tsv,json}`, columns found by name: (`anchor`, `positive`) pairs, with hard negatives if any
  (`negative`, or `negative_1`, `negative_2`, ...), for the in-batch-negatives losses; or scored pairs
  (`sentence1`, `sentence2`, `score`) for CoSENT.
- `validation.*` (or `dev.*`) and `test.*`: scored pairs, evaluated as STS (Pearson and Spearman of the pairs'
  cosine similarity against the scores).
- `retrieval/` in BEIR's layout: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
  `qrels/validation.tsv` / `qrels/test.tsv` (`query-id`, `corpus-id`, `score`; a score above 0 is relevant),
  evaluated as retrieval (nDCG@10, MRR@10, Recall@1/5/10, MAP@100). A document is its title and text joined.

Without a validation file or qrels, `--val_fraction` holds rows of train out (`litgpt.data.finetuning`): scored pairs
become an STS split; pairs a retrieval split, each held-out anchor a query whose positive is the one relevant
document among the held-out texts.

With an in-batch-negatives loss, every other text of a batch is a negative, so a text twice in one batch (a
positive shared by two anchors, a negative that is another row's positive) would be scored as its own negative:
`NoDuplicateBatches` never puts one text twice in a batch.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from litgpt.data.base import EpochBatches
from litgpt.data.finetuning import (
    VALIDATION_NAMES,
    ExampleList,
    FinetuneDataModule,
    carve_validation,
    find_optional_file,
    take,
)
from litgpt.data.labelled import SUFFIXES, find_split_file, read_rows
from litgpt.data.mlm import derive_seed
from litgpt.packing import pack_tokens, pooled_positions
from litgpt.utils import UsageError, pad_right

PAIRS, SCORED = ("anchor", "positive"), ("sentence1", "sentence2")


@dataclass
class TextRows:
    """Rows of texts: `texts[i]` holds row i's texts in `names` order (anchor, positive, negatives; or sentence1,
    sentence2), `scores[i]` its score (scored pairs), `rows[i]` where it is in `path`."""

    path: Path
    names: Tuple[str, ...]
    texts: List[Tuple[str, ...]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    rows: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def scored(self) -> bool:
        return self.names[:2] == SCORED


@dataclass
class Retrieval:
    """A retrieval split: its queries, the corpus searched, and each query's relevant documents (ids)."""

    path: Path
    queries: Dict[str, str]
    corpus: Dict[str, str]
    relevant: Dict[str, Set[str]]


@dataclass
class EvalSet:
    """What one evaluation split scores: STS on scored pairs, retrieval, or both."""

    name: str
    sts: Optional[TextRows] = None
    retrieval: Optional[Retrieval] = None

    def __len__(self) -> int:
        return (len(self.sts) if self.sts else 0) + (len(self.retrieval.queries) if self.retrieval else 0)


# ---- reading ------------------------------------------------------------------------------------------------------
def read_text_rows(path: Path, score_range: Optional[Tuple[float, float]] = None, scored_only: bool = False
                   ) -> TextRows:
    """A file of pairs, tuples or scored pairs, every row checked: each text a non-empty string, each score a number
    (inside `score_range` when given)."""
    records = read_rows(path)
    keys: Dict[str, None] = {}
    for _, obj in records:
        if not isinstance(obj, dict):
            raise UsageError(f"{path}: expected records of named columns, e.g. {{\"anchor\": ..., \"positive\": ...}}")
        keys.update(dict.fromkeys(obj))
    if set(SCORED) | {"score"} <= set(keys):
        names = SCORED
    elif set(PAIRS) <= set(keys) and not scored_only:
        negatives = sorted((k for k in keys if k == "negative" or k.startswith("negative_")),
                           key=lambda k: int(k[9:]) if k[9:].isdigit() else 0)
        names = PAIRS + tuple(negatives)
    else:
        wanted = "sentence1, sentence2, score" if scored_only else ("anchor, positive (and hard negatives: negative or "
                                                                    "negative_1, negative_2, ...) or sentence1, "
                                                                    "sentence2, score")
        raise UsageError(f"{path}: expected the columns {wanted}; found {', '.join(keys) or 'none'}")
    split = TextRows(path, names)
    for row, obj in records:
        texts = []
        for name in names:
            value = obj.get(name)
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"{path}: {row}: no {name!r} text; every row needs {', '.join(names)}")
            texts.append(value)
        if names == SCORED:
            split.scores.append(parse_score(obj.get("score"), f"{path}: {row}", score_range))
        split.texts.append(tuple(texts))
        split.rows.append(row)
    if not split.texts:
        raise UsageError(f"{path}: no rows")
    return split


def parse_score(value: Any, where: str, score_range: Optional[Tuple[float, float]]) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if isinstance(value, bool) or not math.isfinite(score):
        raise UsageError(f"{where}: score {value!r} is not a number")
    if score_range is not None and not score_range[0] <= score <= score_range[1]:
        raise UsageError(f"{where}: score {score:g} is outside the declared range [{score_range[0]:g}, "
                         f"{score_range[1]:g}] (--score_range)")
    return score


def read_jsonl_texts(path: Path, title: bool) -> Dict[str, str]:
    """BEIR's `corpus.jsonl` (`title` and `text` joined) or `queries.jsonl`: {id: text}."""
    out: Dict[str, str] = {}
    fields = '"_id", "title", "text"' if title else '"_id", "text"'
    for row, obj in read_rows(path):
        text = obj.get("text") if isinstance(obj, dict) else None
        joined = f"{obj.get('title') or ''} {text}".strip() if title and isinstance(text, str) else text
        if not isinstance(joined, str) or not joined.strip() or not isinstance(obj.get("_id"), (str, int)):
            raise UsageError(f"{path}: {row}: expected {{{fields}}} with a non-empty text")
        doc_id = str(obj["_id"])
        if doc_id in out:
            raise UsageError(f"{path}: {row}: id {doc_id!r} occurs twice")
        out[doc_id] = joined
    return out


def read_retrieval(folder: Path, split: str) -> Optional[Retrieval]:
    """`folder/qrels/<split>.tsv` with the corpus and the queries it names; None without that file."""
    qrels = folder / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        return None
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder}: {qrels.name} needs {name} beside qrels/ (BEIR's layout)")
    corpus, queries = read_jsonl_texts(folder / "corpus.jsonl", True), read_jsonl_texts(folder / "queries.jsonl", False)
    relevant: Dict[str, Set[str]] = {}
    for row, obj in read_rows(qrels):
        query, doc = str(obj.get("query-id", "")), str(obj.get("corpus-id", ""))
        if query not in queries:
            raise UsageError(f"{qrels}: {row}: query-id {query!r} is not in queries.jsonl")
        if doc not in corpus:
            raise UsageError(f"{qrels}: {row}: corpus-id {doc!r} is not in corpus.jsonl")
        if parse_score(obj.get("score", 1), f"{qrels}: {row}", None) > 0:
            relevant.setdefault(query, set()).add(doc)
    if not relevant:
        raise UsageError(f"{qrels}: no relevant (score > 0) query-document pairs")
    return Retrieval(qrels, {q: queries[q] for q in relevant}, corpus, relevant)


def held_out_retrieval(rows: TextRows) -> Retrieval:
    """Held-out (anchor, positive, ...) rows as a retrieval split: each anchor a query, its positive the one relevant
    document among every held-out positive and negative."""
    ids: Dict[str, str] = {}
    for texts in rows.texts:
        for text in texts[1:]:
            ids.setdefault(text, f"d{len(ids)}")
    queries = {f"q{i}": texts[0] for i, texts in enumerate(rows.texts)}
    relevant = {f"q{i}": {ids[texts[1]]} for i, texts in enumerate(rows.texts)}
    return Retrieval(rows.path, queries, {i: t for t, i in ids.items()}, relevant)


# ---- batches ------------------------------------------------------------------------------------------------------
class NoDuplicateBatches:
    """This rank's batches of row indices for one epoch, no text in two rows of a batch; the same interface as
    `EpochBatches`. Every epoch has the same number of full batches, n // batch_size (a multiple of the ranks), so
    the schedule and the ranks agree: rows are shuffled from (seed, epoch), grouped by their most repeated text
    (the most repeated first) and dealt round-robin, each to the next batch with room that holds none of its texts;
    the batches are then shuffled. Rows that fit nowhere, and the remainder, wait for the next epoch. Epoch 0 is
    arranged when the sampler is made: a batch it cannot fill is a `UsageError` naming a row."""

    def __init__(self, texts: Sequence[Tuple[str, ...]], batch_size: int, seed: int, rank: int, world_size: int,
                 where: Sequence[str]) -> None:
        self.texts, self.batch_size, self.seed = texts, batch_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.count = len(texts) // batch_size // world_size * world_size
        rows_with: Dict[str, int] = {}
        for row in texts:
            for text in set(row):
                rows_with[text] = rows_with.get(text, 0) + 1
        self.key_text = [max(sorted(set(row)), key=rows_with.get) for row in texts]  # each row's most repeated text
        self.repeats = [rows_with[text] for text in self.key_text]
        if self.count == 0:
            raise UsageError(f"{where[0].split(': ')[0]}: {len(texts)} rows cannot fill {world_size} batch(es) of "
                             f"--batch_size {batch_size}")
        batches, unplaced = self._arrange(0)
        if any(len(b) < batch_size for b in batches):
            i = unplaced[0]
            text = self.key_text[i]
            raise UsageError(f"{where[i]}: {text[:60]!r} is in {rows_with[text]} rows: no {self.count} batches of "
                             f"--batch_size {batch_size} without a text twice can be formed; lower --batch_size, or "
                             "remove repeated texts")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count // self.world_size

    def _arrange(self, epoch: int) -> Tuple[List[List[int]], List[int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -3))
        batches: List[List[int]] = [[] for _ in range(self.count)]
        seen: List[Set[str]] = [set() for _ in range(self.count)]
        unplaced, cursor = [], 0
        # rows sharing a text are dealt one after another, so the round-robin spreads them over as many batches;
        # the texts repeated most go first, while every batch still has room
        order = torch.randperm(len(self.texts), generator=g).tolist()
        keys = list(dict.fromkeys(self.key_text[i] for i in order))  # the shared texts, in a shuffled order
        rank = {text: k for k, text in enumerate(keys)}
        order.sort(key=lambda i: (-self.repeats[i], rank[self.key_text[i]]))
        batch_order = torch.randperm(self.count, generator=g).tolist()
        for i in order:
            texts = set(self.texts[i])
            for step in range(self.count):
                b = (cursor + step) % self.count
                if len(batches[b]) < self.batch_size and not seen[b] & texts:
                    batches[b].append(i)
                    seen[b] |= texts
                    cursor = (b + 1) % self.count
                    break
            else:
                unplaced.append(i)
        return [batches[b] for b in batch_order], unplaced

    def __iter__(self):
        return iter(self._arrange(self.epoch)[0][self.rank :: self.world_size])


class EmbeddingCollator:
    """Rows -> `{"columns": [[mini-batch, ...] per column], "scores": [B]}`: each column's texts padded and packed
    (`litgpt.packing`, selecting what the pooling reads) in mini-batches of at most `mini_batch_size` rows, the
    memory `cached_mnrl` embeds in (one mini-batch per column otherwise)."""

    def __init__(self, pad_id: int, pooling: str, mini_batch_size: Optional[int] = None) -> None:
        self.pad_id, self.pooling, self.mini_batch_size = pad_id, pooling, mini_batch_size

    def texts(self, ids: Sequence[List[int]]) -> Dict[str, Any]:
        seqs = [torch.tensor(x, dtype=torch.long) for x in ids]
        input_ids = pad_right(seqs, self.pad_id)
        mask = pad_right([torch.ones_like(s) for s in seqs], 0)
        return {"input_ids": input_ids, "attention_mask": mask,
                "packing": pack_tokens(mask, pooled_positions(input_ids, mask, self.pooling))}

    def __call__(self, items: Sequence[Tuple[List[List[int]], float]]) -> Dict[str, Any]:
        size = self.mini_batch_size or len(items)
        columns = [[self.texts([item[0][c] for item in items[start : start + size]])
                    for start in range(0, len(items), size)] for c in range(len(items[0][0]))]
        return {"columns": columns, "scores": torch.tensor([item[1] for item in items], dtype=torch.float32)}


# ---- the data module ----------------------------------------------------------------------------------------------
@dataclass
class EmbeddingDataModule(FinetuneDataModule):
    """The training rows and the evaluation splits of a folder (layout in the module docstring), read and checked
    on creation; `setup()` tokenizes the training texts. The task sets how batches are made before `setup()`:
    `no_duplicates` (the in-batch-negatives losses), `mini_batch_size` (`cached_mnrl`), `pooling` and `lowercase`
    (the model's sentence-transformers recipe).

    Args:
        data_dir: Folder holding train.{jsonl,csv,tsv,json}, and optionally validation/test files and retrieval/.
        num_workers: DataLoader worker processes.
        val_fraction: Without a validation file or retrieval/qrels/validation.tsv, hold out this share of train.
        seed: Draws the held-out rows.
        score_range: The range every score must lie in, when declared (min, max).
    """

    data_dir: Path
    num_workers: int = 0
    val_fraction: Optional[float] = None
    seed: int = 42
    score_range: Optional[Tuple[float, float]] = None
    no_duplicates: bool = False
    mini_batch_size: Optional[int] = None
    pooling: str = "mean"
    lowercase: bool = False
    split_suffixes = SUFFIXES

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.train = read_text_rows(find_split_file(self.data_dir, "train"), self.score_range)
        retrieval = self.data_dir / "retrieval"
        found = {}
        for split, names in (("validation", VALIDATION_NAMES), ("test", ("test",))):
            path = find_optional_file(self.data_dir, names, SUFFIXES)
            sts = read_text_rows(path, self.score_range, scored_only=True) if path else None
            search = read_retrieval(retrieval, split) if retrieval.is_dir() else None
            parts = [str(p.relative_to(self.data_dir)) for p in (path, search.path if search else None) if p]
            found[split] = EvalSet(" + ".join(parts), sts, search) if parts else None
        self.validation, self.test = found["validation"], found["test"]
        if self.validation is not None:
            if self.val_fraction is not None:
                raise UsageError(f"--val_fraction {self.val_fraction}: {self.validation.name} is the validation split "
                                 "already; drop the flag, or the file")
            self.selection = "dev" if self.validation.name.startswith("dev.") else "validation"
            self.validation_from = self.validation.name
        elif self.val_fraction is not None:
            where = f"--val_fraction {self.val_fraction} of {self.train.path.name}"
            keep, held = carve_validation(len(self.train), self.val_fraction, self.seed, where=where)
            rows, self.train = take(self.train, held), take(self.train, keep)
            self.validation = (EvalSet(where, sts=rows) if rows.scored
                               else EvalSet(where, retrieval=held_out_retrieval(rows)))
            self.selection, self.validation_from = "validation", f"{where} (seed {self.seed})"

    def fingerprint_parts(self, split: Any) -> Any:
        if isinstance(split, TextRows):
            return [split.texts, split.scores]
        return [self.fingerprint_parts(split.sts) if split.sts else None,
                sorted(split.retrieval.relevant.items()) if split.retrieval else None]

    def split_name(self, split: str) -> str:
        return self.splits()[split].name if split != "train" else self.train.path.name

    def all_texts(self) -> List[str]:
        """The training texts, each once (a tokenizer trained from scratch reads these)."""
        return list(dict.fromkeys(t for texts in self.train.texts for t in texts))

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids as the model reads them: lowercased when its recipe says so, truncated to `max_seq_length`."""
        return self.tokenizer.encode_batch([t.lower() for t in texts] if self.lowercase else list(texts),
                                           max_length=self.max_seq_length)

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        columns = [self.encode([texts[c] for texts in self.train.texts]) for c in range(len(self.train.names))]
        scores = self.train.scores or [0.0] * len(self.train)
        self._sets = {"train": ExampleList([([column[i] for column in columns], scores[i])
                                            for i in range(len(self.train))])}
        self._train_loader = None

    def _make_train_loader(self) -> Any:
        from torch.utils.data import DataLoader

        dataset = self._sets["train"]
        if self.no_duplicates:
            batches = self.no_duplicate_batches(self.batch_size, self.seed, self.rank, self.world_size)
        else:
            lengths = [max(map(len, ids)) for ids, _ in dataset.examples]
            batches = EpochBatches(len(dataset), self.batch_size, True, self.seed, self.rank, self.world_size,
                                   lengths=lengths)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=self.collator(), num_workers=self.num_workers)

    def no_duplicate_batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
                             ) -> NoDuplicateBatches:
        """The train rows' batches without a repeated text (checked on creation: one that cannot be filled is a
        `UsageError`, so `setup` of the task calls this before any work)."""
        where = [f"{self.train.path}: {row}" for row in self.train.rows]
        return NoDuplicateBatches(self.train.texts, batch_size, seed, rank, world_size, where)

    def collator(self) -> EmbeddingCollator:
        return EmbeddingCollator(self.tokenizer.pad_id, self.pooling, self.mini_batch_size)

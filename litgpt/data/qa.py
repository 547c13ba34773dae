"""Extractive question answering: SQuAD v1.1 / v2.0 files, context windows with character offsets, answer labels,
and the way back from start/end logits to an answer in the context.

Files: `train.json` and `test.json` in the data folder, each in SQuAD's format:
`{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
"is_impossible"}]}]}]}`. v2.0 marks unanswerable questions with `"is_impossible": true` and no answers.

Windows, as HF's `run_qa.py` builds them: the question, then as much of the context as fits `max_length`
(`<s> question </s></s> context </s>`); a longer context continues in further windows that repeat the question and
overlap the previous window by `doc_stride` tokens. Each token keeps its character span in the context, so an
answer maps to tokens and back exactly. A training window whose context holds the whole answer points at its first
and last tokens; any other window, and every window of an unanswerable question, points at `<s>` (position 0).

From logits to an answer (`best_answers`): in every window, the `n_best` highest start and end logits give the
candidate spans (inside the context, end not before start, at most `max_answer_length` tokens); a span scores
start + end logit and the best over all windows wins. The null answer scores `<s>`'s start + end, the lowest over
the windows; with SQuAD v2 the question is judged unanswerable (answer "") when the null score beats the best span
by more than a threshold, chosen on the dev split (`best_null_threshold`).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from litgpt.data.finetuning import ExampleList, FinetuneDataModule
from litgpt.data.labelled import find_split_file
from litgpt.data.readers import read_text
from litgpt.packing import pack_tokens
from litgpt.utils import UsageError, pad_right


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: List[Tuple[str, int]]  # (text, character start); empty for an unanswerable question
    where: str
    article: int = 0  # its article's index in the file: a carved validation split takes whole articles


@dataclass
class QASplit:
    path: Path
    examples: List[QAExample] = field(default_factory=list)
    version_2: bool = False

    def __len__(self) -> int:
        return len(self.examples)


def read_squad(path: Path) -> QASplit:
    """A SQuAD file, every answer checked against its context."""
    try:
        document = json.loads(read_text(path))
    except json.JSONDecodeError as ex:
        raise UsageError(f"{path}:{ex.lineno}: not valid JSON ({ex.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise UsageError(f"{path}: expected SQuAD's format, {{\"data\": [{{\"paragraphs\": [...]}}]}}")
    split, seen = QASplit(path), set()
    for a, article in enumerate(document["data"], 1):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UsageError(f"{path}: article {a}: expected a list of 'paragraphs'")
        for p, paragraph in enumerate(paragraphs, 1):
            where = f"{path}: article {a}, paragraph {p}"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not context.strip() or not isinstance(paragraph.get("qas"), list):
                raise UsageError(f"{where}: expected a non-empty 'context' and a list of 'qas'")
            for q, qa in enumerate(paragraph["qas"], 1):
                split.examples.append(_example(qa, context, f"{where}, question {q}", seen, a))
                split.version_2 |= isinstance(qa, dict) and "is_impossible" in qa
    if not split.examples:
        raise UsageError(f"{path}: no questions; expected SQuAD's format with 'paragraphs' and 'qas'")
    return split


def _example(qa: Any, context: str, where: str, seen: set, article: int) -> QAExample:
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not qa["question"].strip():
        raise UsageError(f"{where}: expected an object with a non-empty 'question'")
    qid = str(qa.get("id", where))
    if qid in seen:
        raise UsageError(f"{where}: id {qid!r} occurs twice")
    seen.add(qid)
    impossible = bool(qa.get("is_impossible", False))
    raw = qa.get("answers", [])
    if not isinstance(raw, list) or (not raw and not impossible) or (raw and impossible):
        raise UsageError(f"{where}: expected 'answers' (a non-empty list), or none with \"is_impossible\": true")
    answers = []
    for answer in raw:
        text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
        if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
            raise UsageError(f"{where}: an answer needs a non-empty 'text' and an integer 'answer_start'")
        if not 0 <= start <= len(context) - len(text):
            raise UsageError(f"{where}: answer_start {start} is out of range for {text!r} in a context of "
                             f"{len(context)} characters")
        if context[start : start + len(text)] != text:
            raise UsageError(f"{where}: answer {text!r} is not in its context at answer_start {start} (the context "
                             f"there reads {context[start : start + len(text)]!r})")
        answers.append((text, start))
    return QAExample(qid, qa["question"].strip(), context, answers, where, article)


# ---- windows ------------------------------------------------------------------------------------------------------
@dataclass
class QAWindow:
    """One model input: ids, token types, each token's character span in the context (None outside it), the
    example it came from, and for training the answer's token positions (0, 0 when not inside)."""

    input_ids: List[int]
    token_types: List[int]
    offsets: List[Optional[Tuple[int, int]]]
    example: int
    start: int = 0
    end: int = 0


def make_windows(tokenizer: Any, examples: Sequence[QAExample], max_length: int, doc_stride: int) -> List[QAWindow]:
    try:
        backend = tokenizer.window_backend(max_length, doc_stride)
    except ValueError:  # the tokenizer's own check: the stride must fit inside a window
        raise UsageError(f"--doc_stride {doc_stride}: must be well below --max_length {max_length} (the windows "
                         "overlap by that many context tokens)") from None
    out: List[QAWindow] = []
    for index, example in enumerate(examples):
        question_tokens = len(tokenizer.encode(example.question, add_special_tokens=False))
        room = max_length - question_tokens - (3 if tokenizer.wordpiece else 4)
        if room <= doc_stride:
            raise UsageError(f"{example.where}: the question is {question_tokens} tokens, which leaves {max(room, 0)} "
                             f"for the context with --max_length {max_length}; that must exceed --doc_stride "
                             f"{doc_stride}")
        first = backend.encode(example.question, example.context)
        for encoding in [first, *first.overflowing]:
            offsets = [tuple(o) if s == 1 else None for o, s in zip(encoding.offsets, encoding.sequence_ids)]
            window = QAWindow(encoding.ids, encoding.type_ids, offsets, index)
            if example.answers:  # training and scoring point at the first answer
                window.start, window.end = answer_tokens(offsets, *example.answers[0])
            out.append(window)
    return out


def answer_tokens(offsets: List[Optional[Tuple[int, int]]], text: str, start_char: int) -> Tuple[int, int]:
    """The first and last token of the answer `text` at `start_char`, or (0, 0) when this window's context does not
    hold all of it."""
    end_char = start_char + len(text)
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > start_char)
    end = next(i for i in reversed(inside) if offsets[i][0] < end_char)
    return start, end


# ---- from logits to answers -------------------------------------------------------------------------------------
def best_answers(examples: Sequence[QAExample], windows: Sequence[QAWindow], start_logits: Sequence[torch.Tensor],
                 end_logits: Sequence[torch.Tensor], n_best: int = 20, max_answer_length: int = 30
                 ) -> List[Dict[str, Any]]:
    """Per example: the best span's `text`, `start`/`end` (characters), `score` (its softmax probability among the
    candidates and the null answer) and `null_margin` (null score minus the best span's score)."""
    per_example: List[Dict[str, Any]] = [{"spans": [], "null": math.inf} for _ in examples]
    for window, starts, ends in zip(windows, start_logits, end_logits):
        slot, offsets = per_example[window.example], window.offsets
        slot["null"] = min(slot["null"], float(starts[0] + ends[0]))
        top_starts = torch.topk(starts, min(n_best, len(starts))).indices.tolist()
        top_ends = torch.topk(ends, min(n_best, len(ends))).indices.tolist()
        for s in top_starts:
            for e in top_ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                slot["spans"].append((float(starts[s] + ends[e]), offsets[s][0], offsets[e][1]))
    out = []
    for example, slot in zip(examples, per_example):
        if not slot["spans"]:
            out.append({"text": "", "start": 0, "end": 0, "score": 1.0, "null_margin": math.inf})
            continue
        scores = torch.tensor([score for score, _, _ in slot["spans"]] + [slot["null"]])
        probs = scores.softmax(0)
        best = int(scores[:-1].argmax())
        score, start, end = slot["spans"][best]
        out.append({"text": example.context[start:end], "start": start, "end": end, "score": float(probs[best]),
                    "null_margin": slot["null"] - score, "null_score": float(probs[-1])})
    return out


def apply_null_threshold(answers: List[Dict[str, Any]], threshold: float) -> List[Dict[str, Any]]:
    """SQuAD v2: "" where the null answer beats the best span by more than `threshold`."""
    return [dict(a, text="", start=0, end=0, score=a.get("null_score", 1.0)) if a["null_margin"] > threshold else a
            for a in answers]


# ---- the data module --------------------------------------------------------------------------------------------
class QACollator:
    def __init__(self, pad_id: int, token_types: bool) -> None:
        self.pad_id, self.token_types = pad_id, token_types

    def __call__(self, items: Sequence[QAWindow]) -> Dict[str, torch.Tensor]:
        ids = [torch.tensor(w.input_ids, dtype=torch.long) for w in items]
        batch = {"input_ids": pad_right(ids, self.pad_id),
                 "attention_mask": pad_right([torch.ones_like(t) for t in ids], 0),
                 "start_positions": torch.tensor([w.start for w in items]),
                 "end_positions": torch.tensor([w.end for w in items])}
        if self.token_types:
            batch["token_type_ids"] = pad_right([torch.tensor(w.token_types, dtype=torch.long) for w in items], 0)
        batch["packing"] = pack_tokens(batch["attention_mask"], batch["attention_mask"])  # every real token scores
        return batch


@dataclass
class QADataModule(FinetuneDataModule):
    """SQuAD `train.json`, `validation.json` (or `dev.json`, or a carved share of train's articles) and `test.json`
    of a folder, read and checked on creation; `setup()` makes the windows. Every rank answers a whole evaluation
    split (an answer needs all of its context's windows).

    Args:
        data_dir: Folder holding train.json and test.json, and optionally validation.json.
        doc_stride: Tokens shared by consecutive windows of a long context; default: a quarter of the window.
        num_workers: DataLoader worker processes.
        val_fraction: Without a validation file, hold out this share of train's questions (whole articles).
        seed: Draws the held-out articles.
    """

    data_dir: Path
    doc_stride: Optional[int] = None
    num_workers: int = 0
    val_fraction: Optional[float] = None
    seed: int = 42
    default_max_length = 384
    shard_evaluation = False
    split_suffixes = (".json",)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.train = read_squad(find_split_file(self.data_dir, "train", (".json",)))
        self.find_validation(read_squad, self.val_fraction, self.seed,
                             groups=lambda split: [e.article for e in split.examples])
        self.test = read_squad(find_split_file(self.data_dir, "test", (".json",)))
        self.version_2 = any(split.version_2 for split in self.splits().values())

    def fingerprint_parts(self, split: QASplit) -> Any:
        return [(e.id, e.question, e.context, e.answers) for e in split.examples]

    def connect(self, tokenizer: Any, batch_size: int = 1, max_seq_length: Optional[int] = None, seed: int = 42,
                rank: int = 0, world_size: int = 1, eval_batch_size: Optional[int] = None) -> None:
        super().connect(tokenizer, batch_size, max_seq_length, seed, rank, world_size, eval_batch_size)
        self.doc_stride = self.doc_stride or self.max_seq_length // 4

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        self._sets = {name: ExampleList(make_windows(self.tokenizer, split.examples, self.max_seq_length,
                                                     self.doc_stride))
                      for name, split in self.splits().items()}
        self._train_loader = None

    def collator(self) -> QACollator:
        return QACollator(self.tokenizer.pad_id, self.tokenizer.wordpiece)

"""Inference on tokens: `TokenClassifier` (entities with character spans) and `QuestionAnswerer` (an answer as a span
of its context)."""

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from litgpt.api.base import _as_texts, _Inference, inference
from litgpt.config import label_names
from litgpt.utils import UsageError, read_json

# words as CoNLL data splits them: a run of letters and digits (inner hyphens, apostrophes and dots kept, as in
# "O'Neil" or "U.S"), or any other symbol on its own
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


class TokenClassifier(_Inference):
    """A token classifier (NER) ready for inference: the entities of a text with their character spans."""

    kind = "token_classification"

    @property
    def labels(self) -> List[str]:
        """Label names ordered by label id, from the checkpoint's `id2label` (`LABEL_i` where missing)."""
        return label_names(self.config.id2label, self.model.num_labels)

    @inference
    def predict(self, texts: Union[str, Sequence[str]]) -> List[Dict[str, Any]]:
        """Per text `{"text", "entities": [{"entity", "label", "start", "end", "score"}]}` (`litgpt ner --json`).

        The text is split into words as CoNLL data is (`WORD`), each word is tagged at its first sub-token (long
        texts in windows of whole words, as in training), and BIO tags are grouped into entities as seqeval groups
        them: `B-X` starts one, `I-X` continues an X (and starts one after `O` or another type). `start`/`end` are
        character offsets into the text, `entity` is `text[start:end]` and `score` the mean over its words of the
        chosen tag's probability. With tags that are not BIO, each word not tagged `O` is its own entity.
        """
        from litgpt.data.ner import TaggedCollator, windows

        texts = _as_texts(texts, "predict")
        spans = [[(m.start(), m.end()) for m in WORD.finditer(text)] for text in texts]
        examples = []
        for t, (text, words) in enumerate(zip(texts, spans)):
            pieces = [p or [self.tokenizer.unk_id or self.tokenizer.pad_id]
                      for p in self.tokenizer.encode_words([text[a:b] for a, b in words])]
            examples += windows(pieces, [0] * len(pieces), t, self.tokenizer.cls_id, self.tokenizer.sep_id,
                                self.max_length)
        probs: List[List[Optional[torch.Tensor]]] = [[None] * len(words) for words in spans]
        for start in range(0, len(examples), self.batch_size):
            chunk = examples[start : start + self.batch_size]
            batch = TaggedCollator(self.tokenizer.pad_id)(chunk)  # training's padding
            out = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            out = out.float().softmax(-1).cpu()
            for row, window in enumerate(chunk):
                for position, text_index, word in window.words:
                    probs[text_index][word] = out[row, position]
        labels = self.labels
        results = []
        for text, words, word_probs in zip(texts, spans, probs):
            tags = [labels[int(p.argmax())] for p in word_probs]
            scores = [float(p.max()) for p in word_probs]
            results.append({"text": text, "entities": group_entities(text, words, tags, scores)})
        return results


def group_entities(text: str, words: List[Tuple[int, int]], tags: List[str], scores: List[float]
                   ) -> List[Dict[str, Any]]:
    """Tagged words -> entities (see `TokenClassifier.predict`)."""
    entities: List[Dict[str, Any]] = []
    current: Optional[Dict[str, Any]] = None
    for (start, end), tag, score in zip(words, tags, scores):
        prefix, _, kind = tag.partition("-")
        bio = prefix in ("B", "I") and kind
        if tag == "O" or not bio or prefix == "B" or current is None or current["label"] != kind:
            current = None
        if tag == "O":
            continue
        if current is None:
            current = {"label": kind if bio else tag, "start": start, "end": end, "scores": []}
            entities.append(current)
        current["end"] = end
        current["scores"].append(score)
        if not bio:
            current = None
    return [{"entity": text[e["start"] : e["end"]], "label": e["label"], "start": e["start"], "end": e["end"],
             "score": sum(e["scores"]) / len(e["scores"])} for e in entities]


class QuestionAnswerer(_Inference):
    """An extractive QA model ready for inference: the answer to a question as a span of its context."""

    kind = "qa"

    @classmethod
    def load(cls, source: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
             batch_size: int = 32, checkpoints_dir: Path = Path("checkpoints"), precision: str = "fp32"):
        """As `_Inference.load`; a finetuning output's `metrics.json` also gives the windows it trained with and,
        for SQuAD v2, the null-answer threshold chosen on its dev split."""
        loaded = super().load(source, device, batch_size, checkpoints_dir, precision)
        settings = qa_settings(loaded.folder, loaded.config.block_size)
        loaded.max_length, loaded.doc_stride = settings["max_length"], settings["doc_stride"]
        loaded.max_answer_length, loaded.null_threshold = settings["max_answer_length"], settings["null_threshold"]
        return loaded

    @inference
    def answer(self, question: Union[str, Sequence[str]], context: Union[str, Sequence[str]]):
        """`{"answer", "start", "end", "score"}` (`litgpt qa --json`), or a list of them for lists of questions and
        contexts. `start`/`end` are character offsets into the context; `score` is the answer's probability among
        the candidate spans and the null answer. `answer` is "" when the model judges the question unanswerable
        (a SQuAD v2 model: the null answer beats the best span by more than its threshold)."""
        from litgpt.data.qa import QACollator, QAExample, apply_null_threshold, best_answers, make_windows

        single = isinstance(question, str)
        questions, contexts = _as_texts(question, "answer"), _as_texts(context, "answer")
        if len(questions) != len(contexts):
            raise UsageError(f"{len(questions)} questions but {len(contexts)} contexts; give one context per question")
        for i, (q, c) in enumerate(zip(questions, contexts), 1):
            if not q.strip() or not c.strip():
                raise UsageError(f"question {i}: the question and its context must not be empty")
        examples = [QAExample(str(i), q.strip(), c, [], f"question {i + 1}")
                    for i, (q, c) in enumerate(zip(questions, contexts))]
        windows = make_windows(self.tokenizer, examples, self.max_length, self.doc_stride)
        starts, ends = [], []
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first : first + self.batch_size]
            batch = {k: v.to(self.device) for k, v in  # training's padding, token types for BERT
                     QACollator(self.tokenizer.pad_id, self.tokenizer.wordpiece)(chunk).items()}
            start, end = self.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            for row, window in enumerate(chunk):
                starts.append(start[row, : len(window.input_ids)].float().cpu())
                ends.append(end[row, : len(window.input_ids)].float().cpu())
        answers = best_answers(examples, windows, starts, ends, max_answer_length=self.max_answer_length)
        if self.null_threshold is not None:
            answers = apply_null_threshold(answers, self.null_threshold)
        out = [{"answer": a["text"], "start": a["start"], "end": a["end"], "score": a["score"]} for a in answers]
        return out[0] if single else out


def qa_settings(folder: Optional[Path], block_size: int) -> Dict[str, Any]:
    """The windows and the null threshold a QA model was finetuned with (its `metrics.json`), else defaults: windows
    of min(384, block_size) tokens overlapping by a quarter, answers of at most 30 tokens, no null threshold."""
    max_length = min(384, block_size)
    settings = {"max_length": max_length, "doc_stride": max_length // 4, "max_answer_length": 30,
                "null_threshold": None}
    path = folder / "metrics.json" if folder is not None else None
    if path is not None and path.is_file():
        report = read_json(path)
        settings.update({k: report[k] for k in settings if report.get(k) is not None})
    return settings


def question_room(max_length: int, doc_stride: int, wordpiece: bool) -> int:
    """The most question tokens that leave a window more context than `doc_stride` (`data.qa.make_windows`)."""
    return max_length - (3 if wordpiece else 4) - doc_stride - 1

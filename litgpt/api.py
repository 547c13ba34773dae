"""Python API for inference: load any checkpoint, then fill masks, embed, classify text, tag entities or answer
questions.

```python
from litgpt.api import Classifier, Embedder, MaskedLM, QuestionAnswerer, TokenClassifier

mlm = MaskedLM.load("out/pretrain-demo/final")
mlm.fill_mask("The capital of France is <mask>.", top_k=5)
clf = Classifier.load("out/roberta_finetuned")
clf.predict(["great movie", "boring plot"])
emb = Embedder.load("path/to/all-MiniLM-L6-v2")  # pooling and normalization from the sentence-transformers files
emb.embed(["a sentence", "another one"])  # [2, 384]
TokenClassifier.load("out/ner").predict("Maria Lopez moved to Lisbon.")  # entities with character spans
QuestionAnswerer.load("out/qa").answer("Where did Maria move?", "Maria Lopez moved to Lisbon in 2015.")
```

`source` is anything `litgpt.checkpoint.load_checkpoint` reads: a litgpt checkpoint dir, a pretraining out_dir,
a training-state file, a HuggingFace dir, or a registry name that `litgpt download` fetched.
Texts go through the model in padded batches of `batch_size`, sorted by length so little compute goes to padding.
"""

import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from litgpt.utils import UsageError, pad_right, read_json

Candidate = Dict[str, Any]  # {"token_id": int, "token": str, "score": float}
POOLING = ("mean", "cls", "max")


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """`None` picks the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here")
    return device


def _as_texts(texts: Union[str, Sequence[str]], what: str) -> List[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{what} expects a str or a list of str, got a list holding {bad[0]}")
    return texts


# Inference shapes are rounded up to these multiples: every new shape costs oneDNN kernels and heap fragments that
# are kept, so a long run over ever-different shapes grew without bound (4.2 GB over 100k texts) where rounded ones
# stay flat. Padding to a multiple of 16 positions costs only attention; the extra rows are a few pad tokens.
LENGTH_MULTIPLE = 16
ROW_MULTIPLE = 64


def pool(encoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str
         ) -> torch.Tensor:
    """`[B, n_embd]` float32 sentence vectors: the first token's state, or the mean or max over the real tokens.
    Only the rows pooling reads are computed (`hidden_at`), plus a few pad rows that round their number up to a
    multiple of `ROW_MULTIPLE` (pad rows never change real ones; they are dropped here)."""
    real = attention_mask.bool()
    wanted = real if pooling != "cls" else torch.zeros_like(real).index_fill_(1, torch.tensor([0]), True)
    rows = wanted | _round_up_rows(real | wanted, ROW_MULTIPLE)
    hidden = encoder.hidden_at(input_ids, attention_mask, rows).float()[wanted[rows]]  # row-major
    if pooling == "cls":
        return hidden
    B, C = real.size(0), hidden.size(-1)
    if pooling == "max":
        padded = hidden.new_full((B, real.size(1), C), float("-inf"))
        padded[real] = hidden
        return padded.max(1).values
    text_of_token = real.nonzero(as_tuple=True)[0]
    return hidden.new_zeros(B, C).index_add_(0, text_of_token, hidden) / real.sum(1, keepdim=True)


def _round_up_rows(computed: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad positions (not in `computed`, first ones first) that bring `computed`'s count up to a multiple of
    `multiple`, as far as there are pads."""
    extra = torch.zeros_like(computed)
    missing = -int(computed.sum()) % multiple
    if missing:
        pads = (~computed).flatten().nonzero().squeeze(1)[:missing]
        extra.view(-1)[pads] = True
    return extra


# a checkpoint's head -> (what it is, the head the others lack, what reads it)
HEADS = {
    "mlm": ("a masked LM", "LM head", "`litgpt fill_mask` / MaskedLM"),
    "base": ("a bare encoder", "head", "`litgpt embed` / Embedder"),
    "classification": ("a sequence classifier", "classification head", "`litgpt classify` / Classifier"),
    "token_classification": ("a token classifier", "token classification head", "`litgpt ner` / TokenClassifier"),
    "qa": ("a question-answering model", "question-answering head", "`litgpt qa` / QuestionAnswerer"),
}


class _Inference:
    """What both wrappers share: the model in eval mode on its device, the tokenizer and padded batching."""

    kind: str = ""  # the head `load` requires (`model_class_for_state_dict`'s names; "": any)

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, batch_size: int = 32,
                 source: str = "") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size {batch_size!r}: must be a positive integer")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.device = device
        self.batch_size = batch_size
        self.source = source
        self.max_length = self.config.block_size  # longer texts are truncated (fill_mask refuses them)
        self.folder: Optional[Path] = None  # the checkpoint's folder, when loaded from one

    @classmethod
    def load(cls, source: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
             batch_size: int = 32, checkpoints_dir: Path = Path("checkpoints")):
        """Loads the weights, config and tokenizer found at `source` onto `device` (default: GPU if any, else CPU)."""
        from litgpt.checkpoint import build_model, load_checkpoint
        from litgpt.model_roberta import model_class_for_state_dict

        device = resolve_device(device)
        checkpoint = load_checkpoint(source, checkpoints_dir)
        kind = model_class_for_state_dict(checkpoint.state_dict)
        if cls.kind and kind != cls.kind and not (cls.kind == "mlm" and kind == "base"):
            hint = " (finetune it first with `litgpt finetune`)" if kind in ("mlm", "base") else ""
            raise UsageError(f"{checkpoint.source}: is {HEADS[kind][0]}, not {HEADS[cls.kind][0]} (it has no "
                             f"{HEADS[cls.kind][1]}); use {HEADS[kind][2]}{hint}")
        tokenizer = checkpoint.load_tokenizer()
        model = build_model(checkpoint.config, checkpoint.state_dict, checkpoint.source)
        loaded = cls(model, tokenizer, device, batch_size, checkpoint.source)
        loaded.folder = checkpoint.tokenizer_dir  # the checkpoint's own files sit beside its tokenizer
        return loaded

    @property
    def encoder(self) -> torch.nn.Module:
        return getattr(self.model, "roberta", self.model)

    def _encode(self, texts: List[str], truncate: bool) -> List[List[int]]:
        limit = self.max_length
        if truncate:
            return self.tokenizer.encode_batch(texts, max_length=limit)
        encoded = self.tokenizer.encode_batch(texts)
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise UsageError(f"text {i + 1} is {len(ids)} tokens long; the model takes at most {limit}")
        return encoded

    def _batches(self, encoded: List[List[int]]):
        """Yields (indices into `encoded`, input_ids, attention_mask), right-padded, longest texts first."""
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            lengths = torch.tensor([len(encoded[i]) for i in idx])
            input_ids = pad_right([torch.tensor(encoded[i], dtype=torch.long) for i in idx], self.tokenizer.pad_id)
            # the length rounded up to a multiple of LENGTH_MULTIPLE (within the model's), for few distinct shapes
            length = min(-(-input_ids.size(1) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE, self.config.block_size)
            input_ids = F.pad(input_ids, (0, length - input_ids.size(1)), value=self.tokenizer.pad_id)
            attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
            yield idx, input_ids.to(self.device), attention_mask.to(self.device)

    @torch.inference_mode()
    def embed(self, texts: Union[str, Sequence[str]], pooling: str = "mean", normalize: bool = False) -> torch.Tensor:
        """One vector per text, `[N, n_embd]` float32 on the CPU, pooled from the encoder's last hidden states.

        `pooling`: "mean" or "max" over the text's real tokens (`<s>`/`[CLS]` and `</s>`/`[SEP]` included, padding
        excluded, as sentence-transformers pools), or "cls", the first token's state. A text's vector therefore does
        not depend on its batch. `normalize` scales each vector to unit length (cosine similarity = dot product).
        Texts longer than `max_length` tokens are truncated.
        """
        if pooling not in POOLING:
            raise UsageError(f"pooling {pooling!r}: expected one of {', '.join(POOLING)}")
        texts = _as_texts(texts, "embed")
        out = torch.empty(len(texts), self.config.n_embd, dtype=torch.float32)
        for idx, input_ids, attention_mask in self._batches(self._encode(texts, truncate=True)):
            vectors = pool(self.encoder, input_ids, attention_mask, pooling)
            out[torch.tensor(idx)] = (F.normalize(vectors, dim=-1) if normalize else vectors).cpu()
        return out


class MaskedLM(_Inference):
    """A masked language model (or a bare encoder, for `embed` only) ready for inference."""

    kind = "mlm"

    @torch.inference_mode()
    def fill_mask(self, text_or_texts: Union[str, Sequence[str]], top_k: int = 5):
        """The `top_k` most likely tokens at every `<mask>`.

        For one str: a list with one entry per `<mask>`, each a list of candidates
        `{"token_id": int, "token": str, "score": float}`, best first. For a list of texts: one such entry per text
        (the `litgpt fill_mask --json` format). `score` is the softmax over the vocabulary at the mask position and
        `token` is `decode([token_id])`, as in transformers' fill-mask pipeline `token_str`.
        """
        if not hasattr(self.model, "lm_head"):
            raise UsageError(f"{self.source}: a bare encoder without an LM head cannot fill masks (embed works)")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"top_k {top_k!r}: must be a positive integer")
        single = isinstance(text_or_texts, str)
        texts = _as_texts(text_or_texts, "fill_mask")
        encoded = self._encode(texts, truncate=False)
        mask_token = self.tokenizer.id_to_token(self.tokenizer.mask_id)
        for i, ids in enumerate(encoded):
            if self.tokenizer.mask_id not in ids:
                raise UsageError(f"text {i + 1} has no {mask_token}: {texts[i]!r}")

        top_k = min(top_k, self.config.padded_vocab_size)
        results: List[Optional[List[List[Candidate]]]] = [None] * len(texts)
        for idx, input_ids, attention_mask in self._batches(encoded):
            where = input_ids == self.tokenizer.mask_id  # row-major: texts in batch order, masks left to right
            hidden = self.encoder.hidden_at(input_ids, attention_mask, where)
            logits = self.model.lm_head(hidden, self.encoder.wte.weight).float()
            scores, token_ids = logits.softmax(dim=-1).topk(top_k, dim=-1)
            scores, token_ids = scores.tolist(), token_ids.tolist()
            counts = where.sum(1).tolist()
            offset = 0
            for i, count in zip(idx, counts):
                results[i] = [self._candidates(token_ids[m], scores[m]) for m in range(offset, offset + count)]
                offset += count
        return results[0] if single else results

    def _candidates(self, token_ids: List[int], scores: List[float]) -> List[Candidate]:
        return [
            {"token_id": t, "token": self.tokenizer.decode([t], skip_special_tokens=False), "score": s}
            for t, s in zip(token_ids, scores)
        ]


class Classifier(_Inference):
    """A sequence classifier (e.g. the output of `litgpt finetune`) ready for inference."""

    kind = "classification"

    @property
    def labels(self) -> List[str]:
        """Label names ordered by label id, from the checkpoint's `id2label` (`LABEL_i` where missing)."""
        return [self.config.id2label.get(i, f"LABEL_{i}") for i in range(self.model.num_labels)]

    @torch.inference_mode()
    def predict(self, texts: Union[str, Sequence[str]], text_pairs: Optional[Union[str, Sequence[str]]] = None,
                threshold: float = 0.5) -> List[Dict[str, Any]]:
        """One answer per text (the `litgpt classify --json` format); with `text_pairs`, per pair (`text`, `text_pair`).

        What a text gets follows the model's `problem_type`: `{"label", "label_id", "probabilities"}` for one class
        (the softmax over the labels, by label id); `{"score"}` for regression; `{"labels", "label_ids",
        "probabilities"}` for multi-label (every label whose sigmoid is >= `threshold`). Texts longer than the
        model's `block_size` are truncated, as in finetuning (pairs longest-first).
        """
        texts = _as_texts(texts, "predict")
        types = None
        if text_pairs is None:
            encoded = self._encode(texts, truncate=True)
        else:
            pairs = _as_texts(text_pairs, "predict")
            if len(pairs) != len(texts):
                raise UsageError(f"{len(texts)} texts but {len(pairs)} text pairs; give one second text per text")
            encoded, types = self.tokenizer.encode_pair_batch(texts, pairs, max_length=self.max_length)
            types = types if any(any(t) for t in types) else None  # RoBERTa: all type 0
        logits: List[Optional[torch.Tensor]] = [None] * len(texts)
        for idx, input_ids, attention_mask in self._batches(encoded):
            token_types = None
            if types is not None:
                token_types = torch.zeros_like(input_ids)
                for row, i in enumerate(idx):
                    token_types[row, : len(types[i])] = torch.tensor(types[i])
            for i, row in zip(idx, self.model(input_ids, attention_mask, token_types).float().cpu()):
                logits[i] = row
        problem_type, labels = self.config.problem_type, self.labels
        out = []
        for i, (text, row) in enumerate(zip(texts, logits)):
            answer: Dict[str, Any] = {"text": text}
            if text_pairs is not None:
                answer["text_pair"] = pairs[i]
            if problem_type == "regression":
                answer["score"] = float(row[0])
            elif problem_type == "multi_label_classification":
                probs = row.sigmoid().tolist()
                ids = [j for j, p in enumerate(probs) if p >= threshold]
                answer.update(labels=[labels[j] for j in ids], label_ids=ids, probabilities=probs)
            else:
                probs = row.softmax(-1).tolist()
                label_id = max(range(len(probs)), key=probs.__getitem__)
                answer.update(label=labels[label_id], label_id=label_id, probabilities=probs)
            out.append(answer)
        return out


class Embedder(_Inference):
    """Sentence embeddings from any checkpoint's encoder: a bare encoder, a masked LM or a classifier.

    From a sentence-transformers folder (all-MiniLM-L6-v2, say) the recipe is read from its files, so the vectors
    equal `SentenceTransformer(folder).encode(texts)`: the pooling from `1_Pooling/config.json`, unit length when
    `modules.json` lists a Normalize module, truncation at `sentence_bert_config.json`'s `max_seq_length`. Elsewhere:
    mean pooling, no normalization, truncation at the model's length. What `load` is given wins.
    """

    pooling: str = "mean"
    normalize: bool = False
    lowercase: bool = False

    @classmethod
    def load(cls, source: Union[str, Path], device: Optional[Union[str, torch.device]] = None, batch_size: int = 32,
             checkpoints_dir: Path = Path("checkpoints"), pooling: Optional[str] = None,
             normalize: Optional[bool] = None, max_length: Optional[int] = None) -> "Embedder":
        if pooling is not None and pooling not in POOLING:
            raise UsageError(f"--pooling {pooling!r}: expected one of {', '.join(POOLING)}")
        embedder = super().load(source, device, batch_size, checkpoints_dir)
        block = embedder.config.block_size
        if max_length is not None and not (isinstance(max_length, int) and 2 <= max_length <= block):
            raise UsageError(f"--max_length {max_length!r}: expected an integer from 2 to the model's {block}")
        recipe = sentence_transformers_recipe(embedder.folder) if embedder.folder is not None else {}
        embedder.pooling = pooling or recipe.get("pooling", "mean")
        embedder.normalize = recipe.get("normalize", False) if normalize is None else normalize
        embedder.max_length = max_length or min(recipe.get("max_length", block), block)
        embedder.lowercase = recipe.get("lowercase", False)
        return embedder

    def embed(self, texts: Union[str, Sequence[str]], pooling: Optional[str] = None,
              normalize: Optional[bool] = None) -> torch.Tensor:
        """`[N, n_embd]` float32 vectors, pooled and normalized as loaded unless given here."""
        texts = _as_texts(texts, "embed")
        if self.lowercase:  # sentence_bert_config.json's do_lower_case, applied before the tokenizer
            texts = [t.lower() for t in texts]
        return super().embed(texts, pooling or self.pooling, self.normalize if normalize is None else normalize)


# sentence-transformers' pooling switches (1_Pooling/config.json) -> our names
ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
ST_MODULES = ("Transformer", "Pooling", "Normalize")


def sentence_transformers_recipe(folder: Path) -> Dict[str, Any]:
    """What a sentence-transformers folder says about turning hidden states into its vectors: `pooling`,
    `normalize` and `max_length`, each only where the folder says it. A module or pooling mode we do not have is an
    error rather than vectors that silently differ."""
    recipe: Dict[str, Any] = {}
    pooling_dir = folder / "1_Pooling"
    if (folder / "modules.json").is_file():
        modules = read_json(folder / "modules.json")
        if not isinstance(modules, list):
            raise UsageError(f"{folder / 'modules.json'}: expected a JSON list of modules")
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
        unknown = [k for k in kinds if k not in ST_MODULES]
        if unknown:
            raise UsageError(f"{folder / 'modules.json'}: module {unknown[0]} is not supported (only "
                             f"{', '.join(ST_MODULES)}), so the vectors would differ from sentence-transformers'")
        recipe["normalize"] = "Normalize" in kinds
        pooling_dir = next((folder / m.get("path", "") for m, k in zip(modules, kinds) if k == "Pooling"), pooling_dir)
    if (pooling_dir / "config.json").is_file():
        settings = read_json(pooling_dir / "config.json")
        modes = [k for k, v in settings.items() if k.startswith("pooling_mode_") and v is True]
        if len(modes) != 1 or modes[0] not in ST_POOLING:
            raise UsageError(f"{pooling_dir / 'config.json'}: pooling {modes or 'none'} is not supported; expected "
                             f"exactly one of {', '.join(ST_POOLING)}")
        recipe["pooling"] = ST_POOLING[modes[0]]
    if (folder / "sentence_bert_config.json").is_file():
        settings = read_json(folder / "sentence_bert_config.json")
        if isinstance(settings.get("max_seq_length"), int) and settings["max_seq_length"] >= 2:
            recipe["max_length"] = settings["max_seq_length"]
        recipe["lowercase"] = settings.get("do_lower_case") is True
    return recipe


# words as CoNLL data splits them: a run of letters and digits (inner hyphens, apostrophes and dots kept, as in
# "O'Neil" or "U.S"), or any other symbol on its own
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


class TokenClassifier(_Inference):
    """A token classifier (NER) ready for inference: the entities of a text with their character spans."""

    kind = "token_classification"

    @property
    def labels(self) -> List[str]:
        return [self.config.id2label.get(i, f"LABEL_{i}") for i in range(self.model.num_labels)]

    @torch.inference_mode()
    def predict(self, texts: Union[str, Sequence[str]]) -> List[Dict[str, Any]]:
        """Per text `{"text", "entities": [{"entity", "label", "start", "end", "score"}]}` (`litgpt ner --json`).

        The text is split into words as CoNLL data is (`WORD`), each word is tagged at its first sub-token (long
        texts in windows of whole words, as in training), and BIO tags are grouped into entities as seqeval groups
        them: `B-X` starts one, `I-X` continues an X (and starts one after `O` or another type). `start`/`end` are
        character offsets into the text, `entity` is `text[start:end]` and `score` the mean over its words of the
        chosen tag's probability. With tags that are not BIO, each word not tagged `O` is its own entity.
        """
        from litgpt.data.ner import windows

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
            ids = pad_right([torch.tensor(w.input_ids) for w in chunk], self.tokenizer.pad_id).to(self.device)
            mask = pad_right([torch.ones(len(w.input_ids), dtype=torch.long) for w in chunk], 0).to(self.device)
            out = self.model(ids, mask).float().softmax(-1).cpu()
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
             batch_size: int = 32, checkpoints_dir: Path = Path("checkpoints")):
        """As `_Inference.load`; a finetuning output's `metrics.json` also gives the windows it trained with and,
        for SQuAD v2, the null-answer threshold chosen on its dev split."""
        loaded = super().load(source, device, batch_size, checkpoints_dir)
        settings = qa_settings(loaded.folder, loaded.config.block_size)
        loaded.max_length, loaded.doc_stride = settings["max_length"], settings["doc_stride"]
        loaded.max_answer_length, loaded.null_threshold = settings["max_answer_length"], settings["null_threshold"]
        return loaded

    @torch.inference_mode()
    def answer(self, question: Union[str, Sequence[str]], context: Union[str, Sequence[str]]):
        """`{"answer", "start", "end", "score"}` (`litgpt qa --json`), or a list of them for lists of questions and
        contexts. `start`/`end` are character offsets into the context; `score` is the answer's probability among
        the candidate spans and the null answer. `answer` is "" when the model judges the question unanswerable
        (a SQuAD v2 model: the null answer beats the best span by more than its threshold)."""
        from litgpt.data.qa import QAExample, apply_null_threshold, best_answers, make_windows

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
            ids = pad_right([torch.tensor(w.input_ids) for w in chunk], self.tokenizer.pad_id).to(self.device)
            mask = pad_right([torch.ones(len(w.input_ids), dtype=torch.long) for w in chunk], 0).to(self.device)
            types = None
            if self.tokenizer.wordpiece:
                types = pad_right([torch.tensor(w.token_types) for w in chunk], 0).to(self.device)
            start, end = self.model(ids, mask, types)
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

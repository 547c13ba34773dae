"""Inference on whole texts: `MaskedLM` (fill masks), `Classifier` (labels, scores, pairs) and `Embedder` (sentence
vectors, reading a sentence-transformers folder's recipe)."""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from litgpt.api.base import POOLING, Candidate, _as_texts, _Inference, inference
from litgpt.config import label_names
from litgpt.utils import UsageError, read_json


class MaskedLM(_Inference):
    """A masked language model (or a bare encoder, for `embed` only) ready for inference."""

    kind = "mlm"

    @inference
    def fill_mask(self, text_or_texts: Union[str, Sequence[str]], top_k: int = 5):
        """The `top_k` most likely tokens at every `<mask>`.

        For one str: a list with one entry per `<mask>`, each a list of candidates
        `{"token_id": int, "token": str, "score": float}`, best first. For a list of texts: one such entry per text
        (the `litgpt fill_mask --json` format). `score` is the softmax over the vocabulary at the mask position and
        `token` is `decode([token_id])`, as in transformers' fill-mask pipeline `token_str`.
        """
        if self.head == "base":
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
            if isinstance(self.model, torch.nn.Module):  # the LM head only at the masks
                hidden = self.encoder.hidden_at(input_ids, attention_mask, where)
                logits = self.model.lm_head(hidden, self.encoder.wte.weight).float()
            else:  # an ONNX export computes every position's logits
                logits = self.model.logits_at(input_ids, attention_mask, where)
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
        return label_names(self.config.id2label, self.model.num_labels)

    @inference
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
             normalize: Optional[bool] = None, max_length: Optional[int] = None, precision: str = "fp32"
             ) -> "Embedder":
        if pooling is not None and pooling not in POOLING:
            raise UsageError(f"--pooling {pooling!r}: expected one of {', '.join(POOLING)}")
        embedder = super().load(source, device, batch_size, checkpoints_dir, precision)
        block = embedder.config.block_size
        if max_length is not None and not (isinstance(max_length, int) and 2 <= max_length <= block):
            raise UsageError(f"--max_length {max_length!r}: expected an integer from 2 to the model's {block}")
        recipe = embedding_recipe(embedder.folder, block)
        embedder.pooling = pooling or recipe["pooling"]
        embedder.normalize = recipe["normalize"] if normalize is None else normalize
        embedder.max_length = max_length or recipe["max_length"]
        embedder.lowercase = recipe["lowercase"]
        return embedder

    def embed(self, texts: Union[str, Sequence[str]], pooling: Optional[str] = None,
              normalize: Optional[bool] = None) -> torch.Tensor:
        """`[N, n_embd]` float32 vectors, pooled and normalized as loaded unless given here."""
        texts = _as_texts(texts, "embed")
        if self.lowercase:  # sentence_bert_config.json's do_lower_case, applied before the tokenizer
            texts = [t.lower() for t in texts]
        return super().embed(texts, pooling or self.pooling, self.normalize if normalize is None else normalize)


def embedding_recipe(folder: Optional[Path], block_size: int) -> Dict[str, Any]:
    """How a checkpoint's vectors are made, in full: what its sentence-transformers files say (see
    `sentence_transformers_recipe`), else mean pooling, no normalization, the model's length and no lowercasing."""
    recipe = sentence_transformers_recipe(folder) if folder is not None else {}
    return {"pooling": recipe.get("pooling", "mean"), "normalize": recipe.get("normalize", False),
            "max_length": min(recipe.get("max_length", block_size), block_size),
            "lowercase": recipe.get("lowercase", False)}


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


def save_sentence_transformers_recipe(folder: Path, recipe: Dict[str, Any], width: int) -> None:
    """Writes the sentence-transformers files that say `recipe` (`embedding_recipe`'s keys) for vectors `width`
    wide, in the layout `sentence_transformers_recipe` reads, so `SentenceTransformer(folder)` pools, truncates and
    normalizes as `Embedder` does."""
    from litgpt.utils import atomic_write_text

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if recipe["normalize"]:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)  # sentence-transformers looks for the module's folder
    modes = {mode: ours == recipe["pooling"] for mode, ours in ST_POOLING.items()}
    pooling = {"word_embedding_dimension": width, **modes, "pooling_mode_mean_sqrt_len_tokens": False,
               "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True}
    length = {"max_seq_length": recipe["max_length"], "do_lower_case": recipe["lowercase"]}
    files = {"modules.json": modules, "1_Pooling/config.json": pooling, "sentence_bert_config.json": length}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / name, json.dumps(content, indent=2) + "\n")

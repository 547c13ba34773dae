"""The tokenizer: RoBERTa's byte-level BPE or BERT's WordPiece, loaded (tokenizer.json, vocab.json + merges.txt, or
vocab.txt) and saved. Training one is `litgpt/train_tokenizer.py`.

Everything goes through HuggingFace `tokenizers`, so ids are the ones `transformers.AutoTokenizer` gives on the same
files.
"""

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from litgpt.utils import UsageError, atomic_write_text, first_line, read_json

DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}
# BERT has no <s>/</s>: [CLS] and [SEP] open and close a sequence
BERT_SPECIAL_TOKENS = {
    "bos_token": "[CLS]",
    "eos_token": "[SEP]",
    "sep_token": "[SEP]",
    "cls_token": "[CLS]",
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
                   "special_tokens_map.json")


def _token_content(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_names(config: Dict[str, Any], wordpiece: bool) -> Dict[str, str]:
    """The special tokens' names: `tokenizer_config.json`'s, else the family's. Where the config names a `[CLS]` /
    `[SEP]` but no bos/eos (BERT's files), those open and close a sequence."""
    defaults = BERT_SPECIAL_TOKENS if wordpiece else DEFAULT_SPECIAL_TOKENS
    names = {k: _token_content(config.get(k)) or v for k, v in defaults.items()}
    for end, role in (("bos_token", "cls_token"), ("eos_token", "sep_token")):
        if _token_content(config.get(end)) is None and _token_content(config.get(role)) is not None:
            names[end] = names[role]
    return names


def _is_wordpiece(backend) -> bool:
    return type(backend.model).__name__ == "WordPiece"


def _bpe_from_files(vocab_json: Path, merges_txt: Path, names: Dict[str, str], config: Dict[str, Any]):
    """RoBERTa's tokenizer from the GPT-2 style `vocab.json` + `merges.txt` pair."""
    from tokenizers import AddedToken, decoders, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    vocab = read_json(vocab_json)
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise UsageError(f"{vocab_json}: expected a JSON object mapping tokens to integer ids")
    try:
        merges_txt.read_text(encoding="utf-8")
        model = BPE.from_file(str(vocab_json), str(merges_txt), **bpe_kwargs())
    except Exception as ex:  # OSError, UnicodeDecodeError, or tokenizers' bare Exception
        reason = first_line(ex) or ex.__class__.__name__
        raise UsageError(f"{merges_txt}: not a readable merges file ({reason})") from None
    backend = HFTokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    declared = {}
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            declared[entry["content"]] = entry
    wanted = [names[k] for k in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token")]
    for token in dict.fromkeys(wanted):
        if token not in vocab:
            continue
        entry = declared.get(token, {})
        lstrip = bool(entry.get("lstrip", token == names["mask_token"]))
        backend.add_special_tokens([AddedToken(token, lstrip=lstrip, rstrip=bool(entry.get("rstrip", False)),
                                               single_word=bool(entry.get("single_word", False)),
                                               normalized=False, special=True)])
    return backend


def _wordpiece_from_vocab(vocab_txt: Path, names: Dict[str, str], config: Dict[str, Any]):
    """BERT's tokenizer from a bare `vocab.txt`, as transformers' `BertTokenizerFast` builds it."""
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordPiece

    try:
        vocab_txt.read_text(encoding="utf-8")
        model = WordPiece.from_file(str(vocab_txt), unk_token=names["unk_token"])
    except Exception as ex:  # OSError, UnicodeDecodeError, or tokenizers' bare Exception
        raise UsageError(f"{vocab_txt}: not a readable WordPiece vocabulary ({first_line(ex) or type(ex).__name__})"
                         ) from None
    backend = HFTokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"), lowercase=bool(config.get("do_lower_case", True)))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    vocab = backend.get_vocab()
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in dict.fromkeys(names.values())
                                if t in vocab])
    return backend


def bpe_kwargs() -> Dict[str, Any]:
    # the settings transformers' RobertaTokenizer uses for the BPE model
    return dict(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)


class Tokenizer:
    """RoBERTa's byte-level BPE or BERT's WordPiece tokenizer.

    `Tokenizer(checkpoint_dir)` loads `tokenizer.json`, else the GPT-2 style `vocab.json` + `merges.txt` pair, else
    BERT's `vocab.txt`. Special tokens are looked up in the files (names from `tokenizer_config.json` when present),
    never hard-coded ids; BERT's `[CLS]` and `[SEP]` serve as `bos_id` and `eos_id`.
    With a bare `vocab.json` + `merges.txt`, `<mask>` strips the space before it (`lstrip`), as RoBERTa was trained;
    a `tokenizer_config.json` whose `added_tokens_decoder` says otherwise wins. A bare `vocab.txt` gets BERT's
    normalizer (lowercased unless `do_lower_case` is false) and pre-tokenizer, as `BertTokenizerFast` builds them.
    """

    def __init__(self, checkpoint_dir: Union[str, Path]) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise UsageError(f"{checkpoint_dir}: tokenizer folder not found")
        config_path = checkpoint_dir / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise UsageError(f"{config_path}: expected a JSON object")

        tokenizer_json = checkpoint_dir / "tokenizer.json"
        vocab_json, merges_txt = checkpoint_dir / "vocab.json", checkpoint_dir / "merges.txt"
        vocab_txt = checkpoint_dir / "vocab.txt"
        if tokenizer_json.is_file():
            try:
                backend = HFTokenizer.from_file(str(tokenizer_json))
            except Exception as ex:  # tokenizers raises a bare Exception for malformed files
                reason = first_line(ex) or ex.__class__.__name__
                raise UsageError(f"{tokenizer_json}: not a readable tokenizer file ({reason})") from None
            names, source = _special_names(config, _is_wordpiece(backend)), tokenizer_json
        elif vocab_json.is_file() and merges_txt.is_file():
            names, source = _special_names(config, wordpiece=False), vocab_json
            backend = _bpe_from_files(vocab_json, merges_txt, names, config)
        elif vocab_txt.is_file():
            names, source = _special_names(config, wordpiece=True), vocab_txt
            backend = _wordpiece_from_vocab(vocab_txt, names, config)
        else:
            raise UsageError(f"{checkpoint_dir}: no tokenizer.json, nor a vocab.json + merges.txt pair, nor a "
                             "vocab.txt")
        self.checkpoint_dir: Optional[Path] = checkpoint_dir
        max_len = config.get("model_max_length")
        self.model_max_length = int(max_len) if isinstance(max_len, (int, float)) and 0 < max_len < 1e9 else None
        self._setup(backend, names, source)

    @classmethod
    def _from_backend(cls, backend, names: Dict[str, str]) -> "Tokenizer":
        obj = cls.__new__(cls)
        obj.checkpoint_dir = None
        obj.model_max_length = None
        obj._setup(backend, dict(names), "<in-memory tokenizer>")
        return obj

    def _setup(self, backend, names: Dict[str, str], source: Any) -> None:
        from tokenizers import pre_tokenizers, processors

        self._tok = backend
        self.wordpiece = _is_wordpiece(backend)
        # `_prefix` holds for byte-level BPE only: a WordPiece normalizer drops whitespace and may grow a text
        self._prefix_ok = backend.normalizer is None and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel)
        self._names = names
        self._truncating: Dict[Any, Any] = {}
        ids = {k: backend.token_to_id(v) for k, v in names.items()}
        missing = [names[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token") if ids[k] is None]
        if missing:
            raise UsageError(f"{source}: no {', '.join(repr(t) for t in missing)} token; the tokenizer needs "
                             f"{names['bos_token']}, {names['eos_token']}, {names['pad_token']} and "
                             f"{names['mask_token']}")
        self.bos_id: int = ids["bos_token"]
        self.eos_id: int = ids["eos_token"]
        self.pad_id: int = ids["pad_token"]
        self.mask_id: int = ids["mask_token"]
        self.unk_id: Optional[int] = ids["unk_token"]
        self.cls_id: int = ids["cls_token"] if ids["cls_token"] is not None else self.bos_id
        self.sep_id: int = ids["sep_token"] if ids["sep_token"] is not None else self.eos_id
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        if backend.post_processor is None and self.wordpiece:
            backend.post_processor = processors.BertProcessing(
                (self.id_to_token(self.sep_id), self.sep_id), (self.id_to_token(self.cls_id), self.cls_id))
        elif backend.post_processor is None:
            backend.post_processor = processors.RobertaProcessing(
                (self.id_to_token(self.sep_id), self.sep_id), (self.id_to_token(self.cls_id), self.cls_id),
                trim_offsets=True, add_prefix_space=False)
        backend.no_truncation()
        backend.no_padding()

    # ---- encoding -------------------------------------------------------------------------------------------
    def _backend(self, max_length: Optional[int], pair: bool = False):
        if max_length is None:
            return self._tok
        minimum = 4 if pair else 2
        if not isinstance(max_length, int) or max_length < minimum:
            raise ValueError(f"max_length must be an int >= {minimum} (room for the special tokens), "
                             f"got {max_length!r}")
        if max_length not in self._truncating:
            from tokenizers import Tokenizer as HFTokenizer

            if len(self._truncating) >= 8:
                self._truncating.pop(next(iter(self._truncating)))
            copy = HFTokenizer.from_str(self._tok.to_str())
            copy.enable_truncation(max_length)
            self._truncating[max_length] = copy
        return self._truncating[max_length]

    def window_backend(self, max_length: int, stride: int):
        """A backend copy that encodes (question, context) pairs into windows of `max_length` tokens, cutting only the
        context and overlapping consecutive windows by `stride` tokens (`Encoding.overflowing` holds the rest), as
        HF's `run_qa.py` asks its tokenizer to."""
        from tokenizers import Tokenizer as HFTokenizer

        key = ("windows", max_length, stride)
        if key not in self._truncating:
            copy = HFTokenizer.from_str(self._tok.to_str())
            copy.enable_truncation(max_length, stride=stride, strategy="only_second")
            self._truncating[key] = copy
        return self._truncating[key]

    def _prefix(self, text: str, max_length: Optional[int]) -> str:
        """With `max_length`, only a prefix of a huge text can reach the output: tokenize just that, so a 100 MB line
        costs what a 100 kB one does. Every token spans at most `max_token_chars` characters, so the prefix still
        holds more than `max_length` tokens and the truncated ids are unchanged."""
        if max_length is None or not self._prefix_ok:
            return text
        limit = (max_length + 2) * self.max_token_chars
        return text[:limit] if len(text) > limit else text

    @property
    def max_token_chars(self) -> int:
        if getattr(self, "_max_token_chars", None) is None:
            self._max_token_chars = max((len(t) for t in self._tok.get_vocab(with_added_tokens=True)), default=1)
        return self._max_token_chars

    def encode(self, text: str, max_length: Optional[int] = None, add_special_tokens: bool = True) -> List[int]:
        """`<s> text </s>` ids (`[CLS] text [SEP]` for WordPiece). With `max_length`, the text is cut so the result
        fits and still ends with `</s>`."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        backend = self._backend(max_length)
        return backend.encode(self._prefix(text, max_length), add_special_tokens=add_special_tokens).ids

    def encode_pair(self, text_a: str, text_b: str, max_length: Optional[int] = None) -> List[int]:
        """`<s> A </s></s> B </s>` (`[CLS] A [SEP] B [SEP]`); truncation removes tokens from the longer text first
        (HF's `longest_first`)."""
        return self._backend(max_length, pair=True).encode(text_a, text_b).ids

    def encode_pair_batch(self, texts_a: Sequence[str], texts_b: Sequence[str], max_length: Optional[int] = None
                          ) -> Tuple[List[List[int]], List[List[int]]]:
        """`encode_pair` for many pairs at once: (ids, token type ids). The types are 0 for the first text and its
        special tokens and 1 for the second (`[CLS] A [SEP]` / `B [SEP]`) with WordPiece, all 0 with RoBERTa's
        BPE, as HuggingFace's tokenizers give them."""
        pairs = list(zip(texts_a, texts_b))
        if len(pairs) != len(texts_a) or len(pairs) != len(texts_b):
            raise ValueError("encode_pair_batch expects as many second texts as first texts")
        if not all(isinstance(a, str) and isinstance(b, str) for a, b in pairs):
            raise TypeError("encode_pair_batch expects sequences of str")
        encodings = self._backend(max_length, pair=True).encode_batch(pairs)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def encode_words(self, words: Sequence[str]) -> List[List[int]]:
        """Each word's sub-token ids, no special tokens, as HF tokenizes pre-split words (`is_split_into_words`;
        byte-level BPE with `add_prefix_space=True`, so every word is read with the space before it)."""
        texts = list(words) if self.wordpiece else [" " + w for w in words]
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_batch(self, texts: Sequence[str], max_length: Optional[int] = None,
                     add_special_tokens: bool = True) -> List[List[int]]:
        """`encode` for many texts at once through the Rust backend (parallel unless TOKENIZERS_PARALLELISM=false)."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_batch expects a sequence of str")
        texts = [self._prefix(t, max_length) for t in texts]
        backend = self._backend(max_length)
        # encode_batch_fast (tokenizers >= 0.20) skips the offsets; the ids are the same
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    def id_to_token(self, id: int) -> Optional[str]:
        return self._tok.id_to_token(int(id))

    @property
    def special_ids(self) -> Set[int]:
        """Ids of every special token (the ones `decode` skips and masking never selects)."""
        ids = {i for i, tok in self._tok.get_added_tokens_decoder().items() if tok.special}
        ids.update(i for i in (self.bos_id, self.eos_id, self.pad_id, self.mask_id, self.unk_id) if i is not None)
        return ids

    @property
    def fingerprint(self) -> str:
        """A hash of the full tokenizer definition; data caches are keyed on it."""
        import hashlib

        return hashlib.sha256(self._tok.to_str().encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.checkpoint_dir)!r}, vocab_size={self.vocab_size})"

    # ---- saving ---------------------------------------------------------------------------------------------
    def save(self, out_dir: Union[str, Path], model_max_length: Optional[int] = None) -> None:
        """Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json and the model's own files (BPE:
        vocab.json + merges.txt; WordPiece: vocab.txt) atomically.

        `transformers.AutoTokenizer.from_pretrained(out_dir)` loads the result and gives the same ids.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model_max_length = model_max_length or self.model_max_length or 512
        added = {}
        for i, tok in sorted(self._tok.get_added_tokens_decoder().items()):
            added[str(i)] = {"content": tok.content, "lstrip": tok.lstrip, "normalized": tok.normalized,
                             "rstrip": tok.rstrip, "single_word": tok.single_word, "special": tok.special}
        tokens = {k: v for k, v in self._names.items() if self.token_to_id(v) is not None}
        if self.wordpiece:
            normalizer = json.loads(self._tok.to_str()).get("normalizer") or {}
            style = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(normalizer.get("lowercase", False))}
            tokens = {k: v for k, v in tokens.items() if k not in ("bos_token", "eos_token")}  # BERT has neither
        else:
            style = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False, "trim_offsets": True,
                     "errors": "replace"}
        config = {
            **style,
            **tokens,
            "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": False,
            "added_tokens_decoder": added,
        }
        files = {
            "tokenizer.json": self._tok.to_str(pretty=True),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
            "special_tokens_map.json": json.dumps(tokens, indent=2, ensure_ascii=False),
        }
        with tempfile.TemporaryDirectory() as tmp:
            self._tok.model.save(tmp)
            for name in ("vocab.json", "merges.txt", "vocab.txt"):
                if (Path(tmp) / name).is_file():
                    files[name] = (Path(tmp) / name).read_text(encoding="utf-8")
        for name, text in files.items():
            atomic_write_text(out_dir / name, text)

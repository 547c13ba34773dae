"""Byte-level BPE tokenizer for RoBERTa: loading (tokenizer.json or vocab.json + merges.txt), saving, training.

Everything goes through HuggingFace `tokenizers`, so ids are the ones `transformers.AutoTokenizer` gives on the same
files.
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Union

from litgpt.utils import UsageError, atomic_write_text, check_writable_dir, first_line

DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
# 256 byte-level symbols plus <s>, <pad>, </s>, <unk> and <mask>
MIN_VOCAB_SIZE = 261


def _token_content(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fp:
            return json.load(fp)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as ex:
        reason = first_line(ex)
        raise UsageError(f"{path}: not a readable JSON file ({ex.__class__.__name__}: {reason})") from None


def _bpe_kwargs() -> Dict[str, Any]:
    # the settings transformers' RobertaTokenizer uses for the BPE model
    return dict(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)


class Tokenizer:
    """RoBERTa's byte-level BPE tokenizer.

    `Tokenizer(checkpoint_dir)` loads `tokenizer.json`, or else the GPT-2 style `vocab.json` + `merges.txt` pair.
    Special tokens are looked up in the files (names from `tokenizer_config.json` when present), never hard-coded ids.
    With a bare `vocab.json` + `merges.txt`, `<mask>` strips the space before it (`lstrip`), as RoBERTa was trained;
    a `tokenizer_config.json` whose `added_tokens_decoder` says otherwise wins.
    """

    def __init__(self, checkpoint_dir: Union[str, Path]) -> None:
        from tokenizers import AddedToken, decoders, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.models import BPE

        checkpoint_dir = Path(checkpoint_dir)
        if not checkpoint_dir.is_dir():
            raise UsageError(f"{checkpoint_dir}: tokenizer folder not found")
        config_path = checkpoint_dir / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise UsageError(f"{config_path}: expected a JSON object")
        names = {k: _token_content(config.get(k)) or v for k, v in DEFAULT_SPECIAL_TOKENS.items()}

        tokenizer_json = checkpoint_dir / "tokenizer.json"
        vocab_json, merges_txt = checkpoint_dir / "vocab.json", checkpoint_dir / "merges.txt"
        if tokenizer_json.is_file():
            try:
                backend = HFTokenizer.from_file(str(tokenizer_json))
            except Exception as ex:  # tokenizers raises a bare Exception for malformed files
                reason = first_line(ex) or ex.__class__.__name__
                raise UsageError(f"{tokenizer_json}: not a readable tokenizer file ({reason})") from None
            source = tokenizer_json
        elif vocab_json.is_file() and merges_txt.is_file():
            vocab = _read_json(vocab_json)
            if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
                raise UsageError(f"{vocab_json}: expected a JSON object mapping tokens to integer ids")
            try:
                merges_txt.read_text(encoding="utf-8")
                model = BPE.from_file(str(vocab_json), str(merges_txt), **_bpe_kwargs())
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
            source = vocab_json
        else:
            raise UsageError(f"{checkpoint_dir}: no tokenizer.json, nor a vocab.json + merges.txt pair")
        self.checkpoint_dir: Optional[Path] = checkpoint_dir
        max_len = config.get("model_max_length")
        self.model_max_length = int(max_len) if isinstance(max_len, (int, float)) and 0 < max_len < 1e9 else None
        self._setup(backend, names, source)

    @classmethod
    def _from_backend(cls, backend, names: Optional[Dict[str, str]] = None) -> "Tokenizer":
        obj = cls.__new__(cls)
        obj.checkpoint_dir = None
        obj.model_max_length = None
        obj._setup(backend, dict(names or DEFAULT_SPECIAL_TOKENS), "<in-memory tokenizer>")
        return obj

    def _setup(self, backend, names: Dict[str, str], source: Any) -> None:
        from tokenizers import processors

        self._tok = backend
        self._names = names
        self._truncating: Dict[int, Any] = {}
        ids = {k: backend.token_to_id(v) for k, v in names.items()}
        missing = [names[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token") if ids[k] is None]
        if missing:
            raise UsageError(f"{source}: no {', '.join(repr(t) for t in missing)} token; a RoBERTa tokenizer needs "
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
        if backend.post_processor is None:
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

    def _prefix(self, text: str, max_length: Optional[int]) -> str:
        """With `max_length`, only a prefix of a huge text can reach the output: tokenize just that, so a 100 MB line
        costs what a 100 kB one does. Every token spans at most `max_token_chars` characters, so the prefix still
        holds more than `max_length` tokens and the truncated ids are unchanged."""
        if max_length is None:
            return text
        limit = (max_length + 2) * self.max_token_chars
        return text[:limit] if len(text) > limit else text

    @property
    def max_token_chars(self) -> int:
        if getattr(self, "_max_token_chars", None) is None:
            self._max_token_chars = max((len(t) for t in self._tok.get_vocab(with_added_tokens=True)), default=1)
        return self._max_token_chars

    def encode(self, text: str, max_length: Optional[int] = None, add_special_tokens: bool = True) -> List[int]:
        """`<s> text </s>` ids. With `max_length`, the text is cut so the result fits and still ends with `</s>`."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        backend = self._backend(max_length)
        return backend.encode(self._prefix(text, max_length), add_special_tokens=add_special_tokens).ids

    def encode_pair(self, text_a: str, text_b: str, max_length: Optional[int] = None) -> List[int]:
        """`<s> A </s></s> B </s>`; truncation removes tokens from the longer text first (HF's `longest_first`)."""
        return self._backend(max_length, pair=True).encode(text_a, text_b).ids

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
        """Writes tokenizer.json, tokenizer_config.json, vocab.json, merges.txt and special_tokens_map.json atomically.

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
        config = {
            "tokenizer_class": "RobertaTokenizer",
            **tokens,
            "model_max_length": int(model_max_length),
            "add_prefix_space": False,
            "trim_offsets": True,
            "errors": "replace",
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
            for name in ("vocab.json", "merges.txt"):
                if (Path(tmp) / name).is_file():
                    files[name] = (Path(tmp) / name).read_text(encoding="utf-8")
        for name, text in files.items():
            atomic_write_text(out_dir / name, text)


# ---- training -----------------------------------------------------------------------------------------------
def _iter_training_texts(texts_or_files: Iterable[Union[str, Path]], errors: str = "strict") -> Iterator[str]:
    from litgpt.data.readers import iter_units

    for item in texts_or_files:
        if isinstance(item, Path):
            for _, _, piece, _ in iter_units(item, unit="line", errors=errors):
                if piece:
                    yield piece
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(f"train_tokenizer expects str texts or Path files, got {type(item).__name__}")


def train_tokenizer(texts_or_files: Iterable[Union[str, Path]], vocab_size: int,
                    out_dir: Optional[Union[str, Path]] = None,
                    min_frequency: int = 2) -> Tokenizer:
    """Trains a RoBERTa-style byte-level BPE tokenizer.

    `texts_or_files` mixes `str` texts and `Path` files (`.txt`: one text per line; `.jsonl`: the `text` fields).
    Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the 256 byte symbols and the merges, and `<mask>` last, so
    `vocab_size` is the total including `<mask>` (smaller if the text runs out of merges).
    With `out_dir`, the files are written there (see `Tokenizer.save`) and the returned tokenizer reads them back.
    """
    from tokenizers import AddedToken, decoders, pre_tokenizers, processors, trainers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise UsageError(f"vocab_size {vocab_size}: must be at least {MIN_VOCAB_SIZE} (256 byte symbols + 5 special "
                         "tokens)")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise UsageError(f"min_frequency {min_frequency}: must be a positive integer")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend = HFTokenizer(BPE(**_bpe_kwargs()))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    items = list(texts_or_files)
    seen = [0]

    def counted() -> Iterator[str]:
        for text in _iter_training_texts(items):
            seen[0] += bool(text.strip())
            yield text

    backend.train_from_iterator(counted(), trainer=trainer)
    if not seen[0]:  # nothing is written for a tokenizer that learned nothing
        files = [str(i) for i in items if isinstance(i, Path)]
        raise UsageError(f"no text found to train a tokenizer on{' in ' + ', '.join(files) if files else ''}"
                         " (empty input); expected UTF-8 text")

    # rebuild with <mask> appended to the BPE vocabulary, so vocab.json holds it like RoBERTa's does
    model = json.loads(backend.to_str())["model"]
    vocab: Dict[str, int] = model["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    vocab["<mask>"] = max(vocab.values()) + 1
    final = HFTokenizer(BPE(vocab=vocab, merges=merges, **_bpe_kwargs()))
    final.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    final.decoder = decoders.ByteLevel()
    final.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True)
                              for t in specials])
    final.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    final.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                        add_prefix_space=False)
    tokenizer = Tokenizer._from_backend(final)
    if out_dir is None:
        return tokenizer
    tokenizer.save(out_dir)
    return Tokenizer(out_dir)


def train_tokenizer_command(data_dir: Path, out_dir: Path, vocab_size: int = 8000, min_frequency: int = 2) -> None:
    """Train a byte-level BPE tokenizer (RoBERTa style) on a folder of text.

    Args:
        data_dir: A folder (searched recursively) or a single file of `.txt` (one text per line) and `.jsonl`
            (one JSON object per line with a `text` field) files, UTF-8.
        out_dir: Where tokenizer.json, tokenizer_config.json, vocab.json, merges.txt and special_tokens_map.json go.
            It must be new, empty, or a tokenizer folder written before (holding only those files).
        vocab_size: Size of the vocabulary, special tokens included (`<mask>` gets the last id).
        min_frequency: Merges seen fewer times than this are not learned.
    """
    from litgpt.data.readers import find_text_files

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    files = find_text_files(data_dir, "data_dir")
    check_writable_dir(out_dir, "out_dir")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in TOKENIZER_FILES)
        if foreign:
            raise UsageError(f"out_dir {out_dir}: not empty and not a tokenizer folder (holds {', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}); pick a new folder")
    count = 0

    def texts() -> Iterator[str]:
        nonlocal count
        for text in _iter_training_texts(files):
            count += 1
            yield text

    tokenizer = train_tokenizer(texts(), vocab_size=vocab_size, min_frequency=min_frequency)
    if count == 0:
        raise UsageError(f"data_dir {data_dir}: no text found in {len(files)} file(s)")
    tokenizer.save(out_dir)
    tokenizer = Tokenizer(out_dir)
    print(f"Trained a byte-level BPE tokenizer with {tokenizer.vocab_size} tokens on {len(files)} file(s); "
          f"saved to {out_dir}", file=sys.stderr)

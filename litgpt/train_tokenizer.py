"""Training a tokenizer on your own text: RoBERTa's byte-level BPE (the default) or BERT's WordPiece.

Both are trained by HuggingFace `tokenizers` and saved in the files `transformers.AutoTokenizer` reads; the special
tokens get fixed ids at the start of the vocabulary (`<mask>` is BPE's last id, as in RoBERTa's).
"""

import json
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Union

from litgpt.tokenizer import BERT_SPECIAL_TOKENS, DEFAULT_SPECIAL_TOKENS, TOKENIZER_FILES, Tokenizer, bpe_kwargs
from litgpt.utils import UsageError, check_writable_dir

KINDS = ("bpe", "wordpiece")
# BPE: 256 byte-level symbols plus <s>, <pad>, </s>, <unk> and <mask>
MIN_VOCAB_SIZE = 261
# WordPiece: the five special tokens first, so [CLS], [SEP] and [MASK] are 2, 3 and 4
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_WORDPIECE_VOCAB_SIZE = 100


def train_tokenizer(texts_or_files: Iterable[Union[str, Path]], vocab_size: int,
                    out_dir: Optional[Union[str, Path]] = None, min_frequency: int = 2,
                    kind: str = "bpe") -> Tokenizer:
    """Trains a tokenizer: `kind="bpe"` (RoBERTa's byte-level BPE) or `"wordpiece"` (BERT's, lowercased).

    `texts_or_files` mixes `str` texts and `Path` files (`.txt`: one text per line; `.jsonl`: the `text` fields).
    BPE ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the 256 byte symbols and the merges, and `<mask>` last.
    WordPiece ids: `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4, then the alphabet and the word pieces.
    `vocab_size` counts the special tokens (the result is smaller if the text runs out of merges).
    With `out_dir`, the files are written there (see `Tokenizer.save`) and the returned tokenizer reads them back.
    """
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    minimum = MIN_VOCAB_SIZE if kind == "bpe" else MIN_WORDPIECE_VOCAB_SIZE
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        what = "256 byte symbols + 5 special tokens" if kind == "bpe" else "5 special tokens and an alphabet"
        raise UsageError(f"vocab_size {vocab_size}: must be at least {minimum} for {kind} ({what})")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise UsageError(f"min_frequency {min_frequency}: must be a positive integer")
    items = list(texts_or_files)
    seen = [0]

    def counted() -> Iterator[str]:
        for text in iter_training_texts(items):
            seen[0] += bool(text.strip())
            yield text

    train = _train_bpe if kind == "bpe" else _train_wordpiece
    tokenizer = train(counted(), vocab_size, min_frequency)
    if not seen[0]:  # nothing is written for a tokenizer that learned nothing
        files = [str(i) for i in items if isinstance(i, Path)]
        raise UsageError(f"no text found to train a tokenizer on{' in ' + ', '.join(files) if files else ''}"
                         " (empty input); expected UTF-8 text")
    if out_dir is None:
        return tokenizer
    tokenizer.save(out_dir)
    return Tokenizer(out_dir)


def _train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    from tokenizers import AddedToken, decoders, pre_tokenizers, processors, trainers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend = HFTokenizer(BPE(**bpe_kwargs()))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)

    # rebuild with <mask> appended to the BPE vocabulary, so vocab.json holds it like RoBERTa's does
    model = json.loads(backend.to_str())["model"]
    vocab: Dict[str, int] = model["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    vocab["<mask>"] = max(vocab.values()) + 1
    final = HFTokenizer(BPE(vocab=vocab, merges=merges, **bpe_kwargs()))
    final.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    final.decoder = decoders.ByteLevel()
    final.add_special_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True)
                              for t in specials])
    final.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    final.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                        add_prefix_space=False)
    return Tokenizer._from_backend(final, DEFAULT_SPECIAL_TOKENS)


def _train_wordpiece(texts: Iterator[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece

    backend = HFTokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # the alphabet is capped (rarer characters become [UNK]) so it cannot crowd out the word pieces
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=WORDPIECE_SPECIALS, limit_alphabet=vocab_size // 2,
                                        show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return Tokenizer._from_backend(backend, BERT_SPECIAL_TOKENS)


def iter_training_texts(texts_or_files: Iterable[Union[str, Path]], errors: str = "strict") -> Iterator[str]:
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


def train_tokenizer_command(data_dir: Path, out_dir: Path, vocab_size: int = 8000, min_frequency: int = 2,
                            kind: str = "bpe") -> None:
    """Train a tokenizer on a folder of text: byte-level BPE (RoBERTa style) or WordPiece (BERT style).

    Args:
        data_dir: A folder (searched recursively) or a single file of `.txt` (one text per line) and `.jsonl`
            (one JSON object per line with a `text` field) files, UTF-8.
        out_dir: Where tokenizer.json, tokenizer_config.json, special_tokens_map.json and the vocabulary files
            (vocab.json + merges.txt, or vocab.txt) go. It must be new, empty, or a tokenizer folder written before
            (holding only those files).
        vocab_size: Size of the vocabulary, special tokens included.
        min_frequency: Merges seen fewer times than this are not learned.
        kind: `bpe` (RoBERTa: byte-level, cased, `<mask>` last) or `wordpiece` (BERT: lowercased, `[PAD]`,
            `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]` first).
    """
    from litgpt.data.readers import find_text_files

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
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
        for text in iter_training_texts(files):
            count += 1
            yield text

    tokenizer = train_tokenizer(texts(), vocab_size=vocab_size, min_frequency=min_frequency, kind=kind)
    if count == 0:
        raise UsageError(f"data_dir {data_dir}: no text found in {len(files)} file(s)")
    tokenizer.save(out_dir)
    for stale in ("vocab.txt",) if kind == "bpe" else ("vocab.json", "merges.txt"):  # the other kind's, from before
        (out_dir / stale).unlink(missing_ok=True)
    tokenizer = Tokenizer(out_dir)
    name = "byte-level BPE" if kind == "bpe" else "WordPiece"
    print(f"Trained a {name} tokenizer with {tokenizer.vocab_size} tokens on {len(files)} file(s); "
          f"saved to {out_dir}", file=sys.stderr)

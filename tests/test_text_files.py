"""TextFiles: litdata cache (packed FULL-SENTENCES blocks, lines), exact resume, reading in bounded slices, errors."""

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_loaders_leave_global_rng_alone,
    batches_and_states,
    demo_lines,
    resumed_batches,
    same_batches,
    write_files,
)

import litgpt.data.readers as readers
import litgpt.data.text_files as text_files
import litgpt.data.text_tokenize as text_tokenize
from litgpt.data.mlm import IGNORE_INDEX
from litgpt.data.readers import iter_units, plan_ranges, split_for_tokenizer
from litgpt.data.text_files import TextFiles
from litgpt.utils import UsageError


def write_corpus(folder: Path, n_txt_docs=70, n_jsonl=40, seed=0):
    """Unique documents: .txt with blank lines between documents (and stray whitespace), plus a .jsonl.
    Returns the documents' texts as TextFiles sees them (stripped lines joined with newlines)."""
    rng = random.Random(seed)
    lines = demo_lines()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    docs, raw = [], []
    for d in range(n_txt_docs):
        sents = [f"Document {d} begins."] + rng.sample(lines, rng.randint(1, 6))
        docs.append("\n".join(sents))
        raw.append("\n".join(("  " if i % 3 == 0 else "") + s + (" \t" if i % 2 else "") for i, s in enumerate(sents)))
    (folder / "a.txt").write_text("\n\n".join(raw[:40]) + "\n", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("\r\n \r\n".join(r.replace("\n", "\r\n") for r in raw[40:]), encoding="utf-8")
    records = []
    for d in range(n_jsonl):
        text = f"Record {d}: " + " ".join(rng.sample(lines, rng.randint(1, 4)))
        records.append(json.dumps({"id": d, "text": text}, ensure_ascii=d % 2 == 0))
        docs.append(text)
    (folder / "c.jsonl").write_text("\n".join(records[:20]) + "\n\n" + "\n".join(records[20:]) + "\n", encoding="utf-8")
    (folder / "ignored.md").write_text("# not read\n", encoding="utf-8")
    (folder / ".hidden").mkdir(exist_ok=True)
    (folder / ".hidden" / "skip.txt").write_text("never read\n", encoding="utf-8")
    return docs


def make(tokenizer, corpus, cache, block_size=32, batch_size=4, **kwargs):
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("val_fraction", 0.15)
    data = TextFiles(train_data_path=corpus, cache_dir=cache, **kwargs)
    data.connect(tokenizer, batch_size=batch_size, max_seq_length=block_size, seed=7)
    data.prepare_data()
    data.setup()
    return data


def token_stream(folder: Path):
    """Every token of a packed split, in storage order."""
    from litdata import StreamingDataset, TokensLoader

    return [int(t[0]) for t in StreamingDataset(str(folder), item_loader=TokensLoader(block_size=1))]


def documents(stream, tokenizer):
    docs, current = [], None
    for t in stream:
        if t == tokenizer.bos_id:
            assert current is None
            current = []
        elif t == tokenizer.eos_id:
            docs.append(tuple(current))
            current = None
        else:
            current.append(t)
    assert current is None
    return docs


def test_packed_full_sentences(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(text_files, "MIN_RANGE_BYTES", 2000)  # several byte ranges per file, 2 workers
    docs = write_corpus(tmp_path / "corpus")
    data = make(tokenizer, tmp_path / "corpus", tmp_path / "cache", num_workers=2)
    train = documents(token_stream(tmp_path / "cache" / "train"), tokenizer)
    val = documents(token_stream(tmp_path / "cache" / "val"), tokenizer)
    expected = [tuple(ids) for ids in tokenizer.encode_batch(docs, add_special_tokens=False)]
    assert sorted(train + val) == sorted(expected)  # every document once, whole, as <s> ... </s>
    assert val and not set(train) & set(val)
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["stats"]["train"]["documents"] == len(train) and meta["stats"]["val"]["documents"] == len(val)
    loader = data.train_dataloader()
    per_epoch = len(loader)
    batches = list(loader)
    assert len(batches) == per_epoch
    for b in batches:
        assert b["input_ids"].shape == (4, 32)
        assert (b["attention_mask"] == 1).all() and not (b["input_ids"] == tokenizer.pad_id).any()
        selected = b["labels"] != IGNORE_INDEX
        assert 0 < selected.sum() and not torch.isin(b["labels"][selected], torch.tensor([0, 1, 2, 3])).any()
    # every block of the epoch once (the last batch takes its rest from the next epoch's shuffle)
    order = loader.order(0)
    assert len(order) == len(batches) * 4 and len(set(order)) == len(order)
    assert {i for e, i in order if e == 0} == set(range(len(loader.dataset))) >= {i for e, i in order}
    val_batches = [list(data.val_dataloader()) for _ in range(2)]
    assert val_batches[0] and same_batches(*val_batches)


def test_lines_mode(tokenizer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = demo_lines()[:120] + [" ".join(demo_lines()[:40])]  # the last one is longer than a block
    (corpus / "a.txt").write_text("\n".join(lines[:60]) + "\n\n   \n" + "\n".join(lines[60:]), encoding="utf-8")
    data = make(tokenizer, corpus, tmp_path / "cache", mode="lines", val_fraction=0.2, batch_size=8)
    from litdata import StreamingDataset

    stored = {name: [tuple(int(t) for t in item) for item in StreamingDataset(str(tmp_path / "cache" / name))]
              for name in ("train", "val")}
    expected = [tuple(ids) for ids in tokenizer.encode_batch(lines, max_length=32)]
    assert sorted(stored["train"] + stored["val"]) == sorted(expected)
    assert stored["val"] and not set(stored["train"]) & set(stored["val"])
    rows = []
    for b in data.train_dataloader():
        assert len(b["input_ids"]) == 8  # whole batches
        for ids, labels, mask in zip(b["input_ids"], b["labels"], b["attention_mask"]):
            n = int(mask.sum())
            assert (ids[n:] == tokenizer.pad_id).all() and (labels[n:] == IGNORE_INDEX).all()
            rows.append(tuple(torch.where(labels != IGNORE_INDEX, labels, ids)[:n].tolist()))
    assert set(rows) <= set(stored["train"]) and len(rows) > len(stored["train"]) - 8
    assert max(map(len, rows)) == 32 and b["input_ids"].shape[1] <= 32


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_resume(tokenizer, tmp_path, num_workers):
    write_corpus(tmp_path / "corpus")
    reference = make(tokenizer, tmp_path / "corpus", tmp_path / "cache", num_workers=num_workers)
    batches, states = batches_and_states(reference, epochs=2)
    per_epoch = len(batches) // 2
    first, second = batches[:per_epoch], batches[per_epoch:]
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second))  # reshuffled/masked
    for cut in (3, per_epoch, per_epoch + 2):  # mid-epoch, at the end of an epoch, in the next one
        resumed = make(tokenizer, tmp_path / "corpus", tmp_path / "cache", num_workers=num_workers)
        rest = resumed_batches(resumed, states[cut], len(batches) - cut)
        assert len(rest) == len(batches) - cut
        assert same_batches(rest, batches[cut:])


def test_loaders_leave_the_global_rng_alone(tokenizer, tmp_path):
    write_corpus(tmp_path / "corpus")
    assert_loaders_leave_global_rng_alone(make(tokenizer, tmp_path / "corpus", tmp_path / "cache", num_workers=1))


def test_cache_reused_and_rebuilt(tokenizer, tmp_path):
    write_corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"
    make(tokenizer, tmp_path / "corpus", cache)
    stamp = (cache / "train" / "index.json").stat().st_mtime_ns
    make(tokenizer, tmp_path / "corpus", cache, block_size=16)  # packed blocks are cut at read time
    assert (cache / "train" / "index.json").stat().st_mtime_ns == stamp
    with open(tmp_path / "corpus" / "a.txt", "a", encoding="utf-8") as fp:
        fp.write("\nA new document appended later.\n")
    make(tokenizer, tmp_path / "corpus", cache)
    assert (cache / "train" / "index.json").stat().st_mtime_ns != stamp
    # the default location is keyed on the inputs
    monkey_home = tmp_path / "home"
    import os

    os.environ["LITGPT_CACHE"] = str(monkey_home)
    try:
        a = make(tokenizer, tmp_path / "corpus", None)
        b = make(tokenizer, tmp_path / "corpus", None, mode="lines")
        assert a.cache_root() != b.cache_root() and a.cache_root().parent == monkey_home / "text_files"
    finally:
        del os.environ["LITGPT_CACHE"]


def test_long_lines_streamed_exactly(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "READ_BYTES", 4096)
    monkeypatch.setattr(text_tokenize, "PIECE_CHARS", 5000)
    monkeypatch.setattr(text_tokenize, "BATCH_CHARS", 3000)
    rng = random.Random(1)
    text = " ".join(rng.choice(demo_lines()) for _ in range(3000)) + " Ünïcödé ✓ 東京"  # ~150 KB on one line
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "big.txt").write_text(text, encoding="utf-8")  # no newline at all
    (corpus / "small.txt").write_text("\n".join(demo_lines()[:50]) + "\n\n" + "\n".join(demo_lines()[50:100]),
                                      encoding="utf-8")
    make(tokenizer, corpus, tmp_path / "packed", val_data_path=corpus / "small.txt")
    docs = documents(token_stream(tmp_path / "packed" / "train"), tokenizer)
    assert tuple(tokenizer.encode(text, add_special_tokens=False)) in docs  # cut in pieces, tokenized exactly
    lines = make(tokenizer, corpus, tmp_path / "lines", mode="lines", val_data_path=corpus / "small.txt")
    rows = [tuple(torch.where(b["labels"] != IGNORE_INDEX, b["labels"], b["input_ids"])[i].tolist())
            for b in lines.train_dataloader() for i in range(len(b["input_ids"]))]
    assert tuple(tokenizer.encode(text, max_length=32)) in rows


def test_split_for_tokenizer_is_exact(tokenizer):
    rng = random.Random(2)
    text = "  ".join(rng.sample(demo_lines(), 60)) + "\n\tTabs,  spaces\n\nand\u3000ideographic space 東京 😀 end."
    whole = tokenizer.encode(text, add_special_tokens=False)
    for limit in range(20, len(text), 37):
        head, tail = split_for_tokenizer(text, limit)
        assert head + tail == text and 0 < len(head) <= limit
        pieces = tokenizer.encode(head, add_special_tokens=False) + tokenizer.encode(tail, add_special_tokens=False)
        assert pieces == whole
    assert split_for_tokenizer("x" * 100, 30) == ("x" * 30, "x" * 70)  # no safe point: hard cut


def test_iter_units_in_slices_and_ranges(tmp_path, monkeypatch):
    raw = ("\ufeffFirst doc  line one\r\n\t line two ✓\r\n\r\n  \u3000 \n\nSecond doc " + "é" * 50 + "\n"
           + "\n".join(f"   doc {i} line {j} 東京" for i in range(30) for j in range(3) if not (j == 0 and i))
           + "\n\nlast")
    path = tmp_path / "t.txt"
    path.write_bytes(raw.encode("utf-8").replace(b"\n   doc 5 line 1", b"\n\n   doc 5 line 1"))

    def units(**kwargs):
        out = {}
        for offset, line, piece, last in iter_units(path, **kwargs):
            out.setdefault((offset, line), []).append(piece)
        return {k: "".join(v) for k, v in out.items()}

    for unit in ("doc", "line"):
        expected = units(unit=unit)
        monkeypatch.setattr(readers, "READ_BYTES", 5)
        assert units(unit=unit) == expected
        ranges = plan_ranges(path, unit, range_bytes=100)
        assert len(ranges) >= (3 if unit == "doc" else 10)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        joined = {}
        for start, end, line in ranges:
            joined.update(units(unit=unit, start=start, end=end, first_line=line))
        assert joined == expected
        monkeypatch.setattr(readers, "READ_BYTES", 1 << 20)
    docs = list(units(unit="doc").values())
    assert docs[0] == "First doc  line one\nline two ✓" and docs[1].startswith("Second doc éé")
    assert docs[-1] == "last"
    assert list(units(unit="doc", max_chars=12).values())[0] == "First doc  l"
    lines = units(unit="line")
    assert list(lines)[:2] == [(0, 1), (24, 2)] and lines[(24, 2)] == "line two ✓"
    # an error in a later range names the file's real line number
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\n".join(b"line %d" % i for i in range(200)) + b"\nbroken \xff\n")
    with pytest.raises(UsageError, match=r"bad\.txt:201: invalid UTF-8"):
        for start, end, line in plan_ranges(bad, "line", range_bytes=300):
            list(iter_units(bad, unit="line", start=start, end=end, first_line=line))
    assert [p for _, _, p, _ in iter_units(bad, unit="line", errors="replace")][-1] == "broken \ufffd"


BAD_CORPORA = [
    pytest.param({"notes.md": "x"}, "no .txt or .jsonl files", id="no text files"),
    pytest.param(None, "not found", id="missing"),
    pytest.param({"a.txt": "\n   \n\t\n", "b.jsonl": "\n"}, "no text found in 2 file", id="blank"),
    pytest.param({"a.txt": b"text\n\x00\x01\x02\x03"}, r"a\.txt:2: NUL byte", id="binary"),
    pytest.param({"a.jsonl": '{"text": "fine"}\n{"text": broken\n'}, r"a\.jsonl:2: not valid JSON", id="broken json"),
    pytest.param({"a.jsonl": '{"text": "fine"}\n["no", "object"]\n'},
                 r"a\.jsonl:2: expected a JSON object with a string 'text' field", id="json not an object"),
]


@pytest.mark.parametrize("files, match", BAD_CORPORA)
def test_bad_corpus(tokenizer, tmp_path, files, match):
    corpus = tmp_path / "corpus"
    if files is not None:
        write_files(corpus, files)
    with pytest.raises(UsageError, match=match):
        make(tokenizer, corpus, tmp_path / "cache" / corpus.name)


def test_bad_input(tokenizer, tmp_path):
    def build(corpus, **kwargs):
        return make(tokenizer, corpus, tmp_path / "cache" / corpus.name, **kwargs)

    bad = write_files(tmp_path / "latin1", {"good.txt": "\n\n".join(demo_lines()[:50]),
                                            "z.txt": b"fine\n\nfine again\ncaf\xe9 au lait\n"})
    with pytest.raises(UsageError, match=r"z\.txt:4: invalid UTF-8 .*--data\.errors replace"):
        build(bad)
    data = build(bad, errors="replace", val_fraction=0.3)
    stream = token_stream(data.cache_root() / "train") + token_stream(data.cache_root() / "val")
    assert "caf\ufffd au lait" in tokenizer.decode(stream)
    write_corpus(tmp_path / "corpus")
    with pytest.raises(UsageError, match="no document .* fell in the validation split"):
        build(tmp_path / "corpus", val_fraction=1e-9)
    foreign = write_files(tmp_path / "foreign", {"precious.bin": b"1"})
    with pytest.raises(UsageError, match="not empty and not a litgpt text cache"):
        make(tokenizer, tmp_path / "corpus", foreign)
    assert [p.name for p in foreign.iterdir()] == ["precious.bin"]
    for kwargs, match in [(dict(mode="words"), "mode"), (dict(errors="ignore"), "errors"),
                          (dict(val_fraction=0.0), "val_fraction")]:
        with pytest.raises(UsageError, match=match):
            TextFiles(train_data_path=tmp_path / "corpus", **kwargs)


def test_every_sequence_once_per_epoch_on_any_world(tokenizer, tmp_path):
    """2 ranks (2 nodes x 1) and 4 (2 x 2): every block of every epoch read once across the ranks, the ranks' batches
    interleaved are the 1-process batches (masks included), and each rank reads its own ids in the same order again."""
    write_corpus(tmp_path / "corpus", n_txt_docs=60, n_jsonl=20)
    single = make(tokenizer, tmp_path / "corpus", tmp_path / "cache", block_size=8, batch_size=3)
    n = len(single.train_dataloader().dataset)
    reference = [b for _ in range(3) for b in single.train_dataloader()]
    for world in (2, 4):
        ranks = []
        for rank in range(world):
            data = TextFiles(train_data_path=tmp_path / "corpus", cache_dir=tmp_path / "cache", num_workers=0,
                             val_fraction=0.15)
            data.connect(tokenizer, batch_size=3, max_seq_length=8, seed=7, rank=rank, world_size=world)
            data.setup()
            ranks.append(data.train_dataloader())
        keys = [key for epoch in range(4) for loader in ranks for key in loader.order(epoch)]
        assert len(keys) == len(set(keys))
        for epoch in range(3):  # (the batch that ends an epoch takes its rest from the next one's shuffle)
            assert sorted(i for e, i in keys if e == epoch) == list(range(n))
            counts = [len(loader.order(epoch)) // 3 for loader in ranks]
            assert max(counts) - min(counts) <= 1, counts
        batches = [[b for _ in range(3) for b in loader] for loader in ranks]
        interleaved = [batches[k % world][k // world] for k in range(min(map(len, batches)) * world)]
        assert same_batches(interleaved, reference[: len(interleaved)]), world
        assert ranks[1].order(1) == ranks[1].order(1) and ranks[1].order(1) != ranks[1].order(2)


def test_huge_line_memory_is_bounded(tokenizer, tmp_path, monkeypatch):
    import tracemalloc

    for module, name in ((readers, "READ_BYTES"), (text_tokenize, "PIECE_CHARS"), (text_tokenize, "BATCH_CHARS")):
        monkeypatch.setattr(module, name, 1 << 14)
    rng = random.Random(3)
    path = tmp_path / "one_line.txt"
    with open(path, "w", encoding="utf-8") as fp:  # ~3 MB, no newline
        while fp.tell() < 3_000_000:
            fp.write(" ".join(rng.sample(demo_lines(), 20)) + " ")
    size = path.stat().st_size
    for mode, expected_tokens in (("packed", None), ("lines", 32)):
        fn = text_tokenize.Tokenize(tokenizer, [(str(path), path.name, 0, size, 1)], mode, 32, "strict", None, tmp_path)
        tracemalloc.start()
        tokens = sum(len(array) for array in fn(0))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < size / 3, (mode, peak)  # slices, never the whole line (bounded by the buffer sizes)
        assert tokens > size / 10 if mode == "packed" else tokens == expected_tokens
        assert json.loads((tmp_path / "0.json").read_text()) == {"units": 1, "tokens": tokens}

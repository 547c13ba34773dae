"""Tokenizer: ids equal transformers' on the same files (tokenizer.json and vocab.json + merges.txt), saving,
training and the train_tokenizer command."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_parity, assert_usage_error, demo_lines, run_cli, varied_texts, write_files

from litgpt.tokenizer import Tokenizer
from litgpt.train_tokenizer import train_tokenizer, train_tokenizer_command
from litgpt.utils import UsageError


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    corpus = demo_lines() + varied_texts()[-300:] + ["東京 Москва Café 😀 naïve"] * 5
    train_tokenizer(corpus, vocab_size=900, out_dir=out)
    return out


@pytest.fixture(scope="module")
def bare_dir(trained_dir, tmp_path_factory):
    """GPT-2 style: just vocab.json + merges.txt."""
    out = tmp_path_factory.mktemp("bare")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(trained_dir / name, out / name)
    return out


def hf(path):
    from transformers import AutoTokenizer, RobertaTokenizerFast

    if (Path(path) / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(path))
    else:
        tok = RobertaTokenizerFast.from_pretrained(str(path))
    # transformers 5 silently builds a 5-token tokenizer when it does not find the files: make sure it did
    assert len(tok) == Tokenizer(path).vocab_size > 256
    return tok


def test_trained_tokenizer_matches_transformers(trained_dir):
    ours, theirs = Tokenizer(trained_dir), hf(trained_dir)
    texts = varied_texts()
    assert len(texts) >= 300
    assert_parity(ours, theirs, texts)
    assert ours.encode("Hello <mask> world") == theirs("Hello <mask> world")["input_ids"]
    assert ours.mask_id in ours.encode("Hello <mask> world")


def test_vocab_merges_dir_matches_transformers(bare_dir, trained_dir):
    ours, theirs = Tokenizer(bare_dir), hf(bare_dir)
    assert (ours.bos_id, ours.pad_id, ours.eos_id, ours.unk_id, ours.mask_id) == (0, 1, 2, 3, 899)
    # transformers 5 builds `<mask>` without lstrip from a bare vocab.json; RoBERTa (and its tokenizer.json, and
    # transformers 4) strips the space before it, and so do we: " <mask>" is the one documented difference
    texts = [t for t in varied_texts() if " <mask>" not in t]
    assert_parity(ours, theirs, texts)
    text = "Hello <mask> world"
    assert ours.encode(text) == Tokenizer(trained_dir).encode(text)
    assert theirs(text)["input_ids"] != ours.encode(text)
    # with a tokenizer_config.json that declares the lstrip, transformers agrees on every text
    config = json.loads((trained_dir / "tokenizer_config.json").read_text())
    (bare_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "RobertaTokenizer", "added_tokens_decoder": config["added_tokens_decoder"]}))
    try:
        assert_parity(Tokenizer(bare_dir), hf(bare_dir), varied_texts())
    finally:
        (bare_dir / "tokenizer_config.json").unlink()


def test_special_ids_come_from_the_files(trained_dir, tmp_path):
    vocab = json.loads((trained_dir / "vocab.json").read_text(encoding="utf-8"))
    # move the special tokens to other ids: nothing may be hard-coded
    moved = {"<s>": 7, "<pad>": 5, "</s>": 11, "<unk>": 13, "<mask>": 17}
    others = [t for t in sorted(vocab, key=vocab.get) if t not in moved]
    free = iter(i for i in range(len(vocab)) if i not in moved.values())
    new_vocab = {**{t: next(free) for t in others}, **moved}
    (tmp_path / "vocab.json").write_text(json.dumps(new_vocab, ensure_ascii=False), encoding="utf-8")
    shutil.copy(trained_dir / "merges.txt", tmp_path / "merges.txt")
    tok = Tokenizer(tmp_path)
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id, tok.vocab_size) == (7, 5, 11, 13, 17, 900)
    assert tok.special_ids == {5, 7, 11, 13, 17}
    assert tok.encode("hi")[0] == 7 and tok.encode("hi")[-1] == 11
    assert tok.encode("hi") == hf(tmp_path)("hi")["input_ids"]
    assert tok.checkpoint_dir == tmp_path


def test_encode_contract(trained_dir):
    tok = Tokenizer(trained_dir)
    assert tok.encode("") == [tok.bos_id, tok.eos_id]
    ids = tok.encode("The quick brown fox jumps over the lazy dog " * 10)
    cut = tok.encode("The quick brown fox jumps over the lazy dog " * 10, max_length=10)
    assert len(cut) == 10 and cut[0] == tok.bos_id and cut[-1] == tok.eos_id and cut[:-1] == ids[:9]
    assert tok.encode("short", max_length=100) == tok.encode("short")
    pair = tok.encode_pair("first", "second")
    assert pair == tok.encode("first") + [tok.eos_id] + tok.encode("second")[1:]
    assert pair.count(tok.eos_id) == 3
    assert tok.encode("hello", add_special_tokens=False) == tok.encode("hello")[1:-1]
    assert tok.decode(tok.encode("Café 東京 😀 text")) == "Café 東京 😀 text"
    assert tok.decode(tok.encode("a <mask> b"), skip_special_tokens=False) == "<s>a<mask> b</s>"
    assert tok.id_to_token(tok.token_to_id("<mask>")) == "<mask>"
    assert tok.token_to_id("no-such-token-xyz") is None
    with pytest.raises(ValueError, match="max_length"):
        tok.encode("text", max_length=1)


def test_save_roundtrip_and_autotokenizer(trained_dir, bare_dir, tmp_path):
    tok = Tokenizer(trained_dir)
    out = tmp_path / "saved"
    tok.save(out, model_max_length=128)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"])
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "RobertaTokenizer"
    assert config["model_max_length"] == 128 and config["add_prefix_space"] is False and config["trim_offsets"] is True
    assert {config[k] for k in ("bos_token", "cls_token")} == {"<s>"}
    assert {config[k] for k in ("eos_token", "sep_token")} == {"</s>"}
    assert (config["unk_token"], config["pad_token"], config["mask_token"]) == ("<unk>", "<pad>", "<mask>")
    again = Tokenizer(out)
    assert again.model_max_length == 128
    texts = varied_texts()
    assert again.encode_batch(texts) == tok.encode_batch(texts)
    assert_parity(again, hf(out), texts[:80])
    # a save from a bare vocab.json + merges.txt dir is a full tokenizer dir too
    Tokenizer(bare_dir).save(tmp_path / "from_bare")
    assert Tokenizer(tmp_path / "from_bare").encode_batch(texts) == tok.encode_batch(texts)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_train_tokenizer_layout_and_files(tmp_path):
    data = write_files(tmp_path / "data", {
        "a.txt": "\n".join(demo_lines()[:200]) + "\n\n  \n",
        "b.jsonl": "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(demo_lines()[200:])) + "\n",
    })
    tok = train_tokenizer([data / "a.txt", data / "b.jsonl", "an extra text"], vocab_size=700, min_frequency=1)
    assert tok.checkpoint_dir is None
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.mask_id == tok.vocab_size - 1 == 699
    assert tok.id_to_token(4) == "!"  # the byte alphabet follows the special tokens
    tok.save(tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["<mask>"] == 699 and len(vocab) == 700
    assert train_tokenizer(["tiny text"], vocab_size=5000).vocab_size < 5000  # stops when merges run out
    with pytest.raises(UsageError, match="vocab_size"):
        train_tokenizer(["x"], vocab_size=100)


def test_train_tokenizer_command(tmp_path, capsys):
    data = write_files(tmp_path / "data", {
        "a.txt": "\n".join(demo_lines()[:300]),
        "sub/b.jsonl": "\n".join(json.dumps({"text": t}) for t in demo_lines()[300:]),
        "ignored.csv": "not,text\n",
    })
    out = tmp_path / "tok"
    train_tokenizer_command(data, out, vocab_size=600)
    tok = Tokenizer(out)
    assert tok.vocab_size == 600 and tok.mask_id == 599
    assert tok.encode_batch(demo_lines()[:50]) == hf(out)(demo_lines()[:50])["input_ids"]
    train_tokenizer_command(data, out, vocab_size=500)  # a tokenizer dir may be overwritten
    assert Tokenizer(out).vocab_size == 500

    busy = write_files(tmp_path / "busy", {"lit_model.pth": b"weights"})
    with pytest.raises(UsageError, match="not empty and not a tokenizer folder"):
        train_tokenizer_command(data, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["lit_model.pth"]


@pytest.mark.parametrize(
    "files, source, match",
    [
        pytest.param({"data": None}, "data", "no .txt or .jsonl files", id="empty"),
        pytest.param({"data/a.txt": "\n  \n\n"}, "data", "no text found", id="blank"),
        pytest.param({"data/a.txt": b"fine\nalso fine\nbroken \xff\xfe here\n"}, "data", r"a\.txt:3: invalid UTF-8",
                     id="invalid utf-8"),
        pytest.param({"bad.jsonl": '{"text": "ok"}\n{"title": "no text"}\n'}, "bad.jsonl",
                     r"bad\.jsonl:2: expected a JSON object with a string 'text' field", id="jsonl without text"),
    ],
)
def test_train_tokenizer_command_bad_data(tmp_path, files, source, match):
    write_files(tmp_path, files)
    with pytest.raises(UsageError, match=match):
        train_tokenizer_command(tmp_path / source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_tokenizer_cli(tmp_path):
    data = write_files(tmp_path / "data", {"a.txt": "\n".join(demo_lines())})
    result = run_cli("train_tokenizer", data, tmp_path / "tok", "--vocab_size", "400")
    assert result.returncode == 0, result.stderr
    assert Tokenizer(tmp_path / "tok").vocab_size == 400
    (data / "b.txt").write_bytes(b"ok\n\xc3\x28 bad\n")
    result = run_cli("train_tokenizer", data, tmp_path / "tok2")
    assert_usage_error(result.returncode, result.stderr, "b.txt:2: invalid UTF-8")


def _vocab_without_mask(trained: Path) -> str:
    vocab = json.loads((trained / "vocab.json").read_text(encoding="utf-8"))
    del vocab["<mask>"]
    return json.dumps(vocab, ensure_ascii=False)


def _tokenizer_json_without_mask(trained: Path) -> str:
    data = json.loads((trained / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<mask>"]
    del data["model"]["vocab"]["<mask>"]
    return json.dumps(data, ensure_ascii=False)


def _trained_files(trained: Path, *names: str) -> dict:
    """The trained tokenizer's files (all of them when no name is given), to copy."""
    return {p.name: p.read_bytes() for p in trained.iterdir() if not names or p.name in names}


# (folder, its files: a dict or a function of the trained tokenizer's folder, None for no folder, the error)
BAD_TOKENIZER_DIRS = [
    ("missing", None, "not found"),
    ("empty", {}, "no tokenizer.json, nor a vocab.json"),
    # GPT-2 style files without <mask>
    ("gpt2", lambda t: {**_trained_files(t, "merges.txt"), "vocab.json": _vocab_without_mask(t)},
     r"vocab\.json: no '<mask>' token"),
    ("nomask", lambda t: {"tokenizer.json": _tokenizer_json_without_mask(t)}, r"tokenizer\.json: no '<mask>' token"),
    ("corrupt", {"tokenizer.json": '{"model": '}, r"corrupt/tokenizer\.json: not a readable tokenizer file"),
    ("badvocab", {"vocab.json": b"\xff\xfe not json", "merges.txt": "#version: 0.2\n"},
     r"badvocab/vocab\.json: not a readable JSON file"),
    ("badmerges", lambda t: {**_trained_files(t, "vocab.json"), "merges.txt": "#version: 0.2\nonlyonetoken\n"},
     r"badmerges/merges\.txt: not a readable merges file"),
    ("badconfig", lambda t: {**_trained_files(t), "tokenizer_config.json": "[1, 2"},
     r"tokenizer_config\.json: not a readable JSON file"),
]


@pytest.mark.parametrize("name, files, match", BAD_TOKENIZER_DIRS, ids=[row[0] for row in BAD_TOKENIZER_DIRS])
def test_bad_tokenizer_dirs(trained_dir, tmp_path, name, files, match):
    if files is not None:
        write_files(tmp_path / name, files(trained_dir) if callable(files) else files)
    with pytest.raises(UsageError, match=match):
        Tokenizer(tmp_path / name)

"""BERT's WordPiece through the same `Tokenizer`: trained here, from tokenizer.json or a bare vocab.txt, ids equal
to transformers' `BertTokenizerFast` on the same files. The real all-MiniLM-L6-v2 vocabulary is in
test_real_checkpoint.py."""

import json
import shutil

import pytest
from conftest import assert_parity, demo_lines, run_cli, varied_texts, write_files

from litgpt.tokenizer import Tokenizer
from litgpt.train_tokenizer import train_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wordpiece")
    corpus = demo_lines() + varied_texts()[-300:] + ["東京 Москва Café 😀 naïve"] * 5
    train_tokenizer(corpus, vocab_size=900, out_dir=out, kind="wordpiece")
    return out


def test_trained_wordpiece_matches_transformers(wordpiece_dir):
    ours = Tokenizer(wordpiece_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(str(wordpiece_dir))
    assert type(theirs).__name__.startswith("BertTokenizer") and len(theirs) == ours.vocab_size <= 900
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 1, 2, 3, 4)
    assert (ours.bos_id, ours.eos_id) == (ours.cls_id, ours.sep_id) and ours.wordpiece
    assert_parity(ours, theirs, varied_texts())
    assert ours.mask_id in ours.encode("Hello [MASK] world")
    assert ours.decode(ours.encode("Hello World")) == "hello world"


def test_bare_vocab_txt_matches_transformers(wordpiece_dir, tmp_path):
    """A folder with only BERT's vocab.txt (and maybe the do_lower_case switch) builds BertTokenizerFast's tokenizer."""
    for lower in (True, False):
        folder = tmp_path / f"lower-{lower}"
        folder.mkdir()
        shutil.copy(wordpiece_dir / "vocab.txt", folder / "vocab.txt")
        (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower}))
        ours = Tokenizer(folder)
        theirs = transformers.BertTokenizerFast.from_pretrained(str(folder))
        assert len(theirs) == ours.vocab_size == Tokenizer(wordpiece_dir).vocab_size
        assert_parity(ours, theirs, varied_texts())


def test_truncation_skips_no_text(wordpiece_dir):
    """WordPiece drops whitespace, so a long run of it must not hide the words after it from `max_length`."""
    ours = Tokenizer(wordpiece_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(str(wordpiece_dir))
    text = " " * 5000 + "the movie was great"
    assert ours.encode(text, max_length=4) == theirs(text, truncation=True, max_length=4)["input_ids"]
    assert len(ours.encode(text, max_length=4)) == 4


def test_save_roundtrip(wordpiece_dir, tmp_path):
    Tokenizer(wordpiece_dir).save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    assert (tmp_path / "vocab.txt").is_file() and not (tmp_path / "merges.txt").exists()
    texts = varied_texts()[:50]
    assert Tokenizer(tmp_path).encode_batch(texts) == Tokenizer(wordpiece_dir).encode_batch(texts)


def test_train_tokenizer_cli_wordpiece(tmp_path):
    data = write_files(tmp_path / "data", {"a.txt": "\n".join(demo_lines())})
    proc = run_cli("train_tokenizer", data, tmp_path / "tok", "--kind", "wordpiece", "--vocab_size", "400")
    assert proc.returncode == 0, proc.stderr
    assert "WordPiece tokenizer" in proc.stderr
    tok = Tokenizer(tmp_path / "tok")
    assert tok.wordpiece and tok.vocab_size <= 400 and tok.id_to_token(tok.mask_id) == "[MASK]"
    # the other kind over it: the WordPiece vocab.txt goes
    proc = run_cli("train_tokenizer", data, tmp_path / "tok", "--vocab_size", "400")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "tok" / "vocab.txt").exists() and not Tokenizer(tmp_path / "tok").wordpiece
    proc = run_cli("train_tokenizer", data, tmp_path / "tok3", "--kind", "sentencepiece")
    assert proc.returncode == 2 and "--kind 'sentencepiece': expected one of bpe, wordpiece" in proc.stderr

"""The bad-input matrix: every row exits with code 2, prints one `error:` line on stderr and no traceback, and leaves
every file as it was (nothing created, nothing changed)."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from litgpt.__main__ import main
from litgpt.config import Config
from litgpt.model_roberta import RobertaForMaskedLM


def snapshot(root: Path):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")}


def run_main(capsys, args):
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return ex.value.code, captured.err


def pretrain(data_dir, out_dir, *extra):
    return ["pretrain", "--model_name", "roberta-tiny", "--data_dir", data_dir, "--out_dir", out_dir,
            "--train.global_batch_size", "8", "--train.micro_batch_size", "4", "--train.max_steps", "2", *extra]


def finetune(data_dir, out_dir, *extra):
    return ["finetune", "--data_dir", data_dir, "--output_dir", out_dir, "--model_name", "roberta-tiny",
            "--from_scratch", "--num_epochs", "1", *extra]


def write_json(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


GOOD = [{"text": "a fine film", "label": 1}, {"text": "a dull film", "label": 0}] * 4


def write_splits(data: Path, train=GOOD, test=GOOD) -> None:
    """The finetuning toy layout: `train.json` and `test.json` in `data`."""
    write_json(data / "train.json", train)
    write_json(data / "test.json", test)


class Evil:
    """Unpickling this would run a command; a safe loader must refuse it."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def tiny_checkpoint(tmp: Path) -> Path:
    from litgpt.tokenizer import train_tokenizer

    ckpt = tmp / "ckpt"
    config = Config.from_name("roberta-tiny")
    ckpt.mkdir()
    torch.save(RobertaForMaskedLM(config).state_dict(), ckpt / "lit_model.pth")
    config.save(ckpt / "model_config.yaml")
    train_tokenizer(["some words for the tokenizer"] * 10, vocab_size=300, out_dir=ckpt)
    return ckpt


def build(row: str, tmp: Path):
    """Creates the inputs of one row and returns the CLI arguments."""
    data, out = tmp / "data", tmp / "out"
    if row == "empty file":
        data.mkdir()
        (data / "test.txt").write_text("")
        return pretrain(data, out)
    if row == "binary file":
        data.mkdir()
        (data / "test.txt").write_bytes(bytes(range(256)) * 64)
        return pretrain(data, out)
    if row == "invalid utf-8":
        data.mkdir()
        (data / "test.txt").write_bytes(b"a good line\nanother good line\nbad \xff\xfe bytes\n")
        return pretrain(data, out)
    if row == "json missing key":
        write_splits(data, train=GOOD + [{"text": "no label here"}])
        return finetune(data, out)
    if row == "label out of range":
        write_splits(data, train=GOOD + [{"text": "five stars", "label": 5}])
        return finetune(data, out)
    if row == "string label without mapping":
        named = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}] * 4
        write_splits(data, train=named, test=named + [{"text": "hmm", "label": "meh"}])
        return finetune(data, out)
    if row == "csv wrong column count":
        data.mkdir()
        (data / "train.csv").write_text("text,label\ngood film,1\nbad film,0,extra\n")
        (data / "test.csv").write_text("text,label\ngood film,1\nbad film,0\n")
        return finetune(data, out)
    if row == "missing data_dir with a custom dataset":
        return ["pretrain", "--model_name", "roberta-tiny", "--data", "TestData", "--data.data_dir", data,
                "--data.dataset_class", "custom_dataset.CustomMLMDataset", "--out_dir", out,
                "--train.global_batch_size", "8", "--train.micro_batch_size", "4", "--train.max_steps", "2"]
    if row == "unreadable file":
        data.mkdir()
        (data / "test.txt").mkdir()  # root reads any file; a folder in its place cannot be read as text
        return pretrain(data, out)
    if row == "out_dir is a file":
        out.write_text("not a folder")
        return pretrain(data, out)
    if row == "truncated checkpoint":
        ckpt = tiny_checkpoint(tmp)
        blob = (ckpt / "lit_model.pth").read_bytes()
        (ckpt / "lit_model.pth").write_bytes(blob[: len(blob) // 2])
        return ["fill_mask", ckpt, "--text", "a <mask> film"]
    if row == "pickled code":
        ckpt = tiny_checkpoint(tmp)
        with open(ckpt / "lit_model.pth", "wb") as fp:
            pickle.dump({"model": Evil()}, fp)
        return ["fill_mask", ckpt, "--text", "a <mask> film"]
    if row == "checkpoint from another config":
        ckpt = tiny_checkpoint(tmp)
        Config.from_name("roberta-mini").save(ckpt / "model_config.yaml")
        return ["fill_mask", ckpt, "--text", "a <mask> film"]
    if row == "tokenizer larger than the model":
        from litgpt.tokenizer import train_tokenizer

        words = [f"word{i} thing{i * 7} item{i * 13}" for i in range(3000)]
        train_tokenizer(words, vocab_size=2000, out_dir=tmp / "big_tokenizer", min_frequency=1)
        data.mkdir()
        (data / "test.txt").write_text("a sentence\n" * 20)
        return pretrain(data, out, "--tokenizer_dir", tmp / "big_tokenizer")
    if row == "zero batch size":
        return pretrain(data, out, "--train.micro_batch_size", "0")
    if row == "negative batch size":
        write_splits(data)
        return finetune(data, out, "--batch_size", "-4")
    if row == "micro batch does not divide":
        return pretrain(data, out, "--train.micro_batch_size", "3")
    if row == "max_length over 512":
        write_splits(data)
        return finetune(data, out, "--max_length", "1024")
    if row == "unknown precision":
        return pretrain(data, out, "--precision", "fp12")
    if row == "devices over available":
        return pretrain(data, out, "--devices", "64")
    raise KeyError(row)


ROWS = {
    # data
    "empty file": "test.txt",
    "binary file": "test.txt",
    "invalid utf-8": "test.txt:3",
    "json missing key": "train.json",
    "label out of range": "train.json",
    "string label without mapping": "meh",
    "csv wrong column count": "train.csv",
    # paths
    "missing data_dir with a custom dataset": "data",
    "unreadable file": "test.txt",
    "out_dir is a file": "not a folder",
    # checkpoints
    "truncated checkpoint": "lit_model.pth",
    "pickled code": "refused",
    "checkpoint from another config": "config",
    "tokenizer larger than the model": "exceeds",
    # flags
    "zero batch size": "micro_batch_size",
    "negative batch size": "batch_size",
    "micro batch does not divide": "does not divide",
    "max_length over 512": "max_length",
    "unknown precision": "--precision",
    "devices over available": "--devices",
}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_row(row, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    args = build(row, tmp_path)
    before = snapshot(tmp_path)
    code, err = run_main(capsys, args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert ROWS[row].lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path) == before, "files were created or changed"
    assert not marker.exists(), "pickled code ran"


def test_100mb_single_line_is_streamed_and_truncated(tmp_path):
    """Not an error: a 100 MB line is read as a stream, only its first block_size tokens are tokenized for training,
    and the tokenizer trainer streams it in pieces, so memory stays bounded (it took >10 GB before)."""
    import resource
    import subprocess
    import sys

    from conftest import ROOT

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "test.txt", "w") as fp:
        fp.write("the quick brown fox jumps over the lazy dog " * (100 * 2**20 // 44) + "\n")
        fp.write("a short ordinary sentence.\n" * 40)
    assert (data / "test.txt").stat().st_size > 100 * 2**20
    proc = subprocess.run([sys.executable, "-m", "litgpt", *pretrain(data, tmp_path / "out"),
                           "--model_name", "roberta-demo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert peak_gib < 3, f"peak RSS {peak_gib:.1f} GiB"
    state = torch.load(tmp_path / "out" / "iter-2.pt", weights_only=True)
    assert state["tokens"] > 0

"""The bad-input matrix: every row exits with code 2, prints one `error:` line on stderr and no traceback, and leaves
every file as it was (nothing created, nothing changed)."""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import expect_usage_error, finetune_args, pretrain_args, run_cli, write_files

from litgpt.config import Config


# ---- the command lines: data in tmp/data, output in tmp/out, a checkpoint in tmp/ckpt -------------------------------
def pretrain(*extra):
    return lambda tmp: pretrain_args(tmp / "data", tmp / "out", "--train.max_steps", "2", *extra)


def finetune(*extra):
    return lambda tmp: ["finetune", *finetune_args(tmp / "data", tmp / "out", *extra)]


def fill_mask(tmp):
    return ["fill_mask", tmp / "ckpt", "--text", "a <mask> film"]


def custom_dataset(tmp):
    return pretrain_args(None, tmp / "out", "--train.max_steps", "2", "--data", "TestData", "--data.data_dir",
                         tmp / "data", "--data.dataset_class", "custom_dataset.CustomMLMDataset")


def pretrain_with_big_tokenizer(tmp):
    return pretrain("--tokenizer_dir", tmp / "big_tokenizer")(tmp)


# ---- the inputs: files to write, or a function of (tmp, the tiny checkpoint) ----------------------------------------
GOOD = [{"text": "a fine film", "label": 1}, {"text": "a dull film", "label": 0}] * 4
NAMED = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}] * 4


def splits(train=GOOD, test=GOOD) -> dict:
    """The finetuning toy layout: `train.json` and `test.json` in data/."""
    return {"data/train.json": train, "data/test.json": test}


class Evil:
    """Unpickling this would run a command; a safe loader must refuse it."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def spoiled_checkpoint(spoil):
    """A copy of the tiny checkpoint in tmp/ckpt, then `spoil(that folder)`."""
    def setup(tmp: Path, tiny_checkpoint: Path) -> None:
        spoil(Path(shutil.copytree(tiny_checkpoint, tmp / "ckpt")))

    return setup


def truncate_weights(ckpt: Path) -> None:
    blob = (ckpt / "lit_model.pth").read_bytes()
    (ckpt / "lit_model.pth").write_bytes(blob[: len(blob) // 2])


def pickle_code(ckpt: Path) -> None:
    with open(ckpt / "lit_model.pth", "wb") as fp:
        pickle.dump({"model": Evil()}, fp)


def another_config(ckpt: Path) -> None:
    Config.from_name("roberta-mini").save(ckpt / "model_config.yaml")


def big_tokenizer(tmp: Path, tiny_checkpoint: Path) -> None:
    from litgpt.train_tokenizer import train_tokenizer

    words = [f"word{i} thing{i * 7} item{i * 13}" for i in range(3000)]
    train_tokenizer(words, vocab_size=2000, out_dir=tmp / "big_tokenizer", min_frequency=1)
    write_files(tmp / "data", {"test.txt": "a sentence\n" * 20})


# (row, inputs, command line, a fragment of the error line)
ROWS = [
    # data
    ("empty file", {"data/test.txt": ""}, pretrain(), "test.txt"),
    ("binary file", {"data/test.txt": bytes(range(256)) * 64}, pretrain(), "test.txt"),
    ("invalid utf-8", {"data/test.txt": b"a good line\nanother good line\nbad \xff\xfe bytes\n"}, pretrain(),
     "test.txt:3"),
    ("json missing key", splits(train=GOOD + [{"text": "no label here"}]), finetune(), "train.json"),
    ("label out of range", splits(train=GOOD + [{"text": "five stars", "label": 5}]), finetune(), "train.json"),
    ("string label without mapping", splits(train=NAMED, test=NAMED + [{"text": "hmm", "label": "meh"}]), finetune(),
     "meh"),
    ("csv wrong column count", {"data/train.csv": "text,label\ngood film,1\nbad film,0,extra\n",
                                "data/test.csv": "text,label\ngood film,1\nbad film,0\n"}, finetune(), "train.csv"),
    # paths
    ("missing data_dir with a custom dataset", {}, custom_dataset, "data"),
    # root reads any file; a folder in its place cannot be read as text
    ("unreadable file", {"data/test.txt": None}, pretrain(), "test.txt"),
    ("out_dir is a file", {"out": "not a folder"}, pretrain(), "not a folder"),
    # checkpoints
    ("truncated checkpoint", spoiled_checkpoint(truncate_weights), fill_mask, "lit_model.pth"),
    ("pickled code", spoiled_checkpoint(pickle_code), fill_mask, "refused"),
    ("checkpoint from another config", spoiled_checkpoint(another_config), fill_mask, "config"),
    ("tokenizer larger than the model", big_tokenizer, pretrain_with_big_tokenizer, "exceeds"),
    # flags
    ("zero batch size", {}, pretrain("--train.micro_batch_size", "0"), "micro_batch_size"),
    ("negative batch size", splits(), finetune("--batch_size", "-4"), "batch_size"),
    ("micro batch does not divide", {}, pretrain("--train.micro_batch_size", "3"), "does not divide"),
    ("max_length over 512", splits(), finetune("--max_length", "1024"), "max_length"),
    ("unknown precision", {}, pretrain("--precision", "fp12"), "--precision"),
    ("devices over available", {}, pretrain("--devices", "64"), "--devices"),
]


@pytest.mark.parametrize("inputs, command, fragment", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_bad_input_row(inputs, command, fragment, tmp_path, capsys, monkeypatch, tiny_checkpoint):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    if callable(inputs):
        inputs(tmp_path, tiny_checkpoint)
    else:
        write_files(tmp_path, inputs)
    expect_usage_error(capsys, command(tmp_path), fragment, untouched=tmp_path, ignore_case=True)
    assert not marker.exists(), "pickled code ran"


def test_huge_single_line_is_streamed_and_truncated(tmp_path):
    """Not an error: a 60 MB line is read as a stream, only its first block_size tokens are tokenized for training,
    and the tokenizer trainer streams it in pieces, so memory stays bounded (a 100 MB line took >10 GB before, so
    60 MB would take about 6)."""
    import resource

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "test.txt", "w") as fp:
        fp.write("the quick brown fox jumps over the lazy dog " * (60 * 2**20 // 44) + "\n")
        fp.write("a short ordinary sentence.\n" * 40)
    assert (data / "test.txt").stat().st_size > 60 * 2**20
    proc = run_cli(*pretrain("--model_name", "roberta-demo")(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert peak_gib < 3, f"peak RSS {peak_gib:.1f} GiB"
    state = torch.load(tmp_path / "out" / "iter-2.pt", weights_only=True)
    assert state["tokens"] > 0

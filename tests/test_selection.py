"""Finetuning results you can trust: the epoch (and QA's null threshold) is chosen on the validation split alone, and
the test split cannot change the result. For every task, two runs whose test splits differ only in their labels
choose the same epoch and write the same weights; only their test figures differ. Also the validation split itself
(`--val_fraction`: seeded, stratified, whole documents) and its bad input."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, expect_usage_error, finetune_args, toy_records, write_files

from litgpt.data.classification import ClassificationDataModule
from litgpt.data.finetuning import carve_validation
from litgpt.utils import UsageError

NER = ROOT / "data" / "test_data_ner"
QA = ROOT / "data" / "test_data_qa"
TINY = ["--model_name", "roberta-tiny", "--from_scratch", "--learning_rate", "3e-3", "--seed", "3"]


def finetune_main(args):
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    run_command(setup, [str(a) for a in args], prog="litgpt finetune")


def run_blind_pair(tmp_path: Path, data: Path, shuffle_test, args, output=lambda out: out):
    """Runs `args` on `data` and on a copy whose test labels `shuffle_test(copy)` shuffled; returns both outputs."""
    shuffled = tmp_path / "shuffled_data"
    shutil.copytree(data, shuffled)
    shuffle_test(shuffled)
    outs = []
    for name, folder in (("a", data), ("b", shuffled)):
        out = tmp_path / name
        finetune_main(["--data_dir", folder, "--output_dir", out, *TINY, *args])
        outs.append(output(out))
    return outs


def assert_test_blind(a: Path, b: Path, weights="pytorch_model.bin"):
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["selected_by"]["split"] != "none"
    assert ma["best_epoch"] == mb["best_epoch"] and ma["validation"] == mb["validation"]
    wa, wb = (torch.load(d / weights, weights_only=True) for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ma["test"] != mb["test"], "the shuffled test labels must show in the test figures"
    return ma, mb


def test_classification_test_labels_cannot_change_the_result(tmp_path):
    data = write_files(tmp_path / "data", {"train.json": toy_records("train")[:64],
                                           "test.json": toy_records("test")[:24]})

    def shuffle(folder):
        rows = json.loads((folder / "test.json").read_text())
        labels = [r["label"] for r in rows]
        random.Random(0).shuffle(labels)
        (folder / "test.json").write_text(json.dumps([{**r, "label": y} for r, y in zip(rows, labels)]))

    a, b = run_blind_pair(tmp_path, data, shuffle, ["--num_epochs", "3", "--batch_size", "8", "--max_length", "48",
                                                     "--val_fraction", "0.25"])
    ma, _ = assert_test_blind(a, b)
    assert ma["validation"]["num_examples"] == 16 and ma["num_examples"] == 24
    assert ma["selected_by"] == {"split": "validation", "metric": "accuracy",
                                 "source": "--val_fraction 0.25 of train.json (seed 3)"}
    assert len(ma["validation"]["history"]) == 3 and ma["test"]["accuracy"] == ma["accuracy"]


def test_ner_test_tags_cannot_change_the_result(tmp_path):
    sentences = (NER / "train.conll").read_text().strip().split("\n\n")
    data = write_files(tmp_path / "data", {"train.conll": "\n\n".join(sentences[:48]) + "\n",
                                           "validation.conll": "\n\n".join(sentences[48:64]) + "\n",
                                           "test.conll": "\n\n".join(sentences[64:88]) + "\n"})

    def shuffle(folder):
        out, rng = [], random.Random(0)
        for sentence in (folder / "test.conll").read_text().strip().split("\n\n"):
            words, tags = zip(*(line.split() for line in sentence.splitlines()))
            tags = list(tags)
            rng.shuffle(tags)
            out.append("\n".join(f"{w} {t}" for w, t in zip(words, tags)))
        (folder / "test.conll").write_text("\n\n".join(out) + "\n")

    a, b = run_blind_pair(tmp_path, data, shuffle, ["--task", "ner", "--num_epochs", "3", "--batch_size", "8"])
    ma, _ = assert_test_blind(a, b)
    assert ma["selected_by"] == {"split": "validation", "metric": "f1", "source": "validation.conll"}


def test_qa_test_answers_cannot_change_the_result_or_the_threshold(tmp_path):
    document = json.loads((QA / "train.json").read_text())
    test = json.loads((QA / "test.json").read_text())
    data = write_files(tmp_path / "data", {"train.json": {**document, "data": document["data"][:20]},
                                           "test.json": {**test, "data": test["data"][:6]}})

    def shuffle(folder):
        doc, rng = json.loads((folder / "test.json").read_text()), random.Random(0)
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:  # answers move between the questions of one context
                labels = [(q["answers"], q["is_impossible"]) for q in paragraph["qas"]]
                rng.shuffle(labels)
                for q, (answers, impossible) in zip(paragraph["qas"], labels):
                    q["answers"], q["is_impossible"] = answers, impossible
        (folder / "test.json").write_text(json.dumps(doc))

    a, b = run_blind_pair(tmp_path, data, shuffle, ["--task", "qa", "--num_epochs", "3", "--batch_size", "8",
                                                     "--max_length", "64", "--val_fraction", "0.25"])
    ma, mb = assert_test_blind(a, b)
    assert ma["null_threshold"] == mb["null_threshold"] == ma["validation"]["null_threshold"]
    assert ma["selected_by"]["source"] == "--val_fraction 0.25 of train.json (seed 3)"


def test_glue_pair_task_dev_labels_cannot_change_the_result(tmp_path):
    from test_glue import glue_folders

    root = glue_folders(tmp_path / "glue")

    def shuffle(folder):
        lines = (folder / "RTE" / "dev.tsv").read_text().splitlines()
        labels = [line.rsplit("\t", 1)[1] for line in lines[1:]]
        random.Random(1).shuffle(labels)
        rows = [line.rsplit("\t", 1)[0] + "\t" + y for line, y in zip(lines[1:], labels)]
        (folder / "RTE" / "dev.tsv").write_text("\n".join([lines[0], *rows]) + "\n")

    a, b = run_blind_pair(tmp_path, root, shuffle, ["--glue", "rte", "--num_epochs", "2", "--batch_size", "4",
                                                     "--val_fraction", "0.5"], output=lambda out: out / "RTE")
    ma, _ = assert_test_blind(a, b)
    assert ma["selected_by"]["source"] == "--val_fraction 0.5 of train.tsv (seed 3)" and ma["test_split"] == "dev.tsv"


# ---- the validation split ---------------------------------------------------------------------------------------
def test_val_fraction_is_seeded_stratified_and_disjoint():
    labels = ["a"] * 50 + ["b"] * 27 + ["c"] * 9 + ["d"] * 2
    rng = random.Random(0)
    rng.shuffle(labels)
    for fraction in (0.05, 0.1, 0.25, 0.5):
        for seed in (0, 1):
            train, held = carve_validation(len(labels), fraction, seed, strata=labels)
            assert carve_validation(len(labels), fraction, seed, strata=labels) == (train, held)
            assert not set(train) & set(held) and sorted(train + held) == list(range(len(labels)))
            for c in "abcd":
                total, taken = labels.count(c), sum(labels[i] == c for i in held)
                assert 1 <= taken < total and abs(taken - fraction * total) <= 1, (c, fraction, taken)
        assert carve_validation(len(labels), fraction, 0, strata=labels) != carve_validation(len(labels), fraction, 1,
                                                                                              strata=labels)
    # whole documents: every document lies on one side
    documents = [i // 5 for i in range(40)]
    train, held = carve_validation(40, 0.25, 0, groups=documents)
    assert {documents[i] for i in train}.isdisjoint({documents[i] for i in held}) and len(held) == 10


def test_val_fraction_through_the_data_module(tmp_path):
    data = write_files(tmp_path / "d", {"train.json": toy_records("train")[:40], "test.json": toy_records("test")[:8]})
    one = ClassificationDataModule(data, 2, val_fraction=0.25, seed=7)
    again = ClassificationDataModule(data, 2, val_fraction=0.25, seed=7)
    assert one.validation.texts == again.validation.texts and len(one.validation) == 10 and len(one.train) == 30
    assert not set(one.validation.texts) & set(one.train.texts)
    assert sorted(one.validation.labels) == sorted(again.validation.labels)
    assert one.selection == "validation" and ClassificationDataModule(data, 2).selection == "none"
    rows = toy_records("train")
    with_file = write_files(tmp_path / "v", {"train.json": rows[:20], "dev.json": rows[20:26],
                                             "test.json": toy_records("test")[:4]})
    dev = ClassificationDataModule(with_file, 2)
    assert dev.selection == "dev" and len(dev.validation) == 6 and len(dev.train) == 20


def test_carving_refuses_what_cannot_be_split():
    with pytest.raises(UsageError, match="class 'x' has 1 example"):
        carve_validation(5, 0.2, 0, strata=["y", "y", "x", "y", "y"])
    with pytest.raises(UsageError, match="one document"):
        carve_validation(4, 0.5, 0, groups=[0, 0, 0, 0])


def _validation_with_unseen_label(d: Path):
    return write_files(d, {"train.json": toy_records("train")[:8], "test.json": toy_records("test")[:4],
                           "validation.json": [{"text": "a new kind of review", "label": 2}], "labels.txt":
                           "negative\npositive\nneutral\n"}), ["--num_labels", "3"]


BAD = {
    "validation_label_unseen_in_train": (_validation_with_unseen_label,
                                         ["validation.json", "record 1", "'neutral'", "never occurs in train.json"]),
    "ner_validation_tag_unseen": (lambda d: (write_files(d, {"train.conll": "Ada B-PER\nsings O\n",
                                                             "validation.conll": "Acme B-ORG\n",
                                                             "test.conll": "Ada B-PER\n"}), ["--task", "ner"]),
                                  ["validation.conll", "line 1", "'B-ORG'", "never occurs in train.conll"]),
    "val_fraction_zero": (lambda d: (write_files(d, {"train.json": toy_records("train")[:8],
                                                     "test.json": toy_records("test")[:4]}), ["--val_fraction", "0"]),
                          ["--val_fraction 0", "(0, 0.5]"]),
    "val_fraction_above_half": (lambda d: (write_files(d, {"train.json": toy_records("train")[:8],
                                                           "test.json": toy_records("test")[:4]}),
                                           ["--val_fraction", "0.6"]), ["--val_fraction 0.6", "(0, 0.5]"]),
    "class_too_small_to_split": (lambda d: (write_files(d, {"train.json": [*toy_records("train")[:6], {
        "text": "meh", "label": "neutral"}], "test.json": toy_records("test")[:4], "labels.txt":
        "negative\npositive\nneutral\n"}), ["--num_labels", "3", "--val_fraction", "0.2"]),
        ["--val_fraction 0.2 of train.json", "class 'neutral' has 1 example", "every class"]),
    "val_fraction_beside_a_file": (lambda d: (write_files(d, {"train.json": toy_records("train")[:8],
                                                              "validation.json": toy_records("train")[8:12],
                                                              "test.json": toy_records("test")[:4]}),
                                              ["--val_fraction", "0.2"]),
                                   ["--val_fraction 0.2", "validation.json is the validation split already"]),
    "patience_without_validation": (lambda d: (write_files(d, {"train.json": toy_records("train")[:8],
                                                               "test.json": toy_records("test")[:4]}),
                                               ["--patience", "2"]), ["--patience 2", "no validation split"]),
    "select_on_without_glue": (lambda d: (write_files(d, {"train.json": toy_records("train")[:8],
                                                          "test.json": toy_records("test")[:4]}),
                                          ["--select_on", "dev"]), ["--select_on", "needs --glue"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, tmp_path, capsys):
    make, expected = BAD[case]
    data, extra = make(tmp_path / "data")
    expect_usage_error(capsys, finetune_args(data, tmp_path / "out", *extra), *expected, main=finetune_main,
                       untouched=tmp_path)

"""Finetuning: data readers, weights resolution, the script end to end, HF parity, exact resume, bad input."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    TOY,
    assert_usage_error,
    assert_weights_close,
    cli_error,
    expect_usage_error,
    finetune_args,
    snapshot,
    toy_records,
    write_files,
)

from litgpt import Config
from litgpt.args import FinetuneArgs
from litgpt.data.base import EpochBatches
from litgpt.data.classification import (
    AGNEWS_LABELS,
    ClassificationCollator,
    ClassificationDataModule,
)
from litgpt.model_roberta import RobertaForSequenceClassification
from litgpt.utils import UsageError

SCRIPT = ROOT / "scripts" / "finetune_roberta.py"
METRIC_KEYS = {"loss", "accuracy", "f1", "precision", "recall", "average", "per_class", "confusion_matrix",
               "weights_source", "best_epoch", "num_labels", "id2label"}


def small_toy(path: Path, n_train: int = 48, n_test: int = 16) -> Path:
    return write_files(path, {"train.json": toy_records("train")[:n_train], "test.json": toy_records("test")[:n_test]})


def script_main():
    spec = importlib.util.spec_from_file_location("finetune_roberta_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_script(*args, cwd=ROOT, env=None):
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def toy_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_run") / "out"
    before = snapshot(TOY)
    proc = run_script("--data_dir", TOY, "--output_dir", out, "--model_name", tiny_checkpoint, "--num_epochs", 1,
                      "--batch_size", 32, "--max_length", 64, "--learning_rate", 1e-3)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(TOY) == before, "the data dir was written"
    return out, proc


# ---- the script end to end ------------------------------------------------------------------------------------
def test_toy_run_from_litgpt_checkpoint(toy_run, tiny_checkpoint):
    out, proc = toy_run
    for name in ("config.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json", "classifier.pt",
                 "metrics.json", "train_state.pt"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "temp files left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["average"] == "binary" and metrics["num_labels"] == 2 and metrics["best_epoch"] == 1
    assert str(tiny_checkpoint) in metrics["weights_source"] and "new classification head" in metrics["weights_source"]
    assert f"Weights: litgpt checkpoint {tiny_checkpoint}" in proc.stdout
    assert 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    assert sum(map(sum, metrics["confusion_matrix"])) == 80
    assert set(metrics["per_class"]) == {"negative", "positive"}  # from data/test_data_finetune/labels.txt
    assert "confusion matrix" in proc.stdout and "precision" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["RobertaForSequenceClassification"] and config["num_labels"] == 2
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    head = torch.load(out / "classifier.pt", weights_only=True)
    assert set(head) == {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                         "classifier.out_proj.bias"}
    assert head["classifier.out_proj.weight"].shape == (2, 32)


def test_hf_loads_output_with_same_logits(toy_run):
    transformers = pytest.importorskip("transformers")
    from litgpt.checkpoint import load_checkpoint
    from litgpt.tokenizer import Tokenizer

    out, _ = toy_run
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    texts = [r["text"] for r in toy_records("test")[:6]] + ["short one", "Ünïcödé and emoji 🎬 too!"]
    enc = hf_tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    ours = Tokenizer(out)
    for row, text in zip(enc["input_ids"], texts):
        ids = ours.encode(text, max_length=64)
        assert row[: len(ids)].tolist() == ids

    loaded = load_checkpoint(out)
    model = RobertaForSequenceClassification(loaded.config, 2).eval()
    model.load_state_dict(loaded.state_dict)
    with torch.no_grad():
        expected = hf_model(**enc).logits
        actual = model(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # no validation split: nothing is chosen, and the saved weights are the last epoch's, from train_state.pt
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["best"] is None
    assert_weights_close({k: v.float() for k, v in state["model"].items()}, loaded.state_dict, atol=0)


def test_rerun_into_finished_output_is_allowed(toy_run, tiny_checkpoint, tmp_path):
    # the toy run's dir is ours and finished: a new run may replace it; a foreign dir is refused (see bad inputs)
    from litgpt.export import check_output_dir

    out, _ = toy_run
    check_output_dir(out, TOY, resume=False)
    with pytest.raises(UsageError, match="already finished"):
        from litgpt.finetune.prepare import load_resume_state

        saved = torch.load(out / "train_state.pt", weights_only=True)["args"]
        args = FinetuneArgs(**{**saved, "data_dir": Path(saved["data_dir"]), "output_dir": out})
        load_resume_state(args, ClassificationDataModule(TOY, 2))


# ---- AG News ---------------------------------------------------------------------------------------------------
AG_ROWS = [
    (3, "Wall St. Bears Claw Back", "Short-sellers, Wall Street's dwindling band of ultra-cynics, are seeing green."),
    (4, "New Chip Doubles Speed", "A chip maker said on Monday its new processor runs twice as fast, with less power."),
    (2, "Team Wins the Final", "The home side scored twice in the last minute to win the cup final."),
    (1, "Leaders Meet on Trade", "Heads of state gathered to discuss tariffs and a new trade pact."),
    (3, "Oil Prices Rise", 'Crude futures rose as "supply worries" grew, traders said.'),
    (4, "Space Probe Sends Photos", "The probe returned the first close images of the comet's surface."),
    (2, "Star Striker Injured", "The striker will miss three weeks with a knee injury."),
    (1, "Election Results Due", "Officials said the count would finish by Friday."),
]


def write_agnews(folder: Path, layout: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", AG_ROWS), ("test", AG_ROWS[:4])):
        if layout == "csv":  # the original: no header, quoted fields, class index 1-4
            with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fp:
                csv.writer(fp, quoting=csv.QUOTE_ALL).writerows(rows)
        else:
            lines = [json.dumps({"text": f"{t} {d}", "label": c - 1}) for c, t, d in rows]
            (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_agnews_readers(tmp_path):
    csv_data = ClassificationDataModule(write_agnews(tmp_path / "csv", "csv"), 4, use_agnews=True)
    jsonl_data = ClassificationDataModule(write_agnews(tmp_path / "jsonl", "jsonl"), 4, use_agnews=True)
    for data in (csv_data, jsonl_data):
        assert data.id2label == dict(enumerate(AGNEWS_LABELS))
        assert data.train.labels == [c - 1 for c, _, _ in AG_ROWS]
        assert data.train.texts[0] == f"{AG_ROWS[0][1]} {AG_ROWS[0][2]}"
        assert len(data.test) == 4
    # a mirror's "Class Index,Title,Description" header row is skipped
    with open(tmp_path / "csv" / "train.csv", "r+", encoding="utf-8") as fp:
        body = fp.read()
        fp.seek(0)
        fp.write('"Class Index","Title","Description"\n' + body)
    assert len(ClassificationDataModule(tmp_path / "csv", 4, use_agnews=True).train) == len(AG_ROWS)
    # a converted CSV with text,label columns and names as labels
    conv = write_files(tmp_path / "converted", {
        "train.csv": 'text,label\n"Stocks fall",Business\n"Cup final",Sports\n"Vote",World\n"Chip",Sci/Tech\n',
        "test.csv": 'text,label\n"Goal",1\n',
    })
    data = ClassificationDataModule(conv, 4, use_agnews=True)
    assert data.train.labels == [2, 1, 0, 3] and data.test.labels == [1]


@pytest.mark.parametrize("layout", ["csv", "jsonl"])
def test_agnews_end_to_end(layout, tmp_path, capsys):
    data_dir = write_agnews(tmp_path / "ag", layout)
    out = tmp_path / "out"
    script_main()(finetune_args(data_dir, out, "--num_labels", "4", "--batch_size", "4", "--use_agnews"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["average"] == "macro" and metrics["num_labels"] == 4
    assert metrics["id2label"] == {str(i): n for i, n in enumerate(AGNEWS_LABELS)}
    assert list(metrics["per_class"]) == list(AGNEWS_LABELS)
    assert "--from_scratch" in metrics["weights_source"]
    config = json.loads((out / "config.json").read_text())
    assert config["label2id"] == {n: i for i, n in enumerate(AGNEWS_LABELS)}
    assert "macro" in capsys.readouterr().out


def hub_like_agnews_cache(root: Path) -> Path:
    """A huggingface_hub cache holding the AG News dataset repo as the Hub lays it out (parquet under data/)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = root / "datasets--fancyzhx--ag_news"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    data = repo / "snapshots" / commit / "data"
    data.mkdir(parents=True)
    for split, rows in (("train", AG_ROWS), ("test", AG_ROWS[:4])):
        table = pa.table({"text": [f"{t} {d}" for _, t, d in rows], "label": [c - 1 for c, _, _ in rows]})
        pq.write_table(table, data / f"{split}-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_agnews_arrives_by_itself_from_the_hub_cache(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_like_agnews_cache(tmp_path / "hub")))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    data = ClassificationDataModule(tmp_path / "no_files_here", 4, use_agnews=True)
    assert data.train.texts == [f"{t} {d}" for _, t, d in AG_ROWS]
    assert data.train.labels == [c - 1 for c, _, _ in AG_ROWS] and data.test.labels == [2, 3, 1, 0]
    assert data.id2label == dict(enumerate(AGNEWS_LABELS))
    # end to end through the command line, in a subprocess that finds the same cache
    out = tmp_path / "out"
    proc = run_script(*finetune_args(tmp_path / "empty", out, "--num_labels", "4", "--batch_size", "4",
                                     "--use_agnews"),
                      env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 4


def test_agnews_offline_without_files_says_how_to_place_them(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    work = tmp_path / "work"
    work.mkdir()
    line = expect_usage_error(capsys, finetune_args(work / "ag", work / "out", "--num_labels", "4", "--use_agnews"),
                              "--use_agnews", "train.csv and test.csv", main=script_main(), untouched=work)
    assert "class index 1-4" in line


def test_agnews_flag_refuses_data_that_is_not_agnews(tmp_path, capsys):
    expect_usage_error(capsys, finetune_args(TOY, tmp_path / "out", "--num_labels", "4", "--use_agnews"),
                       "--use_agnews", "labels [0, 1]", "not the four AG News classes", main=script_main(),
                       untouched=tmp_path)


# ---- exact resume --------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def test_exact_resume(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from litgpt.__main__ import run_command
    from litgpt.export import check_output_dir
    from litgpt.finetune import loop, setup

    data_dir = small_toy(tmp_path / "data")
    common = ["--data_dir", str(data_dir), "--model_name", str(tiny_checkpoint), "--num_epochs", "2",
              "--batch_size", "8", "--max_length", "48", "--learning_rate", "1e-3", "--warmup_ratio", "0.2",
              "--val_fraction", "0.25"]
    run_command(setup, common + ["--output_dir", str(tmp_path / "full")], prog="test")

    real_save = loop.save_train_state

    def save_then_die(path, state, *args):
        real_save(path, state, *args)
        if state["epoch"] == 1:
            raise Killed()

    monkeypatch.setattr(loop, "save_train_state", save_then_die)
    with pytest.raises(Killed):
        run_command(setup, common + ["--output_dir", str(tmp_path / "resumed")], prog="test")
    monkeypatch.setattr(loop, "save_train_state", real_save)
    # an unfinished run is not overwritten by accident
    with pytest.raises(UsageError, match="--resume"):
        check_output_dir(tmp_path / "resumed", data_dir, resume=False)
    run_command(setup, common + ["--output_dir", str(tmp_path / "resumed"), "--resume", "true"], prog="test")

    def load(run, name):
        path = tmp_path / run / name
        return json.loads(path.read_text()) if name.endswith(".json") else torch.load(path, weights_only=True)

    full, resumed = load("full", "train_state.pt"), load("resumed", "train_state.pt")
    assert full["epoch"] == resumed["epoch"] == 2
    assert_weights_close(full["model"], resumed["model"], atol=1e-6)
    assert_weights_close(load("full", "pytorch_model.bin"), load("resumed", "pytorch_model.bin"), atol=1e-6)
    m_full, m_resumed = load("full", "metrics.json"), load("resumed", "metrics.json")
    assert m_full["best_epoch"] == m_resumed["best_epoch"]
    assert m_full["selected_by"] == {"split": "validation", "metric": "accuracy",
                                     "source": "--val_fraction 0.25 of train.json (seed 42)"}
    for a, b in zip(m_full["validation"]["history"], m_resumed["validation"]["history"]):
        assert a == pytest.approx(b, abs=1e-6)

    # a resume with other hyperparameters would not reproduce the run: refused
    code, _ = cli_error(capsys, common[:-4] + ["--warmup_ratio", "0.3", "--val_fraction", "0.25", "--output_dir",
                                              str(tmp_path / "resumed"), "--num_epochs", "3", "--resume", "true"],
                        main=lambda args: run_command(setup, args, prog="test"))
    assert code == 2


# ---- where the weights come from ------------------------------------------------------------------------------
def test_weights_from_mlm_checkpoint_pretrain_state_and_hf_dir(tiny_checkpoint, tmp_path):
    from litgpt.finetune.prepare import find_weights, starting_weights
    from litgpt.scripts.convert_lit_checkpoint import save_hf_dir
    from litgpt.tokenizer import Tokenizer

    mlm = torch.load(tiny_checkpoint / "lit_model.pth", weights_only=True)
    config = Config.from_file(tiny_checkpoint / "model_config.yaml")

    # a pretraining out_dir: best.pt (training state) + tokenizer files
    pre = tmp_path / "pretrain_out"
    Tokenizer(tiny_checkpoint).save(pre)
    torch.save({"model": mlm, "model_config": asdict(config), "step": 7}, pre / "best.pt")
    # a HuggingFace RobertaForMaskedLM dir
    hf = tmp_path / "hf"
    save_hf_dir(dict(mlm), Config(**asdict(config)), hf, tokenizer_dir=tiny_checkpoint)

    for source, expect in ((tiny_checkpoint, "litgpt checkpoint"), (pre, "step 7"), (hf, "HuggingFace")):
        cfg, state, tokenizer, where = find_weights(str(source), False, [], TOY / "train.json")
        weights, what = starting_weights(lambda c: RobertaForSequenceClassification(c, 2), cfg, state, where)
        assert expect in where and what.startswith("encoder, new classification head")
        assert set(weights) == {k for k in mlm if k.startswith("roberta.")}
        model = RobertaForSequenceClassification(cfg, 2)
        model.load_state_dict(weights, strict=False)
        for key, value in model.roberta.state_dict().items():
            torch.testing.assert_close(value, mlm[f"roberta.{key}"], atol=1e-7, rtol=0)
        assert tokenizer.pad_id == cfg.pad_token_id


def test_offline_registry_name_says_what_to_do(tmp_path):
    out = tmp_path / "out"
    proc = run_script("--data_dir", TOY, "--output_dir", out, cwd=tmp_path,
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")})
    line = assert_usage_error(proc.returncode, proc.stderr, "litgpt download FacebookAI/roberta-base", "--from_scratch")
    assert line.startswith("error: --model_name roberta-base"), proc.stderr
    assert not out.exists()


def test_registry_config_without_weights(tmp_path, capsys):
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    _, err = cli_error(capsys, ["--data_dir", TOY, "--output_dir", tmp_path / "o", "--model_name", "roberta-tiny"],
                       main=lambda args: run_command(setup, args, prog="t"))
    assert "--from_scratch" in err


# ---- bad input: exit code 2, one line, no traceback, nothing written ------------------------------------------------
def _bad_data(tmp_path: Path, case: str):
    d = tmp_path / "data"
    train, test = toy_records("train")[:8], toy_records("test")[:4]
    extra = []
    if case == "missing_file":
        expected = ["no test split", "test.json", "test.jsonl", "test.csv", "test.tsv"]
        return write_files(d, {"train.json": train}), extra, expected
    if case == "no_text":
        train[2] = {"label": 1}
        return _write(d, train, test), extra, ["train.json", "record 3", "text"]
    if case == "no_label":
        train[4] = {"text": "hello"}
        return _write(d, train, test), extra, ["train.json", "record 5", "label"]
    if case == "label_out_of_range":
        test[1]["label"] = 2
        return _write(d, train, test), extra, ["test.json", "record 2", "outside [0, 2)"]
    if case == "num_labels_disagree":
        return _write(d, train, test), ["--num_labels", "3"], ["--num_labels 3", "pass --num_labels 2"]
    if case == "empty_split":
        return _write(d, train, []), extra, ["test.json", "no examples"]
    if case == "string_label_no_mapping":
        train = [{**r, "label": ["negative", "positive"][r["label"]]} for r in train]
        test = [{**r, "label": "neutral"} for r in test]
        return _write(d, train, test), extra, ["test.json", "record 1", "'neutral'", "no mapping"]
    if case == "csv_columns":
        files = {"train.csv": 'text,label\n"fine movie",1\n"bad movie",0,extra\n', "test.csv": 'text,label\n"ok",1\n'}
        return write_files(d, files), extra, ["train.csv", "line 3", "3 columns"]
    if case == "invalid_utf8":
        files = {"train.jsonl": b'{"text": "good", "label": 1}\n{"text": "bad \xff", "label": 0}\n',
                 "test.jsonl": b'{"text": "ok", "label": 1}\n{"text": "no", "label": 0}\n'}
        return write_files(d, files), extra, ["train.jsonl:2", "invalid UTF-8"]
    if case == "agnews_bad_index":
        files = {"train.csv": '"5","Title","Body"\n', "test.csv": '"1","Title","Body"\n'}
        return write_files(d, files), ["--use_agnews", "--num_labels", "4"], ["train.csv", "line 1", "1-4"]
    if case == "max_length":
        return _write(d, train, test), ["--max_length", "600"], ["--max_length 600", "512"]
    if case == "foreign_output":
        return _write(d, train, test), extra, ["--output_dir", "not empty"]
    if case == "output_in_data":
        return _write(d, train, test), extra, ["inside --data_dir"]
    raise AssertionError(case)


def _write(d: Path, train, test) -> Path:
    return write_files(d, {"train.json": train, "test.json": test})


BAD_CASES = ["missing_file", "no_text", "no_label", "label_out_of_range", "num_labels_disagree", "empty_split",
             "string_label_no_mapping", "csv_columns", "invalid_utf8", "agnews_bad_index", "max_length",
             "foreign_output", "output_in_data"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input(case, tmp_path, capsys):
    data_dir, extra, expected = _bad_data(tmp_path, case)
    out = tmp_path / "out"
    if case == "foreign_output":
        write_files(out, {"notes.txt": "mine"})
    if case == "output_in_data":
        out = data_dir / "out"
    expect_usage_error(capsys, finetune_args(data_dir, out, *extra), *expected, main=script_main(),
                       untouched=tmp_path)


# ---- data pieces ------------------------------------------------------------------------------------------------
def test_label_names_and_formats(tmp_path):
    d = write_files(tmp_path / "names", {"train.tsv": 'sentence\tlabel\nit is "great"\tpos\nawful\tneg\nfine\tpos\n',
                                         "test.tsv": "sentence\tlabel\nbad\tneg\n"})
    data = ClassificationDataModule(d, 2)
    assert data.id2label == {0: "neg", 1: "pos"} and data.train.labels == [1, 0, 1]
    assert data.train.texts[0] == 'it is "great"'
    data = ClassificationDataModule(d, 2, label_names=["pos", "neg"])
    assert data.id2label == {0: "pos", 1: "neg"} and data.train.labels == [0, 1, 0]
    with pytest.raises(UsageError, match="label names"):
        ClassificationDataModule(d, 3)
    # ids as strings in CSV, a JSON file with one object per line
    c = write_files(tmp_path / "ids", {"train.csv": 'id,text,label\n1,"a, b",1\n2,c,0\n',
                                       "test.json": '{"text": "x", "label": 0}\n{"text": "y", "label": 1}\n'})
    data = ClassificationDataModule(c, 2)
    assert data.train.texts == ["a, b", "c"] and data.train.labels == [1, 0] and data.test.labels == [0, 1]


def test_batches_group_by_length_and_cover_everything():
    lengths = [(i * 37) % 50 + 3 for i in range(203)]
    sampler = EpochBatches(len(lengths), batch_size=8, shuffle=True, seed=1, lengths=lengths)
    first = sampler.batches()
    assert sorted(i for b in first for i in b) == list(range(203))
    assert sampler.batches() == first  # a function of (seed, epoch) only
    sampler.set_epoch(1)
    assert sampler.batches() != first
    padded = sum(len(b) * max(lengths[i] for i in b) for b in first)
    assert padded < 1.2 * sum(lengths)
    evaluation = EpochBatches(len(lengths), batch_size=8, shuffle=False, lengths=lengths).batches()
    flat = [i for b in evaluation for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    # 2 and 3 ranks (26 batches: uneven): every example once, the same number of batches, none above 8
    for world in (2, 3):
        shards = [EpochBatches(len(lengths), 8, True, 1, rank=r, world_size=world, lengths=lengths) for r in
                  range(world)]
        batches = [shard.batches() for shard in shards]
        assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(shards[0])
        assert sorted(i for b in batches for batch in b for i in batch) == list(range(203))
        assert max(len(batch) for b in batches for batch in b) <= 8

    batch = ClassificationCollator(pad_id=1)([([0, 5, 2], 1), ([0, 7, 8, 9, 2], 0)])
    assert batch["input_ids"].tolist() == [[0, 5, 2, 1, 1], [0, 7, 8, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 0]


def test_bare_flags():
    from litgpt.__main__ import normalize_argv
    from litgpt.finetune import setup

    assert normalize_argv(setup, ["--use_agnews", "--num_labels", "4", "--resume"]) == [
        "--use_agnews", "true", "--num_labels", "4", "--resume", "true"]
    assert normalize_argv(setup, ["--use_agnews", "false", "--from_scratch", "true"]) == [
        "--use_agnews", "false", "--from_scratch", "true"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_accelerator_is_one_line(tmp_path, capsys):
    args = ["--data_dir", small_toy(tmp_path / "d", 8, 4), "--output_dir", tmp_path / "o", "--model_name",
            "roberta-tiny", "--from_scratch", "--accelerator", "cuda"]
    line = expect_usage_error(capsys, args, main=script_main())
    assert line.startswith("error: --accelerator cuda") and not (tmp_path / "o").exists()


def test_checkpoint_that_does_not_fit_its_config(tiny_checkpoint, tmp_path, capsys):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    Config.from_file(ckpt / "model_config.yaml", n_layer=3).save(ckpt / "model_config.yaml")
    data_dir = small_toy(tmp_path / "d", 8, 4)
    expect_usage_error(capsys, ["--data_dir", data_dir, "--output_dir", tmp_path / "o", "--model_name", ckpt],
                       "missing", str(ckpt), main=script_main(), untouched=tmp_path)

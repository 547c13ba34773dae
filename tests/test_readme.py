"""The README runs as written: every block marked `<!-- test: run -->` runs verbatim, command 1 (the CPU demo) first,
and the demo visibly learns: the masked word of a training sentence comes first, the classifier is accurate and
names its classes."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

MARK = "<!-- test: run -->"
# command 1 sets up a virtual environment first; the test runs in the one it already has
SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "


def runnable_blocks(readme: str):
    """(language, code) of each fenced block right after a line that is exactly the marker, in order."""
    pattern = re.compile(r"^" + re.escape(MARK) + r"\n```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return pattern.findall(readme)


def test_blocks_are_found():
    blocks = runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [lang for lang, _ in blocks] == ["bash", "bash", "python", "bash", "bash", "bash", "bash", "bash"]
    assert blocks[0][1].startswith(SETUP)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A fresh folder with what the README's commands read, after running every runnable block in order."""
    work = tmp_path_factory.mktemp("readme")
    for folder in ("config_hub", "scripts"):
        shutil.copytree(ROOT / folder, work / folder)
    for folder in ("demo_corpus", "test_data_finetune", "test_data_embed"):
        shutil.copytree(ROOT / "data" / folder, work / "data" / folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TOKENIZERS_PARALLELISM": "false"}
    outputs = []
    for i, (lang, code) in enumerate(runnable_blocks((ROOT / "README.md").read_text(encoding="utf-8"))):
        if i == 0:
            code = code.removeprefix(SETUP)
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, f"block {i + 1} failed:\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    return work, outputs


def test_demo_fills_the_mask_of_a_training_sentence(demo):
    work, _ = demo
    for checkpoint in ("out/pretrain-demo", "out/pretrain-demo/final"):
        proc = run_cli("fill_mask", checkpoint, "--text", "Paris is the capital of <mask>.", "--json", cwd=work)
        assert proc.returncode == 0, proc.stderr
        best = json.loads(proc.stdout)[0][0][0]
        assert best["token"] == " France", (checkpoint, json.loads(proc.stdout)[0][0])


def test_demo_reports_a_validation_accuracy_well_above_chance(demo):
    work, outputs = demo
    assert "val acc" in outputs[0]
    rows = list(csv.DictReader(open(next((work / "out" / "pretrain-demo" / "logs").rglob("metrics.csv")))))
    accuracy = [float(r["val_accuracy"]) for r in rows if r.get("val_accuracy")]
    assert accuracy[-1] >= 0.3, accuracy  # the 300-step recipe before this one reached 0.19


def test_demo_classifier_is_accurate_and_names_its_classes(demo):
    work, outputs = demo
    metrics = json.loads((work / "out" / "roberta_finetuned" / "metrics.json").read_text())
    # the last epoch's test accuracy (the demo has no validation split, so nothing is chosen): 0.80-0.84 measured
    # over seeds 1-3 and 0.825 at the default seed on one AVX-512 CPU (chance is 0.5; the best of the 8 epochs on the
    # test split itself, as reported before that rule, was 0.86); other CPUs round differently, hence the margin
    assert metrics["accuracy"] >= 0.75, metrics["accuracy"]
    assert metrics["selected_by"]["split"] == "none" and metrics["best_epoch"] == 8
    assert metrics["id2label"] == {"0": "negative", "1": "positive"}
    config = json.loads((work / "out" / "roberta_finetuned" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert re.search(r"^(positive|negative)\t", outputs[0], re.MULTILINE), outputs[0][-2000:]
    predictions = json.loads(outputs[1].strip().splitlines()[-1])
    # two held-out reviews, whose probabilities were below 0.003 and above 0.99 at seeds 1-3 and the default
    assert [p["label"] for p in predictions] == ["negative", "positive"]


def test_real_checkpoint_ranks_by_meaning_and_beats_the_from_scratch_demo(demo):
    work, outputs = demo
    ranking = [line.split("\t", 1)[1] for line in outputs[3].splitlines() if re.match(r"-?\d\.\d{4}\t", line)]
    assert ranking[0] == "Boil the noodles in salted water for ten minutes.", outputs[3]
    assert ranking[-1] in ("The stock market fell sharply today.", "My cat sleeps all afternoon.")
    minilm = json.loads((work / "out" / "minilm_finetuned" / "metrics.json").read_text())
    scratch = json.loads((work / "out" / "roberta_finetuned" / "metrics.json").read_text())
    assert minilm["accuracy"] >= 0.9 and minilm["accuracy"] > scratch["accuracy"], (minilm["accuracy"],
                                                                                    scratch["accuracy"])
    config = json.loads((work / "out" / "minilm_finetuned" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]


def test_lora_learns_above_the_majority_baseline(demo):
    work, outputs = demo
    out = work / "out" / "roberta_lora"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5, metrics["accuracy"]  # the toy test set is balanced: 40 and 40
    assert re.search(r"LoRA r=8 on \d+ layers", outputs[5]), outputs[5][-2000:]
    assert (out / "pytorch_model.bin").stat().st_size > 10 * (out / "lora.pt").stat().st_size


def test_deploy_on_cpu_answers_as_pytorch_does(demo):
    """The int8 exports keep the real model's ranking and the demo classifier's labels."""
    work, outputs = demo
    ranking = [line.split("\t", 1)[1] for line in outputs[7].splitlines() if re.match(r"-?\d\.\d{4}\t", line)]
    assert ranking[0] == "Boil the noodles in salted water for ten minutes.", outputs[7]
    predictions = json.loads(outputs[7].strip().splitlines()[-1])
    assert [p["label"] for p in predictions] == ["negative", "positive"]
    assert (work / "out" / "classifier-int8" / "onnx" / "model.onnx").is_file()


def test_embedding_training_learns_the_codenames(demo):
    """One epoch from all-MiniLM-L6-v2 on the support-desk pairs: the test figures rise well above the untrained
    model's (nDCG@10 0.653, Spearman 0.510, measured), a held-out query finds its product, the folder is
    sentence-transformers', and mining writes a negative for every pair."""
    work, outputs = demo
    out = work / "out" / "support_embedder"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_by"]["split"] == "validation", metrics["selected_by"]
    assert metrics["test"]["ndcg@10"] >= 0.85 and metrics["test"]["spearman"] >= 0.7, metrics["test"]
    ranking = [line.split("\t", 1)[1] for line in outputs[4].splitlines() if re.match(r"-?\d\.\d{4}\t", line)]
    assert ranking[0] == "Jacana espresso machine: does not turn on", outputs[4]
    assert {"modules.json", "sentence_bert_config.json", "config.json"} <= {p.name for p in out.iterdir()}
    mined = [json.loads(line) for line in (work / "out" / "support_mined.jsonl").read_text().splitlines()]
    assert len(mined) == 144 and all(row["negative_1"] != row["positive"] for row in mined)

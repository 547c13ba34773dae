"""Sentence pairs, regression, multi-label and the GLUE runner: losses and metrics against their references, HF
loading of every kind of output, GLUE's own file layout for each task, and bad input."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, expect_usage_error, ragged_batch, tiny_hf_config, toy_records, write_files

PAIRS = ROOT / "data" / "test_data_pairs"
REGRESSION = ROOT / "data" / "test_data_regression"


def finetune_main(args):
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    run_command(setup, [str(a) for a in args], prog="litgpt finetune")


def tiny_run(data_dir, out, model="roberta-tiny", *extra):
    finetune_main(["--data_dir", data_dir, "--output_dir", out, "--model_name", model, "--from_scratch",
                   "--num_epochs", "1", "--batch_size", "16", "--learning_rate", "1e-3", *extra])


# ---- losses and metrics against their references --------------------------------------------------------------
@pytest.mark.parametrize("problem_type", ["single_label_classification", "regression", "multi_label_classification"])
def test_loss_equals_hf(problem_type):
    from transformers import RobertaForSequenceClassification as HFClassifier

    from litgpt.losses import classification_loss

    num_labels = {"regression": 1, "multi_label_classification": 3}.get(problem_type, 3)
    torch.manual_seed(0)
    hf = HFClassifier(tiny_hf_config(num_labels=num_labels, problem_type=problem_type)).eval()
    ids, mask = ragged_batch()
    labels = {"regression": torch.randn(4) * 2, "multi_label_classification": torch.randint(0, 2, (4, 3)).float()
              }.get(problem_type, torch.tensor([0, 2, 1, 2]))
    out = hf(input_ids=ids, attention_mask=mask, labels=labels)
    ours = classification_loss(out.logits, labels, problem_type)
    assert abs(ours.item() - out.loss.item()) <= 1e-6


def test_metrics_on_hand_made_cases():
    from litgpt.metrics import ClassificationMetrics, MultiLabelMetrics, RegressionMetrics

    cpu = torch.device("cpu")
    reg = RegressionMetrics(cpu)  # fed in two batches: the metrics accumulate
    preds, labels = [1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.0, 3.5, 5.0, 4.5]
    reg.update(torch.tensor(preds[:2])[:, None], torch.tensor(labels[:2]))
    reg.update(torch.tensor(preds[2:])[:, None], torch.tensor(labels[2:]))
    got = reg.compute()
    mp, ml = sum(preds) / 5, sum(labels) / 5
    cov = sum((p - mp) * (t - ml) for p, t in zip(preds, labels))
    pearson = cov / (sum((p - mp) ** 2 for p in preds) * sum((t - ml) ** 2 for t in labels)) ** 0.5
    assert abs(got["pearson"] - pearson) < 1e-6
    assert abs(got["spearman"] - 0.8) < 1e-6  # rank differences -1, 1, 0, -1, 1: 1 - 6 * 4 / (5 * 24)
    assert abs(got["loss"] - sum((p - t) ** 2 for p, t in zip(preds, labels)) / 5) < 1e-6

    multi = MultiLabelMetrics(3, cpu, threshold=0.5)
    logits = torch.tensor([[2.0, -1.0, 0.5], [-2.0, 3.0, -0.1], [1.0, 1.0, -3.0], [-1.0, -1.0, 2.0]])
    targets = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 1]])
    multi.update(logits, targets)
    got = multi.compute()
    # predicted: [1,0,1], [0,1,0], [1,1,0], [0,0,1]; per label (tp, fp, fn): (2,0,0), (1,1,1), (2,0,1)
    assert abs(got["f1_micro"] - 2 * 5 / (2 * 5 + 1 + 2)) < 1e-6
    assert abs(got["f1_macro"] - (1.0 + 0.5 + 0.8) / 3) < 1e-6
    assert got["exact_match"] == 0.25  # only the first row has every label right

    binary = ClassificationMetrics(2, cpu)
    pred, true = [1, 1, 0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1, 1, 0]  # tp 3, fp 1, tn 3, fn 1
    binary.update(torch.nn.functional.one_hot(torch.tensor(pred), 2).float(), torch.tensor(true))
    assert abs(binary.compute()["mcc"] - (3 * 3 - 1 * 1) / (4 * 4 * 4 * 4) ** 0.5) < 1e-6
    one_class = ClassificationMetrics(2, cpu)  # sklearn (GLUE's official MCC) gives 0 when one class is predicted
    one_class.update(torch.tensor([[1.0, 0.0]] * 6), torch.tensor([0, 0, 0, 1, 1, 0]))
    assert one_class.compute()["mcc"] == 0.0


# ---- outputs that transformers loads with the same predictions ------------------------------------------------
def multi_label_data(root: Path) -> Path:
    topics = ["food", "sports", "weather"]
    rows = []
    for i, r in enumerate(toy_records("train")[:60]):
        rows.append({"text": r["text"], "labels": [t for j, t in enumerate(topics) if (i >> j) & 1]})
    return write_files(root, {"train.json": rows[:44], "test.json": rows[44:], "labels.txt": "\n".join(topics)})


@pytest.mark.parametrize("kind", ["roberta_pairs", "bert_pair_regression", "multi_label"])
def test_outputs_load_in_transformers_with_the_same_predictions(kind, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from litgpt.api import Classifier

    out = tmp_path / "out"
    data, model, extra, problem = {
        "roberta_pairs": (PAIRS, "roberta-tiny", [], "single_label_classification"),
        "bert_pair_regression": (REGRESSION, "bert-tiny", ["--num_labels", "1"], "regression"),
        "multi_label": (multi_label_data(tmp_path / "d"), "roberta-tiny", ["--problem_type", "multi_label",
                                                                           "--num_labels", "3"],
                        "multi_label_classification"),
    }[kind]
    tiny_run(data, out, model, *extra)
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == problem
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"regression": "pearson", "multi_label_classification": "f1_micro"}.get(problem, "accuracy") in metrics

    records = json.loads((data / "test.json").read_text())[:6]
    firsts = [r.get("text", r.get("sentence1")) for r in records]
    seconds = None if kind == "multi_label" else [r.get("text_b", r.get("sentence2")) for r in records]
    ours = Classifier.load(out, device="cpu").predict(firsts, seconds)
    hf_tok, hf = AutoTokenizer.from_pretrained(out), AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.problem_type == problem
    enc = hf_tok(firsts, seconds, padding=True, truncation=True, return_tensors="pt")
    if kind == "bert_pair_regression":
        assert enc["token_type_ids"].any(), "BERT pairs carry token types"
    with torch.no_grad():
        logits = hf(**enc).logits
    if problem == "regression":
        expected = logits[:, 0].tolist()
        assert all(abs(a["score"] - b) <= 1e-5 for a, b in zip(ours, expected))
    else:
        probs = logits.sigmoid() if problem == "multi_label_classification" else logits.softmax(-1)
        torch.testing.assert_close(torch.tensor([a["probabilities"] for a in ours]), probs, atol=1e-5, rtol=0)
    if seconds is not None:
        assert ours[0]["text_pair"] == seconds[0]


# ---- GLUE in its own layout -----------------------------------------------------------------------------------
def glue_folders(root: Path) -> Path:
    """Every GLUE task in GLUE's exact layout (its headers, column orders, label spellings), a few rows each."""
    texts = [r["text"].replace("\t", " ") for r in toy_records("train")[:40]]

    def rows(n, make):
        return "".join(make(i, texts[i % 40], texts[(i * 7 + 3) % 40]) + "\n" for i in range(n))

    nli = ["entailment", "neutral", "contradiction"]
    mnli_head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
                 "sentence2_parse\tsentence1\tsentence2")

    def mnli(i, a, b, dev=False):
        labels = "\t".join([nli[i % 3]] * (5 if dev else 1))
        return f"{i}\t{i}\t{i}n\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t{a}\t{b}\t{labels}\t{nli[i % 3]}"

    files = {}
    for split, n in (("train", 12), ("dev", 6)):
        files[f"CoLA/{split}.tsv"] = rows(n, lambda i, a, b: f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{a}")
        files[f"SST-2/{split}.tsv"] = "sentence\tlabel\n" + rows(n, lambda i, a, b: f"{a}\t{i % 2}")
        files[f"MRPC/{split}.tsv"] = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + rows(
            n, lambda i, a, b: f"{i % 2}\t{100 + i}\t{200 + i}\t{a}\t{b}")
        files[f"STS-B/{split}.tsv"] = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                                       "sentence2\tscore\n") + rows(
            n, lambda i, a, b: f"{i}\tmain-news\tnews\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{(i * 0.7) % 5:.3f}")
        files[f"QQP/{split}.tsv"] = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n" + rows(
            n, lambda i, a, b: f"{i}\t{2 * i}\t{2 * i + 1}\t{a}?\t{b}?\t{i % 2}")
        files[f"QNLI/{split}.tsv"] = "index\tquestion\tsentence\tlabel\n" + rows(
            n, lambda i, a, b: f"{i}\t{a}?\t{b}\t{['entailment', 'not_entailment'][i % 2]}")
        files[f"RTE/{split}.tsv"] = "index\tsentence1\tsentence2\tlabel\n" + rows(
            n, lambda i, a, b: f"{i}\t{a}\t{b}\t{['entailment', 'not_entailment'][i % 2]}")
        files[f"WNLI/{split}.tsv"] = "index\tsentence1\tsentence2\tlabel\n" + rows(
            n, lambda i, a, b: f"{i}\t{a}\t{b}\t{i % 2}")
    files["MNLI/train.tsv"] = mnli_head + "\tlabel1\tgold_label\n" + rows(12, mnli)
    for dev in ("dev_matched", "dev_mismatched"):
        files[f"MNLI/{dev}.tsv"] = (mnli_head + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
                                    + rows(6, lambda i, a, b: mnli(i, a, b, dev=True)))
    return write_files(root, files)


def test_glue_reads_every_task_in_its_layout(tmp_path):
    from litgpt.data.classification import ClassificationDataModule
    from litgpt.data.glue import GLUE_TASKS

    root = glue_folders(tmp_path / "glue")
    for name, task in GLUE_TASKS.items():
        data = ClassificationDataModule(root, task.num_labels, label_names=task.labels,
                                        problem_type=task.problem_type, glue_task=name)
        assert len(data.train) == 12 and len(data.test) == 6, name
        assert data.pairs == (len(task.text_columns) == 2), name
        assert data.train.texts[0].strip() and "\t" not in data.train.texts[0]
    mnli = ClassificationDataModule(root / "MNLI", 3, label_names=GLUE_TASKS["mnli"].labels, glue_task="mnli")
    assert mnli.train.labels[:3] == [0, 1, 2] and list(mnli.extra_tests) == ["dev_mismatched"]
    cola = ClassificationDataModule(root, 2, label_names=GLUE_TASKS["cola"].labels, glue_task="cola")
    assert cola.train.labels[:2] == [0, 1] and cola.train.texts_b is None
    stsb = ClassificationDataModule(root, 1, problem_type="regression", glue_task="stsb")
    assert stsb.train.labels[1] == pytest.approx(0.7)


def test_glue_all_prints_the_table(tmp_path, capsys):
    root = glue_folders(tmp_path / "glue")
    out = tmp_path / "runs"
    finetune_main(["--glue", "all", "--data_dir", root, "--output_dir", out, "--model_name", "roberta-tiny",
                   "--from_scratch", "--num_epochs", "1", "--batch_size", "8"])
    stdout = capsys.readouterr().out
    table = stdout[stdout.index("GLUE dev results"):]
    for folder, metric in (("CoLA", "mcc"), ("SST-2", "accuracy"), ("MRPC", "f1"), ("STS-B", "pearson"),
                           ("QQP", "accuracy"), ("MNLI", "dev_mismatched/accuracy"), ("QNLI", "accuracy"),
                           ("RTE", "accuracy"), ("WNLI", "accuracy")):
        assert f"| {folder} |" in table, folder
        assert f"| {metric} |" in table, metric
        assert (out / folder / "metrics.json").is_file()
    results = json.loads((out / "glue_results.json").read_text())
    assert set(results["tasks"]) == {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"}
    assert set(results["tasks"]["STS-B"]["metrics"]) == {"pearson", "spearman"}
    assert set(results["tasks"]["MRPC"]["metrics"]) == {"f1", "accuracy"}
    assert json.loads((out / "CoLA" / "metrics.json").read_text())["selected_by"]["metric"] == "mcc"

    seeds_out = tmp_path / "seeds"
    finetune_main(["--glue", "RTE", "--data_dir", root / "RTE", "--output_dir", seeds_out, "--model_name",
                   "roberta-tiny", "--from_scratch", "--num_epochs", "1", "--seeds", "2", "--select_on", "dev"])
    stdout = capsys.readouterr().out
    assert "median of 2 seeds" in stdout and "chosen on dev itself (the papers' practice" in stdout
    assert "chosen on 0.1 of train held out; dev scored once" in table
    rte = json.loads((seeds_out / "glue_results.json").read_text())
    assert rte["seeds"] == [42, 43] and len(rte["tasks"]["RTE"]["metrics"]["accuracy"]["values"]) == 2
    assert rte["selected_on"] == "dev"
    run = json.loads((seeds_out / "RTE" / "seed-43" / "metrics.json").read_text())
    assert run["selected_by"]["split"] == "dev" and run["validation"]["num_examples"] == run["num_examples"] == 6


# ---- bad input: one line, exit 2, nothing written --------------------------------------------------------------
def _bad(tmp_path: Path, case: str):
    d = tmp_path / "data"
    pairs = json.loads((PAIRS / "train.json").read_text())[:12]
    if case == "pair_missing_second_text":
        pairs[2] = {"text": pairs[2]["text"], "label": 1}
        return write_files(d, {"train.json": pairs, "test.json": pairs[3:6]}), [], \
            ["train.json", "record 3", "no 'text_b'", "pair file"]
    if case == "regression_label_not_a_number":
        scores = json.loads((REGRESSION / "train.json").read_text())[:12]
        scores[1]["score"] = "very similar"
        return write_files(d, {"train.json": scores, "test.json": scores[3:6]}), ["--num_labels", "1"], \
            ["train.json", "record 2", "'very similar'", "not a number"]
    if case == "multi_label_unknown_label":
        rows = [{"text": f"text {i}", "labels": ["a", "b"][: i % 3]} for i in range(9)]
        rows[7]["labels"] = ["a", "c"]
        files = {"train.json": rows[:6], "test.json": rows[6:], "labels.txt": "a\nb\n"}
        return write_files(d, files), ["--problem_type", "multi_label"], ["test.json", "record 2", "'c'", "no mapping"]
    if case == "glue_without_train":
        return write_files(d, {"RTE/dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"}), \
            ["--glue", "rte"], ["--glue rte", "no train.tsv"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["pair_missing_second_text", "regression_label_not_a_number",
                                  "multi_label_unknown_label", "glue_without_train"])
def test_bad_input(case, tmp_path, capsys):
    data_dir, extra, expected = _bad(tmp_path, case)
    args = ["--data_dir", data_dir, "--output_dir", tmp_path / "out", "--model_name", "roberta-tiny",
            "--from_scratch", "--num_epochs", "1", *extra]
    expect_usage_error(capsys, [str(a) for a in args], *expected, main=finetune_main, untouched=tmp_path)

"""`litgpt export --format onnx` and ONNX Runtime behind `litgpt.api`: every head of a random RoBERTa and BERT,
exported once, computes what our PyTorch model computes (1e-4 on ragged batches); the commands and the API answer
the same on an export as on its checkpoint; the export is the folder sentence-transformers and optimum read; bad
flags fail before anything is written. The real all-MiniLM-L6-v2 is in `tests/test_onnx_real.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import close, expect_usage_error, ragged_batch, run_cli_here, save_checkpoint, snapshot, toy_records

from litgpt import Config
from litgpt.api import Classifier, Embedder, MaskedLM, QuestionAnswerer, TokenClassifier
from litgpt.api.onnx_runtime import OnnxModel
from litgpt.checkpoint import build_model, load_checkpoint
from litgpt.model_roberta import (
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    headed_names,
)
from litgpt.onnx_export import ONNX_FILE

pytest.importorskip("onnxruntime")

# an interpreter with optimum's ONNX Runtime classes (optimum-onnx), which need transformers < 4.58 and so cannot be
# installed beside this project's transformers 5 (see benchmarks/cpu_inference.py): the real loaders run there
ST_ONNX_PYTHON = os.environ.get("LITGPT_ST_ONNX_PYTHON")
needs_optimum = pytest.mark.skipif(not ST_ONNX_PYTHON, reason="set LITGPT_ST_ONNX_PYTHON to an interpreter with "
                                                              "sentence-transformers[onnx] (optimum-onnx)")

HEADS = {"base": RobertaModel, "classification": RobertaForSequenceClassification, "mlm": RobertaForMaskedLM,
         "token_classification": RobertaForTokenClassification, "qa": RobertaForQuestionAnswering}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TEXTS = [r["text"] for r in toy_records("test")[:10]] + ["short", "Ünïcödé and emoji 🎬 too!"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """A byte-level BPE (RoBERTa) and a WordPiece (BERT) tokenizer, trained on the toy reviews."""
    from litgpt.train_tokenizer import train_tokenizer

    texts = [r["text"] for r in toy_records("train")]
    return {family: train_tokenizer(texts, vocab_size=1000, out_dir=tmp_path_factory.mktemp(f"{family}_tokenizer"),
                                    kind=kind) for family, kind in (("roberta", "bpe"), ("bert", "wordpiece"))}


@pytest.fixture(scope="module")
def exports(tokenizers, tmp_path_factory):
    """(checkpoint dir, export dir) per (family, head), built on first use: a random roberta-tiny or bert-tiny with
    that head (weights spread out, so the outputs have clear winners), exported in fp32 by the command line."""
    made = {}

    def get(family: str, head: str, quantize: str = "none"):
        if (family, head, quantize) in made:
            return made[family, head, quantize]
        tokenizer = tokenizers[family]
        ids = dict(pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                   mask_token_id=tokenizer.mask_id)
        labels = dict(num_labels=5, id2label=TAGS) if head == "token_classification" else {}
        config = Config.from_name(f"{family}-tiny", **ids, **labels)
        torch.manual_seed(0)
        model = HEADS[head](config) if head in ("base", "mlm", "qa") else HEADS[head](config, config.num_labels)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        root = tmp_path_factory.mktemp(f"{family}_{head}_{quantize}")
        checkpoint = save_checkpoint(root / "checkpoint", model, model.config, tokenizer)
        if head == "base":  # a bare encoder's checkpoint names its weights as a headed model's encoder does
            torch.save(headed_names(model.state_dict()), checkpoint / "lit_model.pth")
        proc = run_cli_here("export", checkpoint, "--output_dir", root / "onnx", "--quantize", quantize)
        assert proc.returncode == 0, proc.stderr
        made[family, head, quantize] = checkpoint, root / "onnx"
        return made[family, head, quantize]

    return get


@pytest.mark.parametrize("family", ["roberta", "bert"])
@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_equals_pytorch_on_ragged_batches(exports, family, head):
    checkpoint, folder = exports(family, head)
    loaded = load_checkpoint(checkpoint)
    ours = build_model(loaded.config, loaded.state_dict, loaded.source).eval()
    onnx = OnnxModel(folder)
    assert onnx.kind == head and onnx.precision == "fp32"
    ids, mask = ragged_batch(vocab_size=1000, lengths=(17, 5, 11, 2, 9), pad_id=loaded.config.pad_token_id)
    types = None  # BERT: sentence B from token 4 (the MLM reads one sentence)
    if family == "bert" and head != "mlm":
        types = (torch.arange(ids.size(1)) >= 4).long() * mask
    with torch.no_grad():
        expected = ours(ids, mask, types) if head != "mlm" else ours(ids, mask)
        got = onnx(ids, mask, types)
    real = mask.bool()
    pairs = list(zip(got, expected)) if head == "qa" else [(got, expected)]
    for a, b in pairs:
        assert a.shape == b.shape
        if head != "classification":  # per-token outputs: the pad positions are read by no one
            a, b = a[real], b[real]
        assert (a - b).abs().max() <= 1e-4, (a - b).abs().max()


def test_the_api_answers_the_same_on_an_export(exports):
    """Each class, loaded from the export, gives its checkpoint's answers: labels, masks, entities, spans, vectors."""
    cases = [(Classifier, "classification", lambda m: m.predict(TEXTS)),
             (Classifier, "classification", lambda m: m.predict(TEXTS[:4], TEXTS[4:8])),
             (MaskedLM, "mlm", lambda m: m.fill_mask([f"{t[:40]} {m.mask} end {m.mask}." for t in TEXTS[:5]], top_k=3)),
             (TokenClassifier, "token_classification", lambda m: m.predict(TEXTS)),
             (QuestionAnswerer, "qa", lambda m: m.answer(["What was it?"] * 3, TEXTS[:3])),
             (Embedder, "base", lambda m: m.embed(TEXTS).tolist())]
    for family in ("roberta", "bert"):
        for cls, head, ask in cases:
            checkpoint, folder = exports(family, head)
            on_onnx = cls.load(folder, batch_size=4)
            on_onnx.mask = on_onnx.tokenizer.id_to_token(on_onnx.tokenizer.mask_id)
            assert "ONNX Runtime fp32" in on_onnx.summary
            on_torch = cls.load(checkpoint, device="cpu", batch_size=4)
            on_torch.mask = on_onnx.mask
            assert close(ask(on_onnx), ask(on_torch), 1e-4), (family, head)


def test_commands_read_an_export(exports):
    checkpoint, folder = exports("roberta", "classification")
    args = [a for t in TEXTS[:3] for a in ("--text", t)]
    on_onnx, on_torch = (run_cli_here("classify", path, *args, "--json") for path in (folder, checkpoint))
    assert on_onnx.returncode == 0, on_onnx.stderr
    assert close(json.loads(on_onnx.stdout), json.loads(on_torch.stdout), 1e-4)
    proc = run_cli_here("classify", folder, *args)
    assert "ONNX Runtime fp32" in proc.stderr and "PyTorch" in run_cli_here("classify", checkpoint, *args).stderr
    checkpoint, folder = exports("roberta", "base")
    proc = run_cli_here("embed", folder, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert close(json.loads(proc.stdout), json.loads(run_cli_here("embed", checkpoint, *args, "--json").stdout), 1e-4)
    # a head without hidden states cannot embed, and says how to export the encoder
    proc = run_cli_here("embed", exports("roberta", "classification")[1], "--text", "hi")
    assert proc.returncode == 2 and "--task embed" in proc.stderr
    proc = run_cli_here("classify", folder, "--text", "hi", "--device", "cuda")
    assert proc.returncode == 2


def test_int8_export_is_quantized_and_close(exports):
    checkpoint, folder = exports("roberta", "classification", "int8")
    fp32 = exports("roberta", "classification")[1]
    import onnx

    ops = {n.op_type for n in onnx.load(str(folder / ONNX_FILE)).graph.node}
    assert "MatMulInteger" in ops or "QAttention" in ops, ops
    assert (folder / ONNX_FILE).stat().st_size < 0.5 * (fp32 / ONNX_FILE).stat().st_size
    int8, ref = Classifier.load(folder), Classifier.load(checkpoint, device="cpu")
    assert "ONNX Runtime int8" in int8.summary
    got, expected = int8.predict(TEXTS), ref.predict(TEXTS)
    worst = max(abs(a - b) for g, e in zip(got, expected) for a, b in zip(g["probabilities"], e["probabilities"]))
    assert worst < 0.05, worst


def test_the_folder_is_what_sentence_transformers_and_optimum_read(exports):
    """The layout their loaders need (the real loaders run in `test_onnx_real.py` where optimum is installed):
    sentence-transformers' own lookup finds `onnx/model.onnx`; the graph's inputs and outputs carry the names
    optimum's `ORTModelForFeatureExtraction` / `ORTModelForSequenceClassification` feed and read; config.json names
    the class, with the labels."""
    import onnxruntime as ort
    from sentence_transformers.backend.utils import backend_should_export

    _, folder = exports("bert", "base")
    export, kwargs = backend_should_export(folder, True, {}, "model.onnx", "*.onnx", "ONNX")
    assert export is False and kwargs == {"subfolder": "onnx", "file_name": "model.onnx"}
    session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    assert all(i.shape == ["batch", "sequence"] for i in session.get_inputs())
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"]
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True

    _, folder = exports("roberta", "classification")
    session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["RobertaForSequenceClassification"] and config["num_labels"] == 2
    assert not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))


@needs_optimum
def test_optimum_loads_a_classifier_export(exports, tmp_path):
    """The real loader: optimum's `ORTModelForSequenceClassification` with the folder's own tokenizer."""
    _, folder = exports("roberta", "classification")
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    code = ("import json, sys, numpy as np; from optimum.onnxruntime import ORTModelForSequenceClassification; "
            "from transformers import AutoTokenizer; "
            "m = ORTModelForSequenceClassification.from_pretrained(sys.argv[1]); "
            "batch = AutoTokenizer.from_pretrained(sys.argv[1])(json.load(open(sys.argv[2])), padding=True, "
            "return_tensors='pt'); np.save(sys.argv[3], m(**batch).logits.softmax(-1).numpy())")
    proc = subprocess.run([ST_ONNX_PYTHON, "-c", code, str(folder), str(tmp_path / "texts.json"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = torch.from_numpy(np.load(tmp_path / "p.npy"))
    ours = torch.tensor([p["probabilities"] for p in Classifier.load(folder).predict(TEXTS)])
    assert (ours - theirs).abs().max() <= 1e-4


def test_a_missing_extra_names_the_install_command(tiny_checkpoint, exports, tmp_path, capsys, monkeypatch):
    _, folder = exports("roberta", "classification")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails as if not installed
    expect_usage_error(capsys, ["export", tiny_checkpoint, "--output_dir", tmp_path / "out"],
                       "pip install 'litgpt[deploy]'", untouched=tmp_path)
    expect_usage_error(capsys, ["classify", folder, "--text", "hi"], "pip install 'litgpt[deploy]'")


def test_bad_flags_fail_before_anything_is_written(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [(["--quantize", "int4"], "--quantize 'int4'"), (["--format", "tflite"], "--format 'tflite'"),
             (["--task", "summarize"], "--task 'summarize'"), (["--task", "classify"], "no head for it"),
             ([], None)]
    for extra, fragment in cases:
        if fragment is None:  # a folder that is not empty is never written into
            (out / "mine.txt").parent.mkdir(exist_ok=True)
            (out / "mine.txt").write_text("keep me")
            fragment = "not empty"
        expect_usage_error(capsys, ["export", tiny_checkpoint, "--output_dir", out, *extra], fragment,
                           untouched=tmp_path)
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
    assert snapshot(out).keys() == {"mine.txt"}


def test_an_empty_folder_is_filled_and_the_source_kept(tiny_checkpoint, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    before = snapshot(Path(tiny_checkpoint))
    proc = run_cli_here("export", tiny_checkpoint, "--output_dir", out, "--task", "embed")
    assert proc.returncode == 0, proc.stderr
    assert (out / ONNX_FILE).is_file() and (out / "modules.json").is_file()
    assert snapshot(Path(tiny_checkpoint)) == before
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temp folder left beside it


def test_serve_an_int8_export(exports):
    """`litgpt serve` on an int8 export: the same JSON as `litgpt.api` on it. Concurrent requests are batched
    together, which moves int8's per-batch activation scales: their answers stay within 0.02."""
    from concurrent.futures import ThreadPoolExecutor

    from test_serve import Server, post

    _, folder = exports("roberta", "classification", "int8")
    expected = Classifier.load(folder).predict(TEXTS)
    server = Server(folder, "--max_batch_size", "8", "--batch_timeout", "0.05")
    try:
        status, body = post(server.port, {"texts": TEXTS})
        assert status == 200 and close(body, expected, 1e-5)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda t: post(server.port, {"text": t}), TEXTS))
        assert all(s == 200 for s, _ in answers)
        assert all(close(body, [e], 0.02) for (_, body), e in zip(answers, expected))
    finally:
        out = server.stop()
    assert "ONNX Runtime int8" in out, out[-2000:]

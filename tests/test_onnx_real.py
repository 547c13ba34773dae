"""`litgpt export` of the real all-MiniLM-L6-v2: the fp32 graph equals our PyTorch encoder to 1e-4, the folder embeds
as sentence-transformers reads it, int8 keeps the embeddings' geometry (mean cosine >= 0.99 to fp32 over 600 varied
texts, and the ranking of pairwise similarities), and `--precision bf16` stays within tolerance."""

import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli_here
from test_onnx import ST_ONNX_PYTHON, needs_optimum
from test_real_checkpoint import MODEL_DIR, real_texts

from litgpt.api import Embedder
from litgpt.api.onnx_runtime import OnnxModel
from litgpt.checkpoint import build_model, load_checkpoint
from litgpt.onnx_export import ONNX_FILE

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """all-MiniLM-L6-v2 exported by the command line, fp32 and int8."""
    root = tmp_path_factory.mktemp("minilm_onnx")
    for quantize in ("none", "int8"):
        proc = run_cli_here("export", MODEL_DIR, "--output_dir", root / quantize, "--quantize", quantize)
        assert proc.returncode == 0, proc.stderr
    return {"fp32": root / "none", "int8": root / "int8"}


@pytest.fixture(scope="module")
def texts():
    texts = [t for t in real_texts() if t.strip()]
    assert len(texts) >= 500
    return texts


def test_fp32_graph_equals_our_encoder_on_ragged_batches(exported, texts):
    loaded = load_checkpoint(MODEL_DIR)
    ours = build_model(loaded.config, loaded.state_dict, loaded.source).eval()
    onnx = OnnxModel(exported["fp32"])
    tokenizer = loaded.load_tokenizer()
    worst = 0.0
    for start in range(0, 160, 16):  # ragged: lengths from 3 to 256 tokens in every batch
        ids = [torch.tensor(x) for x in tokenizer.encode_batch(texts[start * 3 : start * 3 + 16], max_length=256)]
        input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=tokenizer.pad_id)
        mask = (input_ids != tokenizer.pad_id).long()
        with torch.no_grad():
            expected = ours(input_ids, mask)
        real = mask.bool()
        worst = max(worst, (onnx(input_ids, mask)[real] - expected[real]).abs().max().item())
    assert worst <= 1e-4, worst


def st_embeddings(folder, texts):
    """sentence-transformers' recipe on the folder, where its ONNX backend cannot be installed: its tokenizer
    (transformers' AutoTokenizer on the folder), the graph run by name as optimum's ORTModelForFeatureExtraction runs
    it, then sentence-transformers' own Pooling and Normalize modules, read from the folder's files."""
    import onnxruntime as ort
    import transformers
    from sentence_transformers.models import Normalize, Pooling

    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    pooling = Pooling.load(str(folder / "1_Pooling"))
    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    hidden = session.run(["last_hidden_state"], {n: batch[n] for n in names})[0]
    features = {"token_embeddings": torch.from_numpy(hidden),
                "attention_mask": torch.from_numpy(batch["attention_mask"])}
    vectors = pooling(features)["sentence_embedding"]
    return Normalize()({"sentence_embedding": vectors})["sentence_embedding"] if "Normalize" in modules else vectors


def test_embed_on_the_export_equals_sentence_transformers_recipe(exported, texts):
    sample = texts[::40]
    args = [a for t in sample for a in ("--text", t)]
    proc = run_cli_here("embed", exported["fp32"], *args, "--json")
    assert proc.returncode == 0, proc.stderr
    ours = torch.tensor(json.loads(proc.stdout))
    assert (ours - st_embeddings(exported["fp32"], sample)).abs().max() <= 1e-4
    torch_path = Embedder.load(MODEL_DIR, device="cpu").embed(sample)
    assert (ours - torch_path).abs().max() <= 1e-4


@needs_optimum
def test_sentence_transformers_onnx_backend_loads_the_export(exported, texts, tmp_path):
    """The real loader: `SentenceTransformer(DIR, backend="onnx").encode` in the other interpreter."""
    sample = texts[::20]
    (tmp_path / "texts.json").write_text(json.dumps(sample))
    code = ("import json, sys, numpy as np; from sentence_transformers import SentenceTransformer; "
            "m = SentenceTransformer(sys.argv[1], backend='onnx', device='cpu'); "
            "np.save(sys.argv[3], m.encode(json.load(open(sys.argv[2])), batch_size=16))")
    proc = subprocess.run([ST_ONNX_PYTHON, "-c", code, str(exported["fp32"]), str(tmp_path / "texts.json"),
                           str(tmp_path / "st.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = torch.from_numpy(np.load(tmp_path / "st.npy"))
    assert (Embedder.load(exported["fp32"]).embed(sample) - theirs).abs().max() <= 1e-4


def pairwise_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation between the pairwise cosine similarities of two sets of vectors of the same texts."""
    from scipy.stats import spearmanr

    upper = torch.triu_indices(len(a), len(a), offset=1)
    sims = [(F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T)[upper[0], upper[1]] for x in (a, b)]
    return float(spearmanr(sims[0].numpy(), sims[1].numpy()).statistic)


def test_int8_keeps_the_embeddings(exported, texts, record_property):
    fp32 = Embedder.load(exported["fp32"]).embed(texts)
    int8_model = Embedder.load(exported["int8"])
    assert "ONNX Runtime int8" in int8_model.summary
    int8 = int8_model.embed(texts)
    cosine = F.cosine_similarity(int8, fp32)
    spearman = pairwise_spearman(int8, fp32)
    record_property("int8", {"texts": len(texts), "mean_cosine": cosine.mean().item(),
                             "min_cosine": cosine.min().item(), "pairwise_spearman": spearman})
    print(f"int8 vs fp32 over {len(texts)} texts: mean cosine {cosine.mean():.4f}, min {cosine.min():.4f}, "
          f"Spearman of pairwise similarities {spearman:.4f}")
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.9, (cosine.mean(), cosine.min())
    assert spearman >= 0.97, spearman
    assert (exported["int8"] / ONNX_FILE).stat().st_size < 0.4 * (exported["fp32"] / ONNX_FILE).stat().st_size


def test_bf16_autocast_stays_within_tolerance(texts):
    sample = texts[:200]
    fp32 = Embedder.load(MODEL_DIR, device="cpu").embed(sample)
    bf16_model = Embedder.load(MODEL_DIR, device="cpu", precision="bf16")
    assert bf16_model.summary.endswith("(PyTorch bf16 autocast)")
    cosine = F.cosine_similarity(bf16_model.embed(sample), fp32)
    assert cosine.min() >= 0.999, cosine.min()

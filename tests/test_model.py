import json

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_usage_error, ragged_batch, run_cli_here, tiny_hf_config

from litgpt import Config, model_roberta
from litgpt.checkpoint import build_model, load_hf_checkpoint
from litgpt.convert import config_from_hf, hf_to_lit_state_dict
from litgpt.export import save_hf_dir
from litgpt.model_roberta import (
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
)
from litgpt.utils import UsageError

transformers = pytest.importorskip("transformers")


def to_lit(hf_model):
    config = config_from_hf(hf_model.config.to_dict())
    return config, hf_to_lit_state_dict(hf_model.state_dict(), config)


def real_positions(mask):
    return mask.bool()


def test_config_registry():
    c = Config.from_name("roberta-base")
    assert (c.n_layer, c.n_embd, c.n_head, c.intermediate_size) == (12, 768, 12, 3072)
    assert (c.vocab_size, c.block_size, c.max_position_embeddings) == (50265, 512, 514)
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id, c.mask_token_id) == (1, 0, 2, 50264)
    assert c.norm_eps == 1e-5 and c.hidden_dropout == 0.1 and c.attention_dropout == 0.1 and c.hidden_act == "gelu"
    assert Config.from_name("roberta-large").n_layer == 24
    assert Config.from_name("distilroberta-base").n_layer == 6
    with pytest.raises(ValueError, match="Known names: .*roberta-base"):
        Config.from_name("gpt-17")


def test_config_file_roundtrip(tmp_path):
    c = Config.from_name("roberta-tiny", num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    c.save(tmp_path / "model_config.yaml")
    assert Config.from_file(tmp_path / "model_config.yaml") == c
    assert Config.from_checkpoint(tmp_path) == c


def test_roberta_base_instantiates():
    with torch.device("meta"):
        model = RobertaForMaskedLM(Config.from_name("roberta-base"))
    n = sum(p.numel() for p in model.parameters())
    assert 124_000_000 < n < 125_000_000  # roberta-base: 124.6M with the tied decoder


@pytest.mark.parametrize("causal", [False, True])
def test_lm_logits_and_loss_match_hf(causal):
    torch.manual_seed(0)
    hf_cls = transformers.RobertaForCausalLM if causal else transformers.RobertaForMaskedLM
    hf = hf_cls(tiny_hf_config(is_decoder=causal)).eval()
    config, state = to_lit(hf)
    ours = (RobertaForCausalLM if causal else RobertaForMaskedLM)(config).eval()
    ours.load_state_dict(state)
    ids, mask = ragged_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        actual = ours(ids, mask)
    assert actual.shape == expected.shape
    real = real_positions(mask)
    assert (actual[real] - expected[real]).abs().max() < 1e-5
    # pad positions too: the full-logits path computes them exactly like HF
    assert (actual - expected).abs().max() < 1e-5

    labels = ids.clone()
    labels[mask == 0] = -100
    if not causal:
        g = torch.Generator().manual_seed(1)
        labels[torch.rand(ids.shape, generator=g) > 0.3] = -100
    with torch.no_grad():
        hf_loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        our_loss = ours(ids, mask, labels=labels)
    assert abs(hf_loss.item() - our_loss.item()) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_training_gradients_match_hf(causal):
    """Every parameter's gradient equals HF's, the tied word embeddings (built by `TiedEmbedding`) and their
    pad row included: the pad row only gets the decoder's part, as with `nn.Embedding(padding_idx=...)`."""
    torch.manual_seed(0)
    hf_cls = transformers.RobertaForCausalLM if causal else transformers.RobertaForMaskedLM
    hf = hf_cls(tiny_hf_config(is_decoder=causal, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    config, state = to_lit(hf)
    ours = (RobertaForCausalLM if causal else RobertaForMaskedLM)(config)
    ours.load_state_dict(state)
    ids, mask = ragged_batch()
    labels = ids.masked_fill(mask == 0, -100)
    if not causal:
        labels[torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) > 0.3] = -100
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    ours(ids, mask, labels=labels).backward()
    # the full-logits path, with a loss that also reads the pad positions (their hidden states get gradients)
    weights = torch.randn(*ids.shape, config.padded_vocab_size, generator=torch.Generator().manual_seed(2))
    (hf(input_ids=ids, attention_mask=mask).logits * weights).mean().backward()
    (ours(ids, mask) * weights).mean().backward()
    expected = hf_to_lit_state_dict({k: p.grad for k, p in hf.named_parameters()}, config)
    actual = {k: p.grad for k, p in ours.named_parameters()}
    assert set(actual) == set(expected)
    for name, grad in actual.items():
        assert (grad - expected[name]).abs().max() < 1e-5, name
    wte = actual["roberta.wte.weight"]
    assert wte[config.pad_token_id].abs().max() > 0  # the decoder's part reaches the pad row
    unused = torch.ones(config.padded_vocab_size, dtype=torch.bool)
    unused[ids.unique()] = False
    # rows never looked up get the decoder's gradient only (the decoder's part is dense)
    assert unused.any() and wte[unused].abs().max() > 0


def test_tied_embedding_without_the_decoder():
    """When the tied weight handed out is not used, the lookup's gradient alone reaches the embeddings."""
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    model = RobertaModel(config)
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    hidden, _ = model.hidden_and_decoder(ids, mask)
    hidden.sum().backward()
    tied = model.wte.weight.grad.clone()
    model.zero_grad()
    model(ids, mask).sum().backward()
    assert torch.equal(tied, model.wte.weight.grad)


@pytest.mark.parametrize("gelu", [False, True])
def test_linear_matches_plain_linear(gelu, monkeypatch):
    """`linear` (oneDNN on CPU: one fused call at inference, `OneDNNLinear` with autograd) gives F.linear's
    outputs and gradients. The oneDNN path runs here whatever the CPU, which decides only where it is faster."""
    import litgpt.kernels
    from litgpt.model_roberta import linear

    if not litgpt.kernels._ONEDNN_KERNEL:
        pytest.skip("this torch has no oneDNN linear kernel")
    monkeypatch.setattr(litgpt.kernels, "_ONEDNN_LINEAR", True)
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 96)
    x = torch.randn(3, 48, 5).transpose(1, 2)  # [3, 5, 48], not contiguous, like SDPA's output
    upstream = torch.randn(3, 5, 96)

    def run(fn):
        layer.zero_grad()
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        (y * upstream).sum().backward()
        return y.detach(), xg.grad, layer.weight.grad.clone(), layer.bias.grad.clone()

    reference = run(lambda t: (F.gelu if gelu else (lambda y: y))(F.linear(t, layer.weight, layer.bias)))
    ours = run(lambda t: linear(t, layer.weight, layer.bias, gelu=gelu))
    for a, b in zip(ours, reference):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5
    with torch.inference_mode():
        fast = linear(x, layer.weight, layer.bias, gelu=gelu)
    assert (fast - reference[0]).abs().max() < 1e-5


def test_mlm_loss_path_never_builds_full_logits(monkeypatch):
    config = Config.from_name("roberta-tiny")
    model = RobertaForMaskedLM(config).eval()
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[2, 1] = ids[0, 2], ids[2, 1]
    shapes = []
    original = model_roberta.linear

    def spy(x, w, b=None, **kwargs):
        if w.shape[0] == config.padded_vocab_size:
            shapes.append(tuple(x.shape))
        return original(x, w, b, **kwargs)

    monkeypatch.setattr(model_roberta, "linear", spy)
    loss, correct, count = model.mlm_loss(ids, mask, labels)
    assert shapes == [(2, config.n_embd)]
    assert count.item() == 2 and 0 <= correct.item() <= 2
    full = model(ids, mask)
    ref = F.cross_entropy(full[labels != -100], ids[labels != -100])
    assert abs(loss.item() - ref.item()) < 1e-5


def test_sequence_classification_matches_hf():
    torch.manual_seed(0)
    hf = transformers.RobertaForSequenceClassification(tiny_hf_config(num_labels=3)).eval()
    config, state = to_lit(hf)
    ours = RobertaForSequenceClassification(config, 3).eval()
    ours.load_state_dict(state)
    ids, mask = ragged_batch()
    with torch.no_grad():
        assert (ours(ids, mask) - hf(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5


def test_unpadded_training_path_matches_padded_path():
    torch.manual_seed(0)
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    model = RobertaModel(config)
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    padded = model(ids, mask)
    real = mask.bool()
    unpadded = model.hidden_at(ids, mask, real)
    assert unpadded.shape == (int(real.sum()), config.n_embd)
    assert (padded[real] - unpadded).abs().max() < 1e-6
    # selected pad positions are computed too (as queries only), exactly as the padded path computes them
    everywhere = model.hidden_at(ids, mask, torch.ones_like(real))
    assert (padded.reshape(-1, config.n_embd) - everywhere).abs().max() < 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_hidden_at_equals_forward_at_the_positions(causal):
    """`hidden_at` (unpadded, the last block only at `positions` unless causal) reads like `forward(...)[positions]`,
    for positions on real tokens and on pads, with and without padding in the batch."""
    torch.manual_seed(0)
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0, causal=causal)
    model = RobertaModel(config)
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    positions = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.4
    for m in (mask, None, torch.ones_like(mask)):
        expected = model(ids, m)[positions]
        actual = model.hidden_at(ids, m, positions)
        assert actual.shape == expected.shape and (actual - expected).abs().max() < 1e-5
    assert model.hidden_at(ids, mask, torch.zeros_like(positions)).shape == (0, config.n_embd)


def test_dropout_train_vs_eval():
    config = Config.from_name("roberta-tiny")
    model = RobertaForMaskedLM(config)
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    model.train()
    a, b = model(ids, mask), model(ids, mask)
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(ids, mask), model(ids, mask))


def test_init_matches_hf_statistics():
    torch.manual_seed(0)
    model = RobertaForMaskedLM(Config.from_name("roberta-mini"))
    assert model.roberta.wte.weight[1].abs().sum() == 0  # pad row
    assert model.roberta.wpe.weight[1].abs().sum() == 0
    assert abs(model.roberta.h[0].mlp.fc.weight.std().item() - 0.02) < 2e-3
    assert model.lm_head.bias.abs().sum() == 0
    assert model.roberta.h[0].norm_1.weight.eq(1).all()


@pytest.mark.parametrize("hf_cls", ["RobertaForMaskedLM", "RobertaForSequenceClassification"])
def test_roberta_base_width_parity_through_cli(tmp_path, hf_cls):
    """roberta-base dimensions (2 of its 12 layers keep it fast), saved by HF and converted by the CLI."""
    torch.manual_seed(0)
    hf = getattr(transformers, hf_cls)(
        tiny_hf_config(
            vocab_size=50265, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
            num_hidden_layers=2, max_position_embeddings=514, num_labels=2,
        )
    ).eval()
    hf.save_pretrained(tmp_path)
    proc = run_cli_here("convert_to_litgpt", tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = Config.from_file(tmp_path / "model_config.yaml")
    ours = build_model(config, torch.load(tmp_path / "lit_model.pth", weights_only=True), "test").eval()
    ids, mask = ragged_batch(vocab_size=50265, lengths=(40, 25, 9))
    with torch.no_grad():
        diff = (ours(ids, mask) - hf(input_ids=ids, attention_mask=mask).logits).abs().max().item()
    assert diff < 1e-4


@pytest.mark.parametrize(
    "hf_cls,kwargs",
    [
        ("RobertaForMaskedLM", {}),
        ("RobertaForSequenceClassification",
         {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}),
        ("RobertaForCausalLM", {"is_decoder": True}),
        ("RobertaModel", {}),
    ],
)
def test_hf_roundtrip_through_cli(tmp_path, hf_cls, kwargs):
    torch.manual_seed(0)
    hf = getattr(transformers, hf_cls)(tiny_hf_config(**kwargs)).eval()
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    proc = run_cli_here("convert_to_litgpt", hf_dir)
    assert proc.returncode == 0, proc.stderr
    assert (hf_dir / "lit_model.pth").is_file() and (hf_dir / "model_config.yaml").is_file()

    config = Config.from_file(hf_dir / "model_config.yaml")
    state = torch.load(hf_dir / "lit_model.pth", weights_only=True)
    ours = build_model(config, state, "test").eval()
    ids, mask = ragged_batch()
    with torch.no_grad():
        out = ours(ids, mask)
        ref = hf(input_ids=ids, attention_mask=mask)
    expected = ref.last_hidden_state if hf_cls == "RobertaModel" else ref.logits
    assert (out - expected).abs().max() < 1e-5

    back = tmp_path / "back"
    proc = run_cli_here("convert_from_litgpt", hf_dir, back)
    assert proc.returncode == 0, proc.stderr
    assert (back / "model.safetensors").is_file()
    reloaded = getattr(transformers, hf_cls).from_pretrained(back).eval()
    original = hf.state_dict()
    roundtrip = reloaded.state_dict()
    if hf_cls == "RobertaModel":  # our base model carries no pooler; HF re-initialises it
        original = {k: v for k, v in original.items() if not k.startswith("pooler.")}
        roundtrip = {k: v for k, v in roundtrip.items() if not k.startswith("pooler.")}
    assert original.keys() == roundtrip.keys()
    for key in original:
        assert torch.equal(original[key], roundtrip[key]), key
    if hf_cls == "RobertaForSequenceClassification":
        assert reloaded.config.id2label == {0: "neg", 1: "pos"}


def test_legacy_position_ids_and_pytorch_bin(tmp_path):
    torch.manual_seed(0)
    hf = transformers.RobertaForMaskedLM(tiny_hf_config())
    state = dict(hf.state_dict())
    state["roberta.embeddings.position_ids"] = torch.arange(66)[None]
    tmp_path.mkdir(exist_ok=True)
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.save_pretrained(tmp_path)
    config, lit = load_hf_checkpoint(tmp_path)
    assert "roberta.h.0.attn.qkv.weight" in lit and config.block_size == 64


def test_from_litgpt_pytorch_bin(tmp_path):
    config = Config.from_name("roberta-tiny")
    model = RobertaForSequenceClassification(config, 4)
    save_hf_dir(model.state_dict(), model.config, tmp_path, safetensors=False, pytorch_bin=True)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    model.eval()
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    with torch.no_grad():
        assert (hf(input_ids=ids, attention_mask=mask).logits - model(ids, mask)).abs().max() < 1e-5


def test_bad_checkpoints(tmp_path):
    # neither RoBERTa nor BERT
    bert = tmp_path / "distilbert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "distilbert", "architectures": ["DistilBertModel"]}))
    with pytest.raises(UsageError, match="expected a RoBERTa or BERT checkpoint"):
        load_hf_checkpoint(bert)
    # a BERT config without its sizes
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(UsageError, match="no integer vocab_size"):
        load_hf_checkpoint(partial)
    # missing weights
    empty = tmp_path / "noweights"
    tiny_hf_config().save_pretrained(empty)
    with pytest.raises(UsageError, match="no weights found"):
        load_hf_checkpoint(empty)
    # shapes that do not fit the config
    hf = transformers.RobertaForMaskedLM(tiny_hf_config())
    bad = tmp_path / "bad"
    hf.save_pretrained(bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hidden_size"] = 64
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="shape"):
        load_hf_checkpoint(bad)
    # the CLI turns each into one line and exit code 2
    proc = run_cli_here("convert_to_litgpt", bert)
    assert_usage_error(proc.returncode, proc.stderr)
    assert not (bert / "lit_model.pth").exists()


def test_bf16_autocast_loss_and_classification_paths():
    """The selected-positions path mixes a bf16 projection into a zero-filled buffer: dtypes must follow autocast."""
    torch.manual_seed(0)
    config = Config.from_name("roberta-tiny")
    ids, mask = ragged_batch(vocab_size=config.vocab_size)
    labels = ids.masked_fill((torch.rand(ids.shape) > 0.5) | (mask == 0), -100)
    mlm, clf = RobertaForMaskedLM(config), RobertaForSequenceClassification(config, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mlm(ids, mask, labels=labels)
        logits = clf(ids, mask)
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (4, 2)

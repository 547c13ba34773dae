"""The BERT family on the same model file: parity with `transformers`' BERT classes on random weights, the
conversion both ways, and the registry entries. The real all-MiniLM-L6-v2 checkpoint is in test_real_checkpoint.py."""

import json

import pytest
import torch
from conftest import run_cli_here

from litgpt import Config
from litgpt.checkpoint import build_model, load_hf_checkpoint
from litgpt.convert import config_from_hf, hf_to_lit_state_dict
from litgpt.model_roberta import RobertaForMaskedLM, RobertaForSequenceClassification, RobertaModel

transformers = pytest.importorskip("transformers")


def tiny_bert_config(**kwargs):
    """A 2-layer, 32-wide HuggingFace BERT config (120 tokens, 64 positions, two token types)."""
    defaults = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    return transformers.BertConfig(**{**defaults, **kwargs})


def bert_batch(lengths=(12, 7, 3, 10), seed=0):
    """Right-padded `[CLS] A [SEP] B [SEP]` ids ([PAD]=0), the attention mask and token types (B is type 1)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 120, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 2, 3
        mask[i, :n] = 1
        types[i, n // 2 : n] = 1
    return ids, mask, types


def to_lit(hf_model):
    config = config_from_hf(hf_model.config.to_dict())
    model = build_model(config, hf_to_lit_state_dict(hf_model.state_dict(), config), "test").eval()
    return config, model


def test_registry_and_sizes():
    c = Config.from_name("bert-base-uncased")
    assert (c.model_type, c.pad_aware_positions, c.pooler, c.type_vocab_size, c.norm_eps) == ("bert", False, True, 2,
                                                                                              1e-12)
    assert (c.vocab_size, c.max_position_embeddings, c.pad_token_id, c.mask_token_id) == (30522, 512, 0, 103)
    with torch.device("meta"):
        base = RobertaModel(c)
    assert sum(p.numel() for p in base.parameters()) == 109_482_240  # HF's BertModel, pooler included
    mini = Config.from_name("all-MiniLM-L6-v2")
    assert (mini.n_layer, mini.n_embd, mini.n_head, mini.intermediate_size) == (6, 384, 12, 1536)
    assert Config.from_name("all-MiniLM-L12-v2").n_layer == 12 and Config.from_name("bert-large-uncased").n_layer == 24
    with pytest.raises(ValueError, match="Known names: .*all-MiniLM-L6-v2.*bert-base-uncased.*roberta-base"):
        Config.from_name("bert-base-cased-typo")


def test_base_model_matches_hf_with_token_types():
    torch.manual_seed(0)
    hf = transformers.BertModel(tiny_bert_config()).eval()
    config, ours = to_lit(hf)
    assert ours.pooler is not None and not config.pad_aware_positions
    ids, mask, types = bert_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden = ours(ids, mask, types)
        # hidden_at computes only the selected rows, pads skipped: the same numbers
        at = ours.hidden_at(ids, mask, mask.bool(), types)
    assert (hidden - expected.last_hidden_state).abs().max() < 1e-5  # pads included
    assert (at - expected.last_hidden_state[mask.bool()]).abs().max() < 1e-5
    assert (torch.tanh(ours.pooler(hidden[:, 0])) - expected.pooler_output).abs().max() < 1e-5
    # without token types both default to type 0
    with torch.no_grad():
        assert (ours(ids, mask) - hf(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max() < 1e-5


def test_masked_lm_logits_loss_and_gradients_match_hf():
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    config, ours = to_lit(hf)
    assert isinstance(ours, RobertaForMaskedLM) and ours.roberta.pooler is None
    ids, mask, _ = bert_batch()
    labels = ids.masked_fill(mask == 0, -100)
    labels[torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) > 0.3] = -100
    with torch.no_grad():
        assert (ours.eval()(ids, mask) - hf.eval()(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5
    hf_loss = hf.train()(input_ids=ids, attention_mask=mask, labels=labels).loss
    our_loss = ours.train()(ids, mask, labels=labels)
    assert abs(hf_loss.item() - our_loss.item()) < 1e-5
    hf_loss.backward()
    our_loss.backward()
    expected = hf_to_lit_state_dict({k: p.grad for k, p in hf.named_parameters()}, config)
    actual = {k: p.grad for k, p in ours.named_parameters()}
    assert set(actual) == set(expected)
    for name, grad in actual.items():
        assert (grad - expected[name]).abs().max() < 1e-5, name
    # BERT's position 0 is a real position ([PAD]=0 is no position id): it gets its gradient
    assert actual["roberta.wpe.weight"][0].abs().max() > 0


def test_sequence_classification_matches_hf():
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(tiny_bert_config(num_labels=3, hidden_dropout_prob=0.0,
                                                                     attention_probs_dropout_prob=0.0))
    config, ours = to_lit(hf)
    assert isinstance(ours, RobertaForSequenceClassification) and ours.classifier.dense is None
    ids, mask, types = bert_batch()
    target = torch.tensor([0, 2, 1, 2])
    hf_logits = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    our_logits = ours(ids, mask, types)
    assert (our_logits - hf_logits).abs().max() < 1e-5
    torch.nn.functional.cross_entropy(hf_logits, target).backward()
    torch.nn.functional.cross_entropy(our_logits, target).backward()
    expected = hf_to_lit_state_dict({k: p.grad for k, p in hf.named_parameters()}, config)
    for name, p in ours.named_parameters():
        assert (p.grad - expected[name]).abs().max() < 1e-5, name


@pytest.mark.parametrize("hf_cls", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification"])
def test_roundtrip_through_cli_is_identical(tmp_path, hf_cls):
    torch.manual_seed(0)
    kwargs = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}} if "Classification" in hf_cls else {}
    hf = getattr(transformers, hf_cls)(tiny_bert_config(**kwargs)).eval()
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    proc = run_cli_here("convert_to_litgpt", hf_dir)
    assert proc.returncode == 0, proc.stderr
    config = Config.from_file(hf_dir / "model_config.yaml")
    assert config.model_type == "bert"
    back = tmp_path / "back"
    proc = run_cli_here("convert_from_litgpt", hf_dir, back)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((back / "config.json").read_text())["architectures"] == [hf_cls]
    reloaded = getattr(transformers, hf_cls).from_pretrained(back).eval()
    original, roundtrip = hf.state_dict(), reloaded.state_dict()
    assert original.keys() == roundtrip.keys()
    for key in original:
        assert torch.equal(original[key], roundtrip[key]), key
    # the file holds exactly what HF wrote, less the tied decoder copy
    from safetensors import safe_open

    with safe_open(hf_dir / "model.safetensors", "pt") as a, safe_open(back / "model.safetensors", "pt") as b:
        assert {k for k in a.keys() if "decoder" not in k} == set(b.keys())


def test_legacy_names_and_pretraining_heads(tmp_path):
    """Early BERT checkpoints name LayerNorm weights gamma/beta, and `BertForPreTraining` ones (bert-base-uncased)
    carry a pooler and the next-sentence head: the MLM model keeps neither, as HF's BertForMaskedLM."""
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(tiny_bert_config())
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    config_json = hf.config.to_dict()
    config_json["architectures"] = ["BertForMaskedLM"]
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    config, lit = load_hf_checkpoint(tmp_path)
    assert "roberta.ln_emb.weight" in lit and not any(k.startswith("roberta.pooler.") for k in lit)
    mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ours = build_model(config, lit, "test").eval()
    ids, mask, _ = bert_batch()
    with torch.no_grad():
        assert (ours(ids, mask) - mlm(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5

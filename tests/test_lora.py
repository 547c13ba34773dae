"""LoRA: the adapters on the encoder's linear layers (`kernels.LoRALinear`), folding them into plain weights, and
`litgpt finetune --lora_r` end to end: only adapters and head train, the small adapter output loads on its base,
`--merge` writes a plain HuggingFace classifier with the same logits."""

import json

import pytest
import torch
from conftest import ragged_batch, run_cli, toy_records, write_files

from litgpt import Config
from litgpt.api import Classifier
from litgpt.kernels import LoRALinear, add_lora, fold_lora
from litgpt.model_roberta import LORA_TARGETS, RobertaForSequenceClassification

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("model_name", ["roberta-tiny", "bert-tiny"])
def test_folded_adapters_give_the_same_logits(model_name):
    torch.manual_seed(0)
    config = Config.from_name(model_name, hidden_dropout=0.0, attention_dropout=0.0)
    model = RobertaForSequenceClassification(config, 3).eval()
    original = RobertaForSequenceClassification(config, 3).eval()
    original.load_state_dict(model.state_dict())
    layers = add_lora(model.roberta, LORA_TARGETS.values(), r=4, alpha=8.0, dropout=0.1)
    assert layers == 4 * config.n_layer
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    assert not any(p.requires_grad for n, p in model.roberta.named_parameters() if ".lora_" not in n)
    ids, mask = ragged_batch(vocab_size=config.vocab_size, pad_id=config.pad_token_id)
    with torch.no_grad():
        before = original(ids, mask)
        assert torch.equal(model(ids, mask), before)  # B starts at zero: a fresh adapter changes nothing
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(std=0.5)
        adapted = model(ids, mask)
    assert (adapted - before).abs().max() > 1e-3
    folded = fold_lora(model.state_dict(), scaling=8.0 / 4)
    plain = RobertaForSequenceClassification(config, 3).eval()
    plain.load_state_dict(folded)
    with torch.no_grad():
        assert (plain(ids, mask) - adapted).abs().max() < 1e-5
    # and gradients reach only the adapters (and what the caller unfreezes)
    model.train()
    model(ids, mask).sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_lora_finetune_end_to_end(tiny_checkpoint, tmp_path):
    data = write_files(tmp_path / "toy", {"train.json": toy_records("train")[:96], "test.json": toy_records("test"),
                                          "labels.txt": "negative\npositive\n"})
    common = ["finetune", "--data_dir", data, "--model_name", tiny_checkpoint, "--num_epochs", "2", "--batch_size",
              "16", "--max_length", "64", "--learning_rate", "3e-3", "--lora_r", "4", "--lora_targets", "qkv,fc"]
    adapters, merged = tmp_path / "adapters", tmp_path / "merged"
    proc = run_cli(*common, "--output_dir", adapters)
    assert proc.returncode == 0, proc.stderr
    assert "LoRA r=4 on 4 layers (qkv,fc)" in proc.stdout
    assert (adapters / "lora.pt").is_file() and not (adapters / "pytorch_model.bin").exists()
    saved = torch.load(adapters / "lora.pt", weights_only=True)
    assert set(saved) == {k for k in saved if ".lora_" in k or k.startswith("classifier.")}
    spec = json.loads((adapters / "adapter_config.json").read_text())
    assert spec["lora_r"] == 4 and spec["lora_targets"] == ["qkv", "fc"]
    proc = run_cli(*common, "--output_dir", merged, "--merge")
    assert proc.returncode == 0, proc.stderr
    assert (merged / "pytorch_model.bin").stat().st_size > 5 * (merged / "lora.pt").stat().st_size

    # the adapter output on its base == the merged plain classifier == HF loading the merged one
    texts = [r["text"] for r in toy_records("test")[:6]]
    on_base = torch.tensor([p["probabilities"] for p in Classifier.load(adapters, device="cpu").predict(texts)])
    plain = torch.tensor([p["probabilities"] for p in Classifier.load(merged, device="cpu").predict(texts)])
    assert (on_base - plain).abs().max() < 1e-5
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(merged).eval()
    batch = transformers.AutoTokenizer.from_pretrained(merged)(texts, padding=True, truncation=True, max_length=64,
                                                               return_tensors="pt")
    with torch.no_grad():
        assert (hf(**batch).logits.softmax(-1) - plain).abs().max() < 1e-5
    proc = run_cli("classify", adapters, "--text", texts[0], "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["label"] in ("negative", "positive"), proc.stderr


@pytest.mark.parametrize("flags, fragment", [
    (["--lora_r", "4", "--lora_targets", "qkv,ffn"], "--lora_targets 'qkv,ffn'"),
    (["--merge"], "--merge folds LoRA adapters"),
    (["--lora_r", "4", "--from_scratch"], "does not go with --from_scratch"),
    (["--lora_r", "-1"], "--lora_r -1"),
])
def test_bad_lora_flags(tiny_checkpoint, tmp_path, flags, fragment):
    proc = run_cli("finetune", "--data_dir", tmp_path, "--output_dir", tmp_path / "out", "--model_name",
                   tiny_checkpoint, *flags)
    assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr

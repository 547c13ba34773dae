"""Training from BERT-family weights: MLM pretraining from a HuggingFace BERT dir, finetuning a classifier from it
(and from the MLM result, which has no pooler), from-scratch BERT configs with a WordPiece tokenizer, and the
outputs HuggingFace loads back as `BertForMaskedLM` / `BertForSequenceClassification` with the same logits."""

import json

import pytest
import torch
from conftest import demo_lines, pretrain_args, run_cli, toy_records, write_files

from litgpt import Config
from litgpt.api import Classifier, MaskedLM
from litgpt.train_tokenizer import train_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A random 2-layer HF BertModel with a WordPiece tokenizer trained on the toy reviews and the demo text."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    texts = [r["text"] for r in toy_records("train")] + demo_lines()
    tokenizer = train_tokenizer(texts, vocab_size=600, out_dir=folder, kind="wordpiece", min_frequency=1)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                     pad_token_id=tokenizer.pad_id)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def hf_logits(folder, texts, cls):
    model = getattr(transformers, cls).from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits, batch


def test_pretrain_then_finetune_from_a_bert_dir(bert_dir, tmp_path):
    # MLM pretraining from the BERT dir: its architecture, its tokenizer, a fresh MLM head
    out = tmp_path / "pretrain"
    args = ["pretrain", "--initial_checkpoint_dir", bert_dir, "--data_dir", tmp_path / "data", "--out_dir", out,
            "--train.max_steps", "4", "--train.micro_batch_size", "4", "--train.global_batch_size", "4",
            "--train.max_seq_length", "32", "--train.lr_warmup_steps", "1", "--eval.interval", "4"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    config = Config.from_file(out / "final" / "model_config.yaml")
    assert (config.model_type, config.n_embd, config.type_vocab_size) == ("bert", 32, 2)
    hf_out = tmp_path / "mlm_hf"
    assert run_cli("convert_from_litgpt", out / "final", hf_out).returncode == 0
    assert json.loads((hf_out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    texts = ["the movie was [MASK] .", "a great film"]
    expected, batch = hf_logits(hf_out, texts, "BertForMaskedLM")
    mlm = MaskedLM.load(out / "final", device="cpu")
    with torch.no_grad():
        actual = mlm.model(batch["input_ids"], batch["attention_mask"])
    assert (actual - expected).abs().max() < 1e-5
    assert mlm.fill_mask("the movie was [MASK] .", top_k=3)[0][0]["token_id"] >= 0

    # finetuning from the BERT dir (its pooler) and from the MLM result (no pooler: a fresh one)
    data = write_files(tmp_path / "toy", {"train.json": toy_records("train")[:64],
                                          "test.json": toy_records("test")[:16]})
    for source in (bert_dir, out / "final"):
        output = tmp_path / f"finetuned-{source.name}"
        proc = run_cli("finetune", "--data_dir", data, "--output_dir", output, "--model_name", source,
                       "--num_labels", "2", "--num_epochs", "1", "--batch_size", "16", "--max_length", "64")
        assert proc.returncode == 0, proc.stderr
        hf_config = json.loads((output / "config.json").read_text())
        assert hf_config["architectures"] == ["BertForSequenceClassification"] and hf_config["model_type"] == "bert"
        texts = [r["text"] for r in toy_records("test")[:5]]
        expected, _ = hf_logits(output, texts, "BertForSequenceClassification")
        ours = torch.tensor([p["probabilities"] for p in Classifier.load(output, device="cpu").predict(texts)])
        assert (ours - expected.softmax(-1)).abs().max() < 1e-5


def test_pretrain_a_bert_config_from_scratch(tmp_path):
    """A BERT registry config with no tokenizer trains a WordPiece one ([CLS] ... [SEP]) on the training text."""
    data = write_files(tmp_path / "data", {"test.txt": "\n".join(demo_lines())})
    out = tmp_path / "out"
    proc = run_cli(*pretrain_args(data, out, "--train.max_steps", "2", "--train.max_seq_length", "32",
                                  base=("--model_name", "bert-tiny", "--train.global_batch_size", "4",
                                        "--train.micro_batch_size", "4")))
    assert proc.returncode == 0, proc.stderr
    assert "training a wordpiece tokenizer" in proc.stdout + proc.stderr
    assert (out / "final" / "vocab.txt").is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "final")
    assert tokenizer.convert_ids_to_tokens(tokenizer("hello")["input_ids"])[0] == "[CLS]"

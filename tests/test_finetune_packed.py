"""Finetuning on the GPU path, checked on the CPU: every head (sequence, token, span) runs packed, the encoder on the
real tokens alone, and agrees with the padded model within 1e-5 in fp32 (outputs, loss and every gradient), for
RoBERTa and BERT; every head's forward (and the sentence embedder's) compiles with dynamic shapes and no graph
break, in training and evaluation; `litgpt finetune --compile` trains what the eager run trains."""

import json

import pytest
import torch
from conftest import ROOT, ragged_batch

from litgpt import Config
from litgpt.losses import classification_loss, span_loss, token_loss
from litgpt.model_roberta import (
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)
from litgpt.packing import first_tokens, pack_tokens

HEADS = ("sequence", "token", "span")


def head_batch(head: str, config: Config, lengths=(12, 7, 3, 10), seed=0):
    """A ragged batch for `head` with its labels and the packing its collator builds."""
    ids, mask = ragged_batch(config.vocab_size, lengths, pad_id=config.pad_token_id, seed=seed)
    g = torch.Generator().manual_seed(seed)
    batch = {"input_ids": ids, "attention_mask": mask}
    if config.model_type == "bert":  # a pair: the second half of each sequence is sentence B
        batch["token_type_ids"] = (torch.arange(ids.size(1)) >= torch.tensor(lengths)[:, None] // 2).long() * mask
    if head == "sequence":
        batch["labels"] = torch.randint(0, 3, (len(lengths),), generator=g)
        batch["packing"] = pack_tokens(mask, first_tokens(ids))
    elif head == "token":  # labelled first sub-tokens: some real tokens, never <s>, </s> or a pad
        labels = torch.randint(0, 3, ids.shape, generator=g)
        keep = (torch.rand(ids.shape, generator=g) < 0.6) & mask.bool()
        keep[:, 0] = False
        keep[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = False
        batch["labels"] = labels.masked_fill(~keep, -100)
        batch["packing"] = pack_tokens(mask, batch["labels"].ne(-100))
    elif head == "embed":  # a sentence embedding's mean pooling reads every real token
        batch["packing"] = pack_tokens(mask, mask)
    else:
        batch["start_positions"] = torch.tensor([min(2, n - 1) for n in lengths])
        batch["end_positions"] = torch.tensor([n - 2 for n in lengths])
        batch["packing"] = pack_tokens(mask, mask)
    return batch


def make_model(head: str, config: Config) -> torch.nn.Module:
    if head == "sequence":
        return RobertaForSequenceClassification(config, 3)
    if head == "token":
        return RobertaForTokenClassification(config, 3)
    if head == "embed":
        from litgpt.embedding import SentenceEmbedder

        return SentenceEmbedder(config, "mean", normalize=True)
    return RobertaForQuestionAnswering(config)


def outputs_and_loss(head: str, model, batch, packed: bool):
    """(the head's outputs at the positions it scores, the training loss)."""
    packing = batch["packing"] if packed else None
    out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), packing)
    if head == "sequence":
        return out, classification_loss(out, batch["labels"], None)
    if head == "token":
        labelled = batch["labels"].ne(-100)
        scored = out if packed else out[labelled]
        return scored, token_loss(scored, batch["labels"][labelled])
    start, end = out
    real = batch["attention_mask"].bool()
    loss = span_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
    return torch.stack([start[real], end[real]]), loss


@pytest.mark.parametrize("family", ["roberta-tiny", "bert-tiny"])
@pytest.mark.parametrize("head", HEADS)
def test_packed_head_equals_padded(family, head):
    config = Config.from_name(family, hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0)
    torch.manual_seed(0)
    model = make_model(head, config).train()
    batch = head_batch(head, config)
    grads = []
    results = []
    for packed in (False, True):
        model.zero_grad()
        out, loss = outputs_and_loss(head, model, batch, packed)
        loss.backward()
        results.append((out.detach(), loss.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (out_padded, loss_padded), (out_packed, loss_packed) = results
    assert (out_padded - out_packed).abs().max() <= 1e-5
    assert abs(loss_padded.item() - loss_packed.item()) <= 1e-5
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert (grads[0][name] - grads[1][name]).abs().max() <= 1e-5, name
    if head == "span":  # a pad is never part of an answer: -inf there on the packed path
        start, _ = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"])
        assert torch.isneginf(start[~batch["attention_mask"].bool()]).all()


@pytest.mark.parametrize("head", (*HEADS, "embed"))
def test_every_head_compiles_without_graph_breaks(head):
    """What `--compile` compiles: the model's forward with the collator's packing. `explain` finds one graph and no
    break, in training and in evaluation, and batches of other shapes reuse the training graph (dynamic shapes) with
    the eager outputs. (Dynamo's graphs run eagerly here: the backward's tracing is test_packing.py's.)"""
    config = Config.from_name("bert-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = make_model(head, config)

    def call_args(batch):
        return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["packing"]

    for training in (True, False):
        model.train(training)
        torch._dynamo.reset()
        with torch.set_grad_enabled(training):
            explained = torch._dynamo.explain(model)(*call_args(head_batch(head, config)))
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    model.train()
    torch._dynamo.reset()
    graphs = []

    def eager_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=eager_backend, fullgraph=True, dynamic=True)
    # (sizes that happen to be equal share a symbol at first, so these avoid coincidences a recompile would undo)
    for lengths, seed in (((13, 7, 3, 10), 0), ((9, 4, 6), 1), ((21, 5, 8, 8, 11), 2)):
        batch = head_batch(head, config, lengths, seed)
        got, want = compiled(*call_args(batch)), model(*call_args(batch))
        for a, b in zip(got if head == "span" else [got], want if head == "span" else [want]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # eager fuses a few ops the graph keeps apart
    assert len(graphs) == 1, (head, len(graphs))
    torch._dynamo.reset()


def test_finetune_compile_trains_what_eager_trains(tmp_path, monkeypatch):
    """`--compile` through the whole loop, training and evaluation. Dynamo's graphs run on its eager backend here
    (inductor's C++ build would cost this test minutes; the graphs themselves are checked above), so the run must
    equal the eager one. The model has no dropout: a compiled graph draws its random numbers in another order."""
    from conftest import save_checkpoint

    from litgpt.__main__ import run_command
    from litgpt.data.ner import read_tagged
    from litgpt.finetune import setup
    from litgpt.model_roberta import RobertaForMaskedLM
    from litgpt.train_tokenizer import train_tokenizer

    ner = ROOT / "data" / "test_data_ner"
    checkpoint = tmp_path / "bert"
    words = [" ".join(s) for s in read_tagged(ner / "train.conll").sentences]
    tokenizer = train_tokenizer(words, vocab_size=400, out_dir=checkpoint, kind="wordpiece")
    config = Config.from_name("bert-tiny", hidden_dropout=0.0, attention_dropout=0.0, vocab_size=tokenizer.vocab_size,
                              pad_token_id=tokenizer.pad_id)
    torch.manual_seed(0)
    save_checkpoint(checkpoint, RobertaForMaskedLM(config), config)
    graphs = []

    def eager_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=eager_backend, **kw))
    args = ["--task", "ner", "--data_dir", str(ner), "--model_name", str(checkpoint), "--num_epochs", "2",
            "--batch_size", "32", "--learning_rate", "1e-3", "--val_fraction", "0.2"]
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        torch._dynamo.reset()
        run_command(setup, args + ["--output_dir", str(tmp_path / name), *extra], prog="t")
    assert len(graphs) >= 2  # training and evaluation
    eager, compiled = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("eager", "compiled"))
    assert compiled["loss"] == pytest.approx(eager["loss"], abs=1e-5)
    for a, b in zip(compiled["validation"]["history"], eager["validation"]["history"]):
        assert a == pytest.approx(b, abs=1e-5)
    torch._dynamo.reset()


def test_finetune_benchmark_smoke(tmp_path):
    """`benchmarks/compare_finetune.py` (gpu_check.sh's finetuning stage) runs end to end on the CPU."""
    import subprocess
    import sys

    out = tmp_path / "finetune.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_finetune.py"), "--quick", "--layers", "1", "--ragged",
           "2x24", "--heads", "token", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["head"], r["impl"]) for r in rows] == [("token", i) for i in ("hf", "ours padded", "ours packed")]
    assert all(r["examples_per_s"] > 0 for r in rows)

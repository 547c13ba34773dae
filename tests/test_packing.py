"""The packed (unpadded) path: the host-built `Packing`, HF parity through both attention calls (SDPA, and the
variable-length kernel's call, served on CPU by a reference), packed documents, a training step that compiles as
one graph for every batch shape, and the benchmark's smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import ragged_batch, tiny_hf_config

import litgpt.kernels as kernels
from litgpt.config import Config
from litgpt.convert import config_from_hf, hf_to_lit_state_dict
from litgpt.data.mlm import MLMCollator, MLMMasker
from litgpt.data.text_files import TextFiles
from litgpt.model_roberta import (
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
)
from litgpt.packing import first_tokens, pack_tokens
from litgpt.utils import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_pack_tokens_against_a_plain_loop():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    selected = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 1]]).bool()  # the last one is a pad
    starts = torch.tensor([[1, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()
    p = pack_tokens(mask, selected, starts)
    computed = [(b, t) for b in range(3) for t in range(5) if mask[b, t] or selected[b, t]]
    assert p.rows.tolist() == [b * 5 + t for b, t in computed]
    # sequences: row 0, row 1 split at t=2 into two documents, row 2 (its selected pad included)
    sequences = [[(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1)], [(1, 2), (1, 3), (1, 4)], [(2, 0), (2, 1), (2, 4)]]
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens.tolist() == [0, 3, 5, 8, 11]
    assert p.key_mask.shape == (4, 3) and p.offsets.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 2]
    for s, seq in enumerate(sequences):
        for i, (b, t) in enumerate(seq):
            row = computed.index((b, t))
            assert p.seq_slots[row] == s * 3 + i and p.key_mask[s, i] == bool(mask[b, t])
    assert not p.key_mask[3, 2] and not p.full and not p.rows_are_keys
    picked = [(b, t) for b, t in computed if selected[b, t]]
    assert p.selected.tolist() == [b * 5 + t for b, t in picked]
    assert [computed[r] for r in p.selected_rows.tolist()] == picked
    assert p.cu_selected.tolist() == [0, 2, 3, 4, 5] and p.query_mask.shape == (4, 2)
    assert p.query_slots.tolist() == [0, 1, 2, 4, 6]

    plain = pack_tokens(torch.ones(2, 4), first_tokens(torch.zeros(2, 4)))
    assert plain.full and plain.rows_are_keys and plain.offsets is None and plain.cu_seqlens.tolist() == [0, 4, 8]
    assert plain.seq_slots.tolist() == list(range(8))  # no short sequence: the padded layout is the rows themselves


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, **causal):
    """What `varlen_attn` computes, sequence by sequence through SDPA (CPU, fp32): the call the CUDA path makes."""
    assert q.dim() == 3 and cu_q.dtype == cu_k.dtype == torch.int32
    assert max_q >= int((cu_q[1:] - cu_q[:-1]).max()) and max_k >= int((cu_k[1:] - cu_k[:-1]).max())
    is_causal = causal.get("is_causal", False) or causal.get("window_size") == (-1, 0)
    out = []
    for s in range(len(cu_q) - 1):
        qs, ks, vs = (t[int(c[s]):int(c[s + 1])].transpose(0, 1) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=is_causal).transpose(0, 1))
    return torch.cat(out)


@pytest.fixture(params=["sdpa", "varlen"])
def attention_path(request, monkeypatch):
    """Runs a test through SDPA on the padded sequences, or through the variable-length kernel's call."""
    calls = []
    if request.param == "varlen":
        def serves(x, head_dim, dropout_p, packing):
            return dropout_p == 0.0 and packing.rows_are_keys

        def kernel(*args, **kwargs):
            calls.append(args[0].shape)
            return reference_varlen(*args, **kwargs)
        monkeypatch.setattr(kernels, "varlen_serves", serves)
        monkeypatch.setattr(kernels, "varlen_attn", kernel)
    yield request.param, calls
    if request.param == "varlen":
        assert calls, "the variable-length kernel was never called"


def collate_labelled(config, ids, mask, labels, causal=False):
    """The pretraining collator's batch (and packing) for sequences whose labels are already chosen."""
    masker = MLMMasker(config.vocab_size - 1, config.vocab_size, [0, 1, 2])  # unused: the labels are given
    collate = MLMCollator(config.pad_token_id, masker, objective="clm" if causal else "mlm")
    return collate([{"input_ids": i[m.bool()], "labels": lab[m.bool()]} for i, m, lab in zip(ids, mask, labels)])


@pytest.mark.parametrize("causal", [False, True])
def test_packed_loss_and_gradients_match_hf(attention_path, causal):
    """The pretraining step on the collator's packing: loss and every gradient equal HF's in fp32 (<= 1e-5)."""
    torch.manual_seed(0)
    hf_cls = transformers.RobertaForCausalLM if causal else transformers.RobertaForMaskedLM
    hf = hf_cls(tiny_hf_config(is_decoder=causal, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    config = config_from_hf(hf.config.to_dict())
    ours = (RobertaForCausalLM if causal else RobertaForMaskedLM)(config)
    ours.load_state_dict(hf_to_lit_state_dict(hf.state_dict(), config))
    ids, mask = ragged_batch()
    labels = ids.masked_fill(mask == 0, -100)
    if not causal:
        labels[torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) > 0.3] = -100
    batch = collate_labelled(config, ids, mask, labels, causal)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["labels"], labels)

    expected_loss = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss, correct, count = ours.mlm_loss(ids, mask, labels, batch["packing"])
    assert abs(loss.item() - expected_loss.item()) < 1e-5
    expected_loss.backward()
    loss.backward()
    expected = hf_to_lit_state_dict({k: p.grad for k, p in hf.named_parameters()}, config)
    for name, p in ours.named_parameters():
        assert (p.grad - expected[name]).abs().max() < 1e-5, name


def test_packed_classifier_matches_hf(attention_path):
    torch.manual_seed(0)
    hf = transformers.RobertaForSequenceClassification(tiny_hf_config(num_labels=3)).eval()
    config = config_from_hf(hf.config.to_dict())
    ours = RobertaForSequenceClassification(config, 3).eval()
    ours.load_state_dict(hf_to_lit_state_dict(hf.state_dict(), config))
    ids, mask = ragged_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        actual = ours(ids, mask, packing=pack_tokens(mask, first_tokens(ids)))
    assert (actual - expected).abs().max() < 1e-5


@pytest.mark.parametrize("bert", [False, True])
def test_packed_documents_attend_only_to_themselves(attention_path, bert):
    """Documents packed into one row compute what each computes alone: attention stays inside a document and
    positions count from its own start (RoBERTa's pad-aware positions, or BERT's)."""
    torch.manual_seed(0)
    overrides = dict(pad_aware_positions=False, type_vocab_size=2) if bert else {}
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0, **overrides)
    model = RobertaModel(config)
    docs = [torch.tensor([0, 17, 23, 5, 2]), torch.tensor([0, 40, 2]), torch.tensor([0, 9, 11, 2])]
    alone = [model(d[None])[0] for d in docs]
    collate = MLMCollator(config.pad_token_id, objective="clm", document_start_id=0)
    batch = collate([torch.cat(docs[:2]), docs[2]])  # row 0 packs two documents, row 1 holds one (padded)
    packing = batch["packing"]
    assert packing.cu_seqlens.tolist() == [0, 5, 8, 12]
    every = batch["attention_mask"].bool()
    packed = model.hidden_at(batch["input_ids"], batch["attention_mask"], every,
                             packing=pack_tokens(batch["attention_mask"], every, batch["input_ids"].eq(0)))
    assert (packed - torch.cat(alone)).abs().max() < 1e-5
    # without document boundaries the row is one sequence: attention crosses documents
    crossed = model.hidden_at(batch["input_ids"], batch["attention_mask"], every)
    assert (crossed[5:8] - alone[1]).abs().max() > 1e-3


def counting_backend(graphs):
    """aot_eager (which traces the backward too), counting the graphs it compiles (a restarted attempt is not one)."""
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        compiled = aot_eager(gm, example_inputs)
        graphs.append(gm)
        return compiled
    return backend


def test_training_step_compiles_to_one_graph_for_every_shape():
    """`litgpt pretrain --compile`'s step (forward, loss, backward) has no graph break (fullgraph) and batches of
    other lengths and sizes reuse the graph (dynamic shapes): one compilation in all. Losses equal eager's."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    model = RobertaForMaskedLM(config)
    graphs = []
    step = torch.compile(model.mlm_loss, backend=counting_backend(graphs), fullgraph=True, dynamic=True)
    for lengths, seed in (((12, 7, 3, 10), 0), ((9, 4, 6), 1), ((20, 5, 8, 8, 11), 2)):
        ids, mask = ragged_batch(config.vocab_size, lengths, seed=seed)
        labels = ids.masked_fill((torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed)) > 0.4)
                                 | (mask == 0), -100)
        labels[:, 1] = ids[:, 1]
        batch = collate_labelled(config, ids, mask, labels)
        loss = step(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["packing"])[0]
        loss.backward()
        eager = model.mlm_loss(ids, mask, labels)[0]
        assert abs(loss.item() - eager.item()) < 1e-5
    assert len(graphs) == 1


def test_classifier_forward_compiles_without_graph_breaks():
    """With the collator's packing, and without it (the padded encoder, which a graph can hold)."""
    torch._dynamo.reset()
    config = Config.from_name("roberta-tiny")
    model = RobertaForSequenceClassification(config, 2).eval()
    ids, mask = ragged_batch(config.vocab_size)
    with torch.no_grad():
        eager = model(ids, mask)
        for packing in (pack_tokens(mask, first_tokens(ids)), None):
            graphs = []
            compiled = torch.compile(model, backend=counting_backend(graphs), fullgraph=True, dynamic=True)
            assert (compiled(ids, mask, packing=packing) - eager).abs().max() < 1e-5 and len(graphs) == 1
            torch._dynamo.reset()


def test_documents_flag_of_the_pretraining_data(tokenizer, tmp_path):
    """`--data.documents`: the collator cuts packed rows at every `<s>`; lines mode (one document a row) refuses it."""
    with pytest.raises(UsageError, match="--data.documents"):
        TextFiles(train_data_path=tmp_path, mode="lines", documents=True)
    bos = tokenizer.bos_id
    row = torch.tensor([bos, 50, 51, 52, 2, bos, 60, 61, 2, bos, 70])  # a packed block: 2 documents and a half
    batch = MLMCollator.from_tokenizer(tokenizer, documents=True)([row, row[:6]])
    assert batch["packing"].cu_seqlens.tolist() == [0, 5, 9, 11, 16, 17]
    assert batch["packing"].offsets.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1] + [0, 1, 2, 3, 4, 0]
    assert MLMCollator.from_tokenizer(tokenizer)([row])["packing"].offsets is None


def test_benchmark_smoke(tmp_path):
    """`benchmarks/compare_hf.py` runs end to end on the CPU with case overrides and peak memory (so it cannot rot)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_hf.py"), "--quick", "--layers", "1", "--cases", "A",
           "--shapes", "2x32", "--ragged", "2x24", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["case"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"A1", "C1"} and results["A1"]["batch"] == "2x32"
    for r in results.values():
        assert r["ours_tokens_per_s"] > 0 and r["hf_tokens_per_s"] > 0 and r["ours_peak_mib"] > 0

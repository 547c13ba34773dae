"""Throughput of `TextFiles`: tokenizing a corpus into the litdata cache (`optimize`) and streaming packed blocks.

    python benchmarks/text_files_throughput.py                       # generates ~24 MB of text in a temp folder
    python benchmarks/text_files_throughput.py --data_dir corpus/ --tokenizer_dir checkpoints/roberta-base

Without `--tokenizer_dir` an 8k-token byte-level BPE tokenizer is trained on a sample of the text first (not timed).
The generated text is the demo sentences with words swapped for random ones drawn from a Zipf-distributed synthetic
vocabulary, so the BPE cache sees a realistic share of new words. Prints MB/s of source text and tokens/s.
"""

import argparse
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the litgpt CLI does


def generate(folder: Path, megabytes: float, seed: int = 0) -> None:
    from litgpt.data.test_data import demo_sentences

    rng = random.Random(seed)
    sentences = [s.split() for s in demo_sentences().splitlines() if s.strip()]
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 12))) for _ in range(50_000)]
    cum_weights, total = [], 0.0
    for rank in range(len(vocab)):
        total += 1.0 / (rank + 1)
        cum_weights.append(total)
    folder.mkdir(parents=True, exist_ok=True)
    target = int(megabytes * 1e6)
    per_file = target // 8 + 1
    for i in range(8):
        written = 0
        with open(folder / f"part-{i:02d}.txt", "w", encoding="utf-8") as fp:
            while written < per_file:
                doc = []
                for _ in range(rng.randint(3, 30)):
                    words = list(rng.choice(sentences))
                    fresh = rng.choices(vocab, cum_weights=cum_weights, k=len(words))
                    words = [f if rng.random() < 0.3 else w for w, f in zip(words, fresh)]
                    doc.append(" ".join(words))
                text = "\n".join(doc) + "\n\n"
                fp.write(text)
                written += len(text.encode("utf-8"))


def stack(items):
    import torch

    return {"input_ids": torch.stack([item["input_ids"] for item in items])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=None, help="folder of .txt/.jsonl (default: generate)")
    parser.add_argument("--megabytes", type=float, default=24.0, help="size of the generated corpus")
    parser.add_argument("--tokenizer_dir", type=Path, default=None)
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from litgpt.data import TextFiles
    from litgpt.tokenizer import Tokenizer
    from litgpt.train_tokenizer import train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="litgpt_bench_"))
    try:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = work / "corpus"
            t = time.perf_counter()
            generate(data_dir, args.megabytes)
            print(f"generated {args.megabytes:g} MB in {time.perf_counter() - t:.1f}s")
        files = sorted(p for p in data_dir.rglob("*") if p.suffix in (".txt", ".jsonl"))
        mb = sum(p.stat().st_size for p in files) / 1e6
        if args.tokenizer_dir:
            tokenizer = Tokenizer(args.tokenizer_dir)
        else:
            sample = []
            with open(files[0], encoding="utf-8") as fp:
                for _, line in zip(range(50_000), fp):
                    sample.append(line)
            tokenizer = train_tokenizer(sample, vocab_size=8000)

        data = TextFiles(train_data_path=data_dir, cache_dir=work / "cache", num_workers=args.num_workers,
                         val_fraction=0.01)
        data.connect(tokenizer, batch_size=args.batch_size, max_seq_length=args.block_size)
        t = time.perf_counter()
        data.prepare_data()
        optimize_s = time.perf_counter() - t
        data.setup()
        loader = data.train_dataloader()
        print(f"corpus: {len(files)} files, {mb:.1f} MB; tokenizer vocab {tokenizer.vocab_size}; "
              f"{args.num_workers} workers; {os.cpu_count()} CPUs")
        stats = json.loads((work / "cache" / "meta.json").read_text())["stats"]
        tokens_total = stats["train"]["tokens"] + stats["val"]["tokens"]
        print(f"optimize (plan + read + tokenize + write, train and val passes): {optimize_s:.2f}s  "
              f"{mb / optimize_s:.2f} MB/s  {tokens_total / optimize_s:,.0f} tokens/s  ({tokens_total:,} tokens; "
              f"train pass {stats['train']['seconds']:.2f}s, val pass {stats['val']['seconds']:.2f}s)")

        from litdata import StreamingDataLoader

        raw = StreamingDataLoader(data._dataset("train").streaming, batch_size=args.batch_size,
                                  num_workers=args.num_workers, collate_fn=stack, drop_last=True)
        for name, stream in (("raw packed blocks (litdata's own streaming)", raw),
                             ("packed blocks by index + MLM masking (the train loader)", loader)):
            t = time.perf_counter()
            tokens = 0
            for batch in stream:
                tokens += batch["input_ids"].numel()
            stream_s = time.perf_counter() - t
            print(f"stream {name}, batch {args.batch_size} x {args.block_size}: {stream_s:.2f}s  "
                  f"{tokens / stream_s:,.0f} tokens/s  {mb * tokens / tokens_total / stream_s:.2f} MB/s of source text")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

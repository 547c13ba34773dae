"""What litdata's own sharding does to a TextFiles cache on several nodes: per epoch, the sequences read twice and
never, and each rank's number of batches, for the node count litdata guesses and the real one.

    python benchmarks/litdata_nodes.py                 # a generated corpus, worlds of 2 (2 x 1) and 4 (2 x 2)
    python benchmarks/litdata_nodes.py --chunk_tokens 2048 --batch_chars 2000   # many small chunks

litdata reads the node count from `torch.cuda.device_count()` (world // GPUs, or 1 without a GPU; `NNODES`
overrides). On CPU it guesses 1 node; where each process sees one GPU (SLURM's --gpus-per-task) it guesses one node
per process. Each rank is simulated in this process with litdata's `_DistributedEnv`, as `StreamingDataset` would
detect it, reading through `StreamingDataLoader` as TextFiles did before it read by index in `EpochStream`'s order.
"""

import argparse
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def read_epochs(root: Path, block_size: int, batch_size: int, world: int, rank: int, nodes: int, epochs: int):
    """The global indices one rank reads in each epoch, through litdata's loader and its sharding."""
    import litdata.streaming.dataset as streaming
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader
    from litdata.utilities.env import _DistributedEnv

    class Indices(StreamingDataset):  # items as their global index: which sequences the loader got
        def __getitem__(self, index):
            return int(getattr(index, "index", index))

    detect = streaming._DistributedEnv.detect
    streaming._DistributedEnv.detect = classmethod(lambda cls: _DistributedEnv(world, rank, nodes))
    try:
        dataset = Indices(str(root), item_loader=TokensLoader(block_size=block_size), shuffle=True, seed=7)
        indices = []
        loader = StreamingDataLoader(dataset, batch_size=batch_size, drop_last=True, num_workers=0,
                                     collate_fn=lambda items: indices.extend(int(i) for i in items))
        out = []
        for _ in range(epochs):
            indices.clear()
            batches = sum(1 for _ in loader)
            out.append((list(indices), batches))
        return out
    finally:
        streaming._DistributedEnv.detect = detect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--block_size", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--chunk_tokens", type=int, default=None, help="litgpt.data.text_files.CHUNK_TOKENS")
    parser.add_argument("--batch_chars", type=int, default=None, help="litgpt.data.text_tokenize.BATCH_CHARS")
    args = parser.parse_args()

    import litgpt.data.text_files as text_files
    import litgpt.data.text_tokenize as text_tokenize
    from litgpt.data.test_data import demo_sentences
    from litgpt.data.text_files import TextFiles, _Sequences
    from litgpt.train_tokenizer import train_tokenizer

    if args.chunk_tokens:
        text_files.CHUNK_TOKENS = args.chunk_tokens
    if args.batch_chars:
        text_tokenize.BATCH_CHARS = args.batch_chars
    lines = [line for line in demo_sentences().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        rng = random.Random(0)
        (work / "corpus").mkdir()
        (work / "corpus" / "a.txt").write_text("\n\n".join(" ".join(rng.sample(lines, 3))
                                                          for _ in range(args.documents)))
        data = TextFiles(train_data_path=work / "corpus", cache_dir=work / "cache", num_workers=0, val_fraction=0.1)
        data.connect(train_tokenizer(lines, vocab_size=600), batch_size=args.batch_size,
                     max_seq_length=args.block_size)
        data.prepare_data()
        total = len(_Sequences(work / "cache" / "train", args.block_size))
        print(f"{total} training sequences of {args.block_size} tokens, batches of {args.batch_size}")
        for world, real_nodes in ((2, 2), (4, 2)):
            for nodes, what in ((1, "guessed on CPU"), (real_nodes, "real"), (world, "guessed, 1 GPU per process")):
                ranks = [read_epochs(work / "cache" / "train", args.block_size, args.batch_size, world, r, nodes,
                                     args.epochs) for r in range(world)]
                report(f"world {world} ({real_nodes} nodes), litdata with num_nodes {nodes} ({what})", ranks, total)
            # litgpt now: every rank reads its micro-batches of EpochStream by index (keys are (epoch, index))
            ranks = []
            for r in range(world):
                data.connect(data.tokenizer, batch_size=args.batch_size, max_seq_length=args.block_size, rank=r,
                             world_size=world)
                loader = data._make_train_loader()
                keys = [loader.order(e) for e in range(args.epochs + 1)]
                ranks.append([([i for k in keys for ke, i in k if ke == e], len(keys[e]) // args.batch_size)
                              for e in range(args.epochs)])
            report(f"world {world} ({real_nodes} nodes), litgpt's EpochStream", ranks, total)


def report(what: str, ranks, total: int) -> None:
    """Per epoch: sequences read more than once, never, and each rank's batches; then those never read at all."""
    cells, ever = [], set()
    for e in range(len(ranks[0])):
        seen = Counter(i for rank in ranks for i in rank[e][0])
        ever |= set(seen)
        twice = sum(1 for c in seen.values() if c > 1)
        cells.append(f"epoch {e + 1}: {twice} twice, {total - len(seen)} never, batches per rank "
                     f"{[rank[e][1] for rank in ranks]}")
    print(f"{what}: " + "; ".join(cells) + f"; never read in any epoch: {total - len(ever)}")


if __name__ == "__main__":
    sys.exit(main())

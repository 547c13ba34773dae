"""`litgpt embed`: sentence vectors from any checkpoint's encoder, for a few texts or for a whole file.

A few texts (`--text`, repeatable) are printed, ranked by similarity to a `--query`, or given as JSON. A corpus
(`--input FILE`) is streamed in chunks to `--output` (`.npy`: one float32 row per text; `.jsonl`: one
`{"text", "embedding"}` object per line), with a progress bar, in memory that does not grow with the file.
"""

import json as jsonlib
import sys
from pathlib import Path
from typing import Iterator, List, Optional

from litgpt.utils import UsageError

CHUNK = 1024  # texts read, embedded and written at a time (sorted by length within, so batches pad little)
OUTPUT_FORMATS = (".npy", ".jsonl")


def main(
    checkpoint: str,
    text: Optional[List[str]] = None,
    query: Optional[str] = None,
    input: Optional[Path] = None,
    output: Optional[Path] = None,
    json: bool = False,
    normalize: Optional[bool] = None,
    pooling: Optional[str] = None,
    max_length: Optional[int] = None,
    device: Optional[str] = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> None:
    """Embed texts with an encoder: sentence vectors for search, clustering or deduplication.

    Args:
        checkpoint: Any checkpoint (a sentence-transformers or other HuggingFace folder, a litgpt checkpoint dir,
            a pretraining out_dir or a finetuning output_dir).
        text: A text to embed; repeat the flag for several.
        query: Rank the --text values by cosine similarity to this text, best first.
        input: A UTF-8 file to embed whole: `.txt` (one text per non-blank line) or `.jsonl` (the `text` fields).
        output: Where --input's vectors go: `.npy` (`[texts, n_embd]` float32, in file order) or `.jsonl` (one
            `{"text", "embedding"}` per line). It must not exist yet.
        json: Print one JSON document on stdout: a list with one vector (list of floats) per --text; with --query,
            a list of `{"text", "score"}`, best first.
        normalize: Scale vectors to unit length. Default: what the checkpoint's sentence-transformers files say
            (a Normalize module), else no.
        pooling: `mean`, `max` or `cls`. Default: the checkpoint's `1_Pooling/config.json`, else `mean`.
        max_length: Truncate texts to this many tokens. Default: `sentence_bert_config.json`'s max_seq_length,
            else the model's length.
        device: `cpu`, `cuda` or `cuda:N`; default: the GPU if there is one.
        batch_size: Texts per forward pass.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    from litgpt.api import Embedder

    if input is None and not text:
        raise UsageError('no input: pass --text "..." (repeatable), or --input FILE with --output FILE.npy|.jsonl')
    if input is not None and text:
        raise UsageError("--text and --input: pass one of them (--input streams a whole file to --output)")
    if input is not None:
        input, output = Path(input), check_output(output)
        if query is not None or json:
            raise UsageError("--query and --json go with --text; --input writes its vectors to --output")
        if not input.is_file():
            raise UsageError(f"--input {input}: file not found")
    elif output is not None:
        raise UsageError("--output goes with --input; with --text the vectors are printed (--json for all of them)")
    embedder = Embedder.load(checkpoint, device=device, batch_size=batch_size, precision=precision, pooling=pooling,
                             normalize=normalize, max_length=max_length)
    settings = (f"{embedder.pooling} pooling{', normalized' if embedder.normalize else ''}, up to "
                f"{embedder.max_length} tokens")
    print(f"{embedder.summary}: {settings}", file=sys.stderr)
    if input is not None:
        embed_file(embedder, input, output)
        return

    texts = list(text)
    if query is not None:
        vectors = embedder.embed([query] + texts, normalize=True)  # cosine similarity: unit vectors, dot product
        scores = (vectors[1:] @ vectors[0]).tolist()
        ranking = sorted(({"text": t, "score": s} for t, s in zip(texts, scores)), key=lambda r: -r["score"])
        if json:
            print(jsonlib.dumps(ranking, ensure_ascii=False))
            return
        for r in ranking:
            print(f"{r['score']:.4f}\t{r['text']}")
        return
    vectors = embedder.embed(texts)
    if json:
        print(jsonlib.dumps(vectors.tolist(), ensure_ascii=False))
        return
    for t, v in zip(texts, vectors):
        head = ", ".join(f"{x:.4f}" for x in v[:4].tolist())
        print(f"[{head}, ...] ({v.numel()} dims, norm {v.norm():.3f})\t{t}")


def check_output(output: Optional[Path]) -> Path:
    if output is None:
        raise UsageError("--input needs --output FILE.npy or FILE.jsonl for the vectors")
    output = Path(output)
    if output.suffix not in OUTPUT_FORMATS:
        raise UsageError(f"--output {output}: expected a {' or '.join(OUTPUT_FORMATS)} file name")
    if output.exists():
        raise UsageError(f"--output {output}: already exists; pick a new file name (nothing is overwritten)")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: folder {output.parent} does not exist")
    return output


def iter_texts(path: Path) -> Iterator[str]:
    """The texts of a `.txt` (non-blank lines) or `.jsonl` (`text` fields) file, streamed; a line that arrives in
    slices (longer than about 1 MiB) is joined here."""
    from litgpt.data.readers import iter_units

    pieces: List[str] = []
    for _, _, piece, last in iter_units(path, unit="line"):
        pieces.append(piece)
        if last:
            yield "".join(pieces)
            pieces = []


def embed_file(embedder, path: Path, output: Path) -> None:
    """Streams `path` through the embedder into `output`, written atomically (a temp file renamed at the end)."""
    import numpy as np
    from tqdm import tqdm

    from litgpt.utils import atomic_path, release_freed_memory

    total = sum(1 for _ in iter_texts(path))  # a first, cheap pass sizes the .npy and the progress bar
    if total == 0:
        raise UsageError(f"--input {path}: no text found; expected one text per non-blank line (or .jsonl records "
                         "with a text field)")
    width = embedder.config.n_embd
    with atomic_path(output) as tmp, tqdm(total=total, unit=" texts", file=sys.stderr, desc="embed") as bar:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, width)) \
            if output.suffix == ".npy" else None
        sink = open(tmp, "w", encoding="utf-8") if rows is None else None
        try:
            done = 0
            for chunk in chunks(iter_texts(path), CHUNK):
                vectors = embedder.embed(chunk)
                if rows is not None:
                    rows[done : done + len(chunk)] = vectors.numpy()
                else:
                    sink.writelines(jsonlib.dumps({"text": t, "embedding": v}, ensure_ascii=False) + "\n"
                                    for t, v in zip(chunk, vectors.tolist()))
                done += len(chunk)
                bar.update(len(chunk))
                release_freed_memory()  # keeps the memory flat over a long file
        finally:
            if rows is not None:
                rows.flush()
                del rows
            if sink is not None:
                sink.close()
    print(f"Wrote {total} vectors of {width} dims to {output}", file=sys.stderr)


def chunks(items: Iterator[str], size: int) -> Iterator[List[str]]:
    chunk: List[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

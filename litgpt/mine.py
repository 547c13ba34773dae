"""`litgpt mine CHECKPOINT --data_dir D --output FILE`: hard negatives for (anchor, positive) pairs, found by the
model itself, as sentence-transformers' `mine_hard_negatives` finds them.

Every anchor of `D/train.*` is compared by cosine similarity with a corpus: every positive of that file, or
`--corpus` (a `.txt` of one document per line, a `.jsonl` of `text` fields, or BEIR's `corpus.jsonl` with its
titles). The corpus streams through the model in chunks (`--chunk_size`, with a progress bar), keeping only each
anchor's best `--range_max` documents, so memory holds one chunk. Then, per anchor (`select_negatives`):
- its own positive(s) and the anchor text itself are never candidates;
- ranks before `--range_min` (the very closest, often unlabelled positives) are skipped;
- a candidate scoring above `--max_score`, or not far enough below the positive's score (`--margin`: at least that
  much lower; `--relative_margin`: at most (1 - it) times the positive's score), is dropped as a likely false
  negative;
- the best `--num_negatives` left become `negative_1` ... A row that keeps fewer is left out, and counted.
The output is JSONL rows `{"anchor", "positive", "negative_1", ...}`, which `litgpt finetune --task embed` reads.
"""

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch

from litgpt.utils import UsageError


def mine(checkpoint: str, data_dir: Optional[Path] = None, output: Optional[Path] = None, num_negatives: int = 3,
         range_min: int = 0,
         range_max: int = 50, margin: Optional[float] = None, relative_margin: Optional[float] = None,
         max_score: Optional[float] = None, corpus: Optional[Path] = None, chunk_size: int = 8192,
         batch_size: int = 64, device: Optional[str] = None) -> None:
    """Mine hard negatives for the (anchor, positive) pairs of a data folder with an embedding model.

    Args:
        checkpoint: The embedding model (a sentence-transformers folder, a `litgpt finetune --task embed` output, any
            checkpoint's encoder).
        data_dir: The folder whose train.{jsonl,csv,tsv,json} holds anchor and positive columns.
        output: The JSONL file to write (anchor, positive, negative_1, ...); it must not exist yet.
        num_negatives: Negatives per anchor.
        range_min: Skip the candidates ranked before this (0: none skipped).
        range_max: Consider only the best this many candidates.
        margin: A negative scores at least this much below the anchor's positive (absolute).
        relative_margin: A negative scores at most (1 - relative_margin) x the positive's score.
        max_score: A negative scores at most this.
        corpus: Documents to mine from instead of the positives: .txt (one per line) or .jsonl (`text`, with
            `title` when BEIR's corpus).
        chunk_size: Corpus documents embedded at a time.
        batch_size: Texts per forward pass.
        device: cpu, cuda or cuda:N; default: the GPU if there is one.
    """
    from tqdm import tqdm

    from litgpt.api import Embedder
    from litgpt.data.embedding import read_text_rows
    from litgpt.data.labelled import find_split_file
    from litgpt.retrieval import nearest
    from litgpt.utils import atomic_write_text

    if data_dir is None or output is None:
        raise UsageError("--data_dir (the folder with train.jsonl's anchor and positive columns) and --output (a new "
                         ".jsonl file) are required")
    output = Path(output)
    if output.exists():
        raise UsageError(f"--output {output}: already exists; pick a new file name (nothing is overwritten)")
    if output.suffix != ".jsonl":
        raise UsageError(f"--output {output}: expected a .jsonl file name")
    if num_negatives < 1 or not 0 <= range_min < range_max or chunk_size < 1:
        raise UsageError(f"--num_negatives {num_negatives} / --range_min {range_min} / --range_max {range_max}: "
                         "expected at least one negative and 0 <= range_min < range_max")
    pairs = read_text_rows(find_split_file(Path(data_dir), "train"))
    if pairs.scored:
        raise UsageError(f"{pairs.path}: scored pairs; mining needs anchor and positive columns")
    documents = read_corpus(Path(corpus)) if corpus is not None else list(dict.fromkeys(t[1] for t in pairs.texts))
    embedder = Embedder.load(checkpoint, device=device, batch_size=batch_size)
    print(f"{embedder.source}: mining {len(pairs)} anchors against {len(documents)} documents", file=sys.stderr)

    anchors = [texts[0] for texts in pairs.texts]
    anchor_vectors = embedder.embed(anchors)
    positive_vectors = embedder.embed([texts[1] for texts in pairs.texts])
    positive_scores = torch.nn.functional.cosine_similarity(anchor_vectors, positive_vectors).tolist()
    never: Dict[str, Set[int]] = {}  # a document's text -> the anchors it must not be a negative of
    for i, texts in enumerate(pairs.texts):
        for text in (texts[0], texts[1]):
            never.setdefault(text, set()).add(i)
    bar = tqdm(total=len(documents), unit=" docs", desc="mine", file=sys.stderr)

    def chunk_scores(start: int, vectors: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The chunk's scores with each anchor's own positive and text out of reach."""
        for j, text in enumerate(documents[start : start + vectors.size(0)]):
            for i in never.get(text, ()):
                scores[i, j] = -torch.inf
        bar.update(vectors.size(0))
        return scores

    chunks = (embedder.embed(documents[s : s + chunk_size]) for s in range(0, len(documents), chunk_size))
    scores, index = nearest(anchor_vectors, chunks, range_max, adjust=chunk_scores)
    bar.close()

    rows, dropped = [], 0
    for i, texts in enumerate(pairs.texts):
        ranked = [(s, documents[j]) for s, j in zip(scores[i].tolist(), index[i].tolist()) if s != -torch.inf]
        negatives = select_negatives(ranked, positive_scores[i], num_negatives, range_min, margin, relative_margin,
                                     max_score)
        if len(negatives) < num_negatives:
            dropped += 1
            continue
        rows.append({"anchor": texts[0], "positive": texts[1],
                     **{f"negative_{k + 1}": text for k, text in enumerate(negatives)}})
    atomic_write_text(output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"Wrote {len(rows)} rows with {num_negatives} negatives each to {output}"
          + (f"; {dropped} anchors had fewer candidates left and were left out" if dropped else ""), file=sys.stderr)


def select_negatives(ranked: Sequence[Tuple[float, str]], positive_score: float, num_negatives: int,
                     range_min: int = 0, margin: Optional[float] = None, relative_margin: Optional[float] = None,
                     max_score: Optional[float] = None) -> List[str]:
    """One anchor's negatives from its candidates (score, text), best first, its positive already left out."""
    chosen = []
    for score, text in ranked[range_min:]:
        if max_score is not None and score > max_score:
            continue
        if margin is not None and score > positive_score - margin:
            continue
        if relative_margin is not None and score > positive_score * (1 - relative_margin):
            continue
        chosen.append(text)
        if len(chosen) == num_negatives:
            break
    return chosen


def read_corpus(path: Path) -> List[str]:
    """A corpus file's documents, in order, each once."""
    from litgpt.data.embedding import read_jsonl_texts
    from litgpt.data.labelled import read_rows
    from litgpt.data.readers import read_text_lines

    if not path.is_file():
        raise UsageError(f"--corpus {path}: file not found")
    if path.suffix != ".jsonl":
        texts = read_text_lines(path)
    elif all(isinstance(obj, dict) and "_id" in obj for _, obj in read_rows(path)):  # BEIR's, with titles
        texts = list(read_jsonl_texts(path, title=True).values())
    else:
        texts = []
        for row, obj in read_rows(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UsageError(f"{path}: {row}: expected {{\"text\": ...}}")
            texts.append(obj["text"])
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    if not texts:
        raise UsageError(f"--corpus {path}: no documents")
    return texts

"""The figures of an embedding model, as sentence-transformers' evaluators compute them, and the nearest-neighbour
search they (and `litgpt mine`) share.

- STS (`sts_metrics`, its `EmbeddingSimilarityEvaluator`): Pearson and Spearman correlation between each pair's
  cosine similarity and its gold score, by torchmetrics, in float64.
- Retrieval (`retrieval_metrics`, its `InformationRetrievalEvaluator`): every query against the whole corpus by
  cosine similarity; the top 100 documents, ranked by score with ties broken by the corpus id; binary relevance.
  nDCG@10, MRR@10, Recall@1/5/10 and MAP@100, averaged over the queries, in that evaluator's (and BEIR's)
  definitions: DCG@k sums rel_i / log2(i + 2) over the first k and is divided by the DCG of min(k, R) relevant
  documents; MAP@k sums the precision at each hit in the first k and divides by min(k, R), R being the query's number
  of relevant documents. torchmetrics' retrieval metrics define AP (over the hits found, with relevant documents
  scored below 0 dropped) and nDCG (tied scores averaged) differently, so they are not used here.
"""

import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

TOP_K = 100  # the deepest cutoff reported (MAP@100)
RETRIEVAL_FIGURES = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "map@100")


def sts_metrics(first: torch.Tensor, second: torch.Tensor, gold: Sequence[float]) -> Dict[str, float]:
    """Pearson and Spearman correlation of the pairs' cosine similarity with the gold scores."""
    from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

    cosine = torch.nn.functional.cosine_similarity(first.double(), second.double(), dim=-1)
    target = torch.tensor(list(gold), dtype=torch.float64)
    return {"pearson": float(pearson_corrcoef(cosine, target)), "spearman": float(spearman_corrcoef(cosine, target))}


def nearest(queries: torch.Tensor, corpus_chunks: Iterable[torch.Tensor], k: int,
            adjust: Optional[Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]] = None
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scores, corpus indices) of each query's `k` most cosine-similar documents, best first, over a corpus given in
    chunks of vectors (so it never has to be held whole). `adjust(offset, chunk, scores)` may change a chunk's
    `[queries, chunk]` scores first (-inf: never a result)."""
    queries = torch.nn.functional.normalize(queries.float(), dim=-1)
    best_scores = queries.new_full((queries.size(0), 0), -math.inf)
    best_index = torch.zeros(queries.size(0), 0, dtype=torch.long)
    offset = 0
    for chunk in corpus_chunks:
        scores = queries @ torch.nn.functional.normalize(chunk.float(), dim=-1).T
        if adjust is not None:
            scores = adjust(offset, chunk, scores)
        index = torch.arange(offset, offset + chunk.size(0)).expand(queries.size(0), -1)
        scores, index = torch.cat([best_scores, scores], 1), torch.cat([best_index, index], 1)
        top = scores.topk(min(k, scores.size(1)), dim=1)
        best_scores, best_index = top.values, index.gather(1, top.indices)
        offset += chunk.size(0)
    return best_scores, best_index


def retrieval_metrics(query_vectors: torch.Tensor, corpus_vectors: Iterable[torch.Tensor], query_ids: List[str],
                      corpus_ids: List[str], relevant: Dict[str, Set[str]]) -> Dict[str, float]:
    """nDCG@10, MRR@10, Recall@1/5/10 and MAP@100 of `query_ids` (their vectors in that order) searching the corpus
    (`corpus_ids`, its vectors in order, possibly in chunks)."""
    scores, index = nearest(query_vectors, corpus_vectors, TOP_K)
    totals = dict.fromkeys(RETRIEVAL_FIGURES, 0.0)
    for q, query in enumerate(query_ids):
        ranked = sorted(zip(scores[q].tolist(), index[q].tolist()), key=lambda hit: (-hit[0], corpus_ids[hit[1]]))
        hits = [corpus_ids[i] in relevant[query] for _, i in ranked]
        for name, value in query_figures(hits, len(relevant[query])).items():
            totals[name] += value
    return {name: total / len(query_ids) for name, total in totals.items()}


def query_figures(hits: List[bool], num_relevant: int) -> Dict[str, float]:
    """One query's figures from the relevance of its ranked documents (`hits`, best first)."""
    def dcg(relevance: Iterable[bool], k: int) -> float:
        return sum(rel / math.log2(i + 2) for i, rel in enumerate(list(relevance)[:k]))

    first_hit = next((i for i, hit in enumerate(hits[:10]) if hit), None)
    precisions, found = [], 0
    for i, hit in enumerate(hits[:100]):
        if hit:
            found += 1
            precisions.append(found / (i + 1))
    out = {"ndcg@10": dcg(hits, 10) / dcg([True] * num_relevant, 10),
           "mrr@10": 0.0 if first_hit is None else 1.0 / (first_hit + 1),
           "map@100": sum(precisions) / min(100, num_relevant)}
    out.update({f"recall@{k}": sum(hits[:k]) / num_relevant for k in (1, 5, 10)})
    return out


def chunked(vectors_of: Callable[[List[str]], torch.Tensor], texts: Sequence[str], size: int) -> Iterable[torch.Tensor]:
    """The vectors of `texts`, `size` at a time."""
    for start in range(0, len(texts), size):
        yield vectors_of(list(texts[start : start + size]))

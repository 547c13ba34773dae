"""`litgpt finetune --task embed`: train a sentence-embedding model with Lightning Fabric, on any encoder checkpoint.

setup() reads the data (`litgpt.data.embedding`), finds the weights and the checkpoint's sentence-transformers
recipe (pooling, normalization, max length, lowercasing; mean pooling for a bare encoder) -> the shared loop
(`loop.py`) trains with `--loss`, the losses of sentence-transformers of the same names (`litgpt.losses`):
- `mnrl`: in-batch negatives, cosine similarity x `--scale`, `--symmetric` for both directions;
- `cached_mnrl`: the same loss at any batch size in the memory of `--mini_batch_size` (GradCache): every text is
  embedded once without gradients, the loss's gradient with respect to those vectors is kept, then each mini-batch
  is embedded again with gradients and that gradient is passed back through it. The second pass replays the first
  pass's random state, so dropout draws the same masks and the gradients are `mnrl`'s;
- `cosent`: scored pairs, the gold order of the pairs' similarities.
With in-batch negatives no text is twice in a batch, and on several devices every device's texts are candidates for
every anchor (an all-gather that carries the gradients back). The epoch is chosen on the validation split (nDCG@10
when it has retrieval qrels, else STS Spearman) and the output_dir is a sentence-transformers folder: the HF
encoder, its tokenizer, `modules.json`, `1_Pooling/config.json` and `sentence_bert_config.json`.
"""

from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Dict, List

import torch

from litgpt.api.texts import save_sentence_transformers_recipe
from litgpt.args import FinetuneArgs
from litgpt.data.embedding import EmbeddingDataModule
from litgpt.embedding import SentenceEmbedder
from litgpt.finetune import loop, prepare
from litgpt.losses import cosent_loss, mnrl_loss
from litgpt.metrics import report_title
from litgpt.retrieval import RETRIEVAL_FIGURES, chunked, retrieval_metrics, sts_metrics
from litgpt.run import unwrap
from litgpt.utils import UsageError

FIGURES = ("pearson", "spearman", *RETRIEVAL_FIGURES)


def setup(args: FinetuneArgs) -> None:
    prepare.check_output(args)
    score_range = parse_range(args.score_range)
    data = EmbeddingDataModule(Path(args.data_dir), args.num_workers, args.val_fraction, args.seed, score_range)
    loss = args.loss or ("cosent" if data.train.scored else "mnrl")
    if (loss == "cosent") != data.train.scored:
        wanted = "scored pairs (sentence1, sentence2, score)" if loss == "cosent" else "(anchor, positive) pairs"
        raise UsageError(f"--loss {loss}: trains on {wanted}, and {data.train.path} has {', '.join(data.train.names)}")
    data.no_duplicates = loss != "cosent"
    data.mini_batch_size = args.mini_batch_size if loss == "cached_mnrl" else None
    if data.no_duplicates:  # a batch size that rule cannot fill fails now, before any work
        world_size = args.devices if isinstance(args.devices, int) and args.devices > 0 else 1
        data.no_duplicate_batches(args.batch_size, args.seed, world_size=world_size)
    run = prepare.prepare(args, data, SentenceEmbedder, data.all_texts())
    from litgpt.api.texts import sentence_transformers_recipe

    folder = run.tokenizer.checkpoint_dir
    recipe = sentence_transformers_recipe(folder) if folder is not None else {}
    if args.max_length is None and "max_length" in recipe:  # no --max_length: the recipe's
        run = replace(run, max_length=min(recipe["max_length"], run.config.block_size),
                      max_length_from="sentence_bert_config.json's max_seq_length")
    data.pooling, data.lowercase = args.pooling or recipe.get("pooling", "mean"), recipe.get("lowercase", False)
    loop.launch(run, partial(make_task, loss=loss, normalize=recipe.get("normalize", False)))


def parse_range(text: Any):
    if text is None:
        return None
    try:
        low, high = (float(x) for x in str(text).split(","))
        assert low < high
    except (ValueError, AssertionError):
        raise UsageError(f"--score_range {text!r}: expected MIN,MAX with MIN < MAX, e.g. 0,5") from None
    return low, high


def make_task(fabric, run: prepare.Run, loss: str, normalize: bool) -> loop.Task:
    args, data = run.args, run.data
    if fabric.global_rank == 0:  # the recipe goes in first, so --resume reads it back from output_dir
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        recipe = {"pooling": data.pooling, "normalize": normalize, "max_length": run.max_length,
                  "lowercase": data.lowercase}
        save_sentence_transformers_recipe(Path(args.output_dir), recipe, run.config.n_embd)
    gather = all_gather_with_grad if fabric.world_size > 1 else None

    def loss_of(vectors: List[torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
        if loss == "cosent":
            return cosent_loss(vectors[0], vectors[1], scores, args.scale)
        return mnrl_loss(vectors[0], vectors[1], vectors[2:], args.scale, args.symmetric, gather, fabric.global_rank)

    def train_loss(model, batch: Dict[str, Any]) -> torch.Tensor:
        return loss_of(column_vectors(model, batch), batch["scores"])

    def evaluate(model, split: str, chosen: Dict[str, Any]) -> Dict[str, Any]:
        return score(fabric, model, run, data.splits()[split], normalize)

    def finish(model, test: Dict[str, Any]) -> Dict[str, Any]:
        return {**test, "loss_function": loss, "scale": args.scale, "pooling": data.pooling, "normalize": normalize,
                "max_seq_length": run.max_length}

    def show(report: Dict[str, Any]) -> str:
        figures = " | ".join(f"{k} {report[k]:.4f}" for k in FIGURES if k in report)
        if report.get("test_split") is None:
            return f"No test split (test.* or retrieval/qrels/test.tsv in {args.data_dir}): nothing scored"
        return f"{report_title(report)}\n  {figures}"

    validation = data.validation
    metric = "ndcg@10" if validation is not None and validation.retrieval is not None else "spearman"
    return loop.Task(make_model=lambda: SentenceEmbedder(run.config, data.pooling, normalize), loss=train_loss,
                     evaluate=evaluate, metric=metric,
                     summary=f"{loss} on {', '.join(data.train.names)}, {data.pooling} pooling", finish=finish,
                     show=show, backward=partial(cached_backward, fabric, loss_of=loss_of)
                     if loss == "cached_mnrl" else None)


def embedded(model, chunk: Dict[str, Any]) -> torch.Tensor:
    return model(chunk["input_ids"], chunk["attention_mask"], None, chunk["packing"])


def column_vectors(model, batch: Dict[str, Any]) -> List[torch.Tensor]:
    """Each column's vectors (anchors, positives, negatives...), its mini-batches embedded with gradients."""
    return [torch.cat([embedded(model, chunk) for chunk in column]) for column in batch["columns"]]


def cached_backward(fabric, model, batch: Dict[str, Any], loss_of) -> torch.Tensor:
    """`cached_mnrl`'s step (GradCache): every mini-batch embedded without gradients (its random state kept), the
    loss and its gradient with respect to those vectors, then every mini-batch embedded again with gradients, in the
    same random state, and that gradient passed back through it. Memory: one mini-batch's activations. Gradients
    are summed locally and synced once, at the last mini-batch. Returns the (detached) loss."""
    chunks = [chunk for column in batch["columns"] for chunk in column]
    states, first = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(rng_state())
            first.append(embedded(model, chunk))
    leaves = [v.detach().requires_grad_() for v in first]
    sizes = [len(column) for column in batch["columns"]]
    ends = [sum(sizes[: c + 1]) for c in range(len(sizes))]
    value = loss_of([torch.cat(leaves[end - n : end]) for n, end in zip(sizes, ends)], batch["scores"])
    value.backward()  # to the vectors only: the model is not in this graph
    for k, (chunk, state, leaf) in enumerate(zip(chunks, states, leaves)):
        with fabric.no_backward_sync(model, enabled=k < len(chunks) - 1), replayed_rng(state):
            fabric.backward(embedded(model, chunk), leaf.grad)
    return value.detach()


def score(fabric, model, run: prepare.Run, split, normalize: bool) -> Dict[str, Any]:
    """STS and/or retrieval figures of an evaluation split, the texts embedded as `litgpt embed` embeds them."""
    from litgpt.api import Embedder

    data = run.data
    embedder = Embedder(unwrap(model), data.tokenizer, fabric.device, run.args.eval_batch_size)
    embedder.pooling, embedder.normalize, embedder.max_length, embedder.lowercase = (
        data.pooling, normalize, run.max_length, data.lowercase)
    out: Dict[str, Any] = {"num_examples": len(split)}
    if split.sts is not None:
        first, second = (embedder.embed([texts[c] for texts in split.sts.texts]) for c in (0, 1))
        out.update(sts_metrics(first, second, split.sts.scores))
    if split.retrieval is not None:
        search = split.retrieval
        query_ids, corpus_ids = list(search.queries), list(search.corpus)
        out.update(retrieval_metrics(embedder.embed([search.queries[q] for q in query_ids]),
                                     chunked(embedder.embed, [search.corpus[c] for c in corpus_ids], 4096),
                                     query_ids, corpus_ids, search.relevant))
    return out


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every device's `x`, concatenated in rank order; gradients flow back to the device each part came from."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x))


def rng_state():
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


@contextmanager
def replayed_rng(state):
    """Runs with the random state `state` (dropout draws what it drew then), and leaves the outer state as it was."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if state[1] is not None else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1])
        yield

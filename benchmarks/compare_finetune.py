"""The finetuning training step of each head, ours against HuggingFace transformers' on the same weights and batches.

A batch is what finetuning sees: sequences of ragged lengths (16..T), padded to the longest. Each head's step is
forward, loss, backward and a fused AdamW update:
- sequence: `...ForSequenceClassification`, cross-entropy over 3 classes;
- token: `...ForTokenClassification`, 7 tags on 70% of the real tokens (the first sub-tokens of words);
- span: `...ForQuestionAnswering`, start and end cross-entropy.
Ours runs three ways: padded (every position, as HF), packed (the encoder on the real tokens alone, with the packing
`litgpt finetune`'s collators build on the host, outside the timed step) and, with `--compile`, packed and compiled
(dynamic shapes, as `litgpt finetune --compile`). Rounds alternate the implementations; medians are reported, with
examples/s and the ratio to HF.

    python benchmarks/compare_finetune.py --quick --layers 2                 # a CPU smoke run
    python benchmarks/compare_finetune.py --device cuda --precision bf16-mixed --ragged 32x512 --compile
"""

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compare_hf import PAD_ID, VOCAB, hf_config, sync  # noqa: E402

from litgpt.convert import config_from_hf, hf_to_lit_state_dict  # noqa: E402
from litgpt.losses import classification_loss, span_loss, token_loss  # noqa: E402
from litgpt.model_roberta import (  # noqa: E402
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
)
from litgpt.packing import first_tokens, pack_tokens  # noqa: E402

HEADS = {"sequence": ("RobertaForSequenceClassification", RobertaForSequenceClassification, 3),
         "token": ("RobertaForTokenClassification", RobertaForTokenClassification, 7),
         "span": ("RobertaForQuestionAnswering", RobertaForQuestionAnswering, 2)}


def build(head: str, layers: int, device: str, attention_dropout: float):
    """HF's model (seeded) and ours with the very same weights."""
    import transformers

    name, ours_class, labels = HEADS[head]
    torch.manual_seed(0)
    cfg = hf_config(layers, attention_dropout)
    cfg.num_labels = labels
    hf = getattr(transformers, name)(cfg)
    config = config_from_hf(hf.config.to_dict())
    ours = ours_class(config) if head == "span" else ours_class(config, labels)
    ours.load_state_dict(hf_to_lit_state_dict(hf.state_dict(), config, name))
    return hf.to(device), ours.to(device)


def make_batch(head: str, batch: int, max_length: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, max_length + 1, (batch,), generator=g)
    T = int(lengths.max())
    ids = torch.full((batch, T), PAD_ID, dtype=torch.long)
    mask = torch.zeros(batch, T, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, :n] = torch.randint(4, VOCAB - 1, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 0, 2
        mask[i, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if head == "sequence":
        out["labels"] = torch.randint(0, 3, (batch,), generator=g)
        out["packing"] = pack_tokens(mask, first_tokens(ids))
    elif head == "token":
        scored = (torch.rand(ids.shape, generator=g) < 0.7) & mask.bool()
        scored[:, 0] = False
        out["labels"] = torch.randint(0, 7, ids.shape, generator=g).masked_fill(~scored, -100)
        out["packing"] = pack_tokens(mask, scored)
    else:
        out["start_positions"] = (torch.rand(batch, generator=g) * (lengths - 2)).long() + 1
        out["end_positions"] = torch.minimum(out["start_positions"] + 3, lengths - 2)
        out["packing"] = pack_tokens(mask, mask)
    out["real_tokens"] = int(mask.sum())
    return out


def ours_loss(head: str, model, b: dict, packed: bool) -> torch.Tensor:
    packing = b["packing"] if packed else None
    if head == "sequence":
        return classification_loss(model(b["input_ids"], b["attention_mask"], None, packing), b["labels"], None)
    if head == "token":
        logits = model(b["input_ids"], b["attention_mask"], None, packing)
        targets = b["labels"].reshape(-1)[b["packing"].selected] if packed else b["labels"]
        return token_loss(logits, targets)
    start, end = model(b["input_ids"], b["attention_mask"], None, packing)
    return span_loss(start, end, b["start_positions"], b["end_positions"], b["attention_mask"])


def make_step(impl: str, head: str, model, b: dict, precision: str, device: str):
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                if precision == "bf16-mixed" else nullcontext())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    hf_inputs = {k: b[k] for k in ("input_ids", "attention_mask", "labels", "start_positions", "end_positions")
                 if k in b}

    def step():
        with autocast:
            loss = model(**hf_inputs).loss if impl == "hf" else ours_loss(head, model, b, impl != "ours padded")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def time_head(head: str, args) -> list:
    hf, ours = build(head, args.layers, args.device, args.attention_dropout)
    b = {k: v.to(args.device) if hasattr(v, "to") else v for k, v in make_batch(head, *args.shape).items()}
    models = {"hf": hf, "ours padded": ours, "ours packed": ours}
    if args.compile:
        import copy

        compiled = copy.deepcopy(ours)
        compiled.compile(dynamic=True)
        models["ours packed, compiled"] = compiled
    steps = {impl: make_step(impl, head, model, b, args.precision, args.device) for impl, model in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {impl: [] for impl in steps}
    for r in range(args.rounds):
        for impl in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            sync(args.device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                steps[impl]()
            sync(args.device)
            times[impl].append((time.perf_counter() - t0) / args.iters)
    hf_time = statistics.median(times["hf"])
    rows = []
    for impl, values in times.items():
        seconds = statistics.median(values)
        rows.append({"head": head, "impl": impl, "batch": f"{args.shape[0]}x{args.shape[1]} ragged",
                     "real_tokens": b["real_tokens"], "s_per_step": seconds,
                     "examples_per_s": args.shape[0] / seconds, "tokens_per_s": b["real_tokens"] / seconds,
                     "vs_hf": hf_time / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default="sequence,token,span")
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (roberta-base has 12)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--ragged", default="16x256", help="BATCHxT: BATCH sequences of 16..T tokens")
    parser.add_argument("--compile", action="store_true", help="add ours packed and compiled")
    parser.add_argument("--attention-dropout", type=float, default=0.0,
                        help="attention dropout of both models (0: the varlen CUDA kernel serves ours)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 step, 1 warmup step")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.iters, args.warmup = 3, 1, 1
    try:
        args.shape = tuple(int(x) for x in args.ragged.lower().split("x"))
        assert len(args.shape) == 2 and args.shape[1] >= 16
    except (ValueError, AssertionError):
        parser.error(f"--ragged {args.ragged!r}: expected BATCHxT with T >= 16, e.g. 32x512")
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not heads or set(heads) - set(HEADS):
        parser.error(f"--heads {args.heads!r}: expected some of {', '.join(HEADS)}")
    print(f"# device={args.device} precision={args.precision} layers={args.layers} threads={torch.get_num_threads()}"
          f" torch={torch.__version__} ragged={args.ragged}", flush=True)
    results = []
    for head in heads:
        for row in time_head(head, args):
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| head | implementation | examples/s | real tokens/s | vs HF |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['head']} | {r['impl']} | {r['examples_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | "
              f"{r['vs_hf']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

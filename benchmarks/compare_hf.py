"""Side-by-side speed of litgpt's RoBERTa and HuggingFace transformers' on the same work.

Both models get identical weights (through our converter) and identical batches. The two are alternated
round by round in one process and the medians are reported, with the ratio ours/HF. Peak memory is measured
per (case, implementation) in a fresh subprocess, so one model's allocations never count against the other.
Ours gets each batch's packing (`litgpt.packing`) built beforehand, as `litgpt pretrain`'s collators build it in the
loader workers; HF gets the padded batch and mask that its collator gives it.

    python benchmarks/compare_hf.py                       # all cases, roberta-base dimensions, fp32 CPU
    python benchmarks/compare_hf.py --quick --layers 2    # a short smoke run
    python benchmarks/compare_hf.py --device cuda --precision bf16-mixed --shapes 4x512,32x512 --ragged 32x512
    bash benchmarks/gpu_check.sh                          # the whole accelerator check (this, compiled, pretrain)

Cases:
    A  MLM training step (forward, backward, AdamW step), batch 4 x 128, 15% masked (`--shapes`: others)
    B  the same at 1 x 512
    C  a ragged batch: 16 sequences with lengths drawn from 16..256, padded to the longest as HF's collator does
       (`--ragged 32x512`: 32 sequences of 16..512)
    D  classification inference, 32 x 128
    E  fill-mask inference, 32 x 128, one <mask> per sequence
"""

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from litgpt.convert import config_from_hf, hf_to_lit_state_dict  # noqa: E402
from litgpt.model_roberta import RobertaForMaskedLM, RobertaForSequenceClassification  # noqa: E402
from litgpt.packing import first_tokens, pack_tokens  # noqa: E402
from litgpt.progress import peak_flops  # noqa: E402

VOCAB = 50265
MASK_ID = 50264
PAD_ID = 1
CASES = {
    "A": dict(kind="train", batch=4, seq=128, ragged=False),
    "B": dict(kind="train", batch=1, seq=512, ragged=False),
    "C": dict(kind="train", batch=16, seq=256, ragged=True),
    "D": dict(kind="classify", batch=32, seq=128, ragged=False),
    "E": dict(kind="fill_mask", batch=32, seq=128, ragged=False),
}


def hf_config(layers: int, attention_dropout: float = 0.1):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                         pad_token_id=PAD_ID, bos_token_id=0, eos_token_id=2,
                         attention_probs_dropout_prob=attention_dropout)


def add_cases(shapes: str, ragged: str) -> list:
    """`--shapes` (case A at other sizes: A1, A2 ...) and `--ragged` (case C: C1 ...), e.g. "4x512,32x512"."""
    names = []
    for prefix, spec, is_ragged in (("A", shapes, False), ("C", ragged, True)):
        for i, shape in enumerate(s for s in spec.split(",") if s.strip()):
            try:
                b, t = map(int, shape.lower().split("x"))
            except ValueError:
                flag = "--shapes" if prefix == "A" else "--ragged"
                raise SystemExit(f"{flag} {shape!r}: expected BATCHxLENGTH, e.g. 32x512") from None
            CASES[f"{prefix}{i + 1}"] = dict(kind="train", batch=b, seq=t, ragged=is_ragged)
            names.append(f"{prefix}{i + 1}")
    return names


def build(impl: str, kind: str, layers: int, device: str, attention_dropout: float = 0.1):
    """The HF model (seeded) and ours converted from the very same weights."""
    import transformers

    torch.manual_seed(0)
    cls = transformers.RobertaForSequenceClassification if kind == "classify" else transformers.RobertaForMaskedLM
    cfg = hf_config(layers, attention_dropout)
    if kind == "classify":
        cfg.num_labels = 2
    hf = cls(cfg)
    if impl == "hf":
        return hf.to(device)
    config = config_from_hf(hf.config.to_dict())
    state = hf_to_lit_state_dict(hf.state_dict(), config)
    ours = RobertaForSequenceClassification(config, 2) if kind == "classify" else RobertaForMaskedLM(config)
    ours.load_state_dict(state)
    return ours.to(device)


def make_batch(case: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T = case["batch"], case["seq"]
    if case["ragged"]:
        lengths = torch.randint(16, T + 1, (B,), generator=g)
        T = int(lengths.max())
    else:
        lengths = torch.full((B,), T)
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        ids[i, :n] = torch.randint(4, VOCAB - 1, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 0, 2
        mask[i, :n] = 1
    labels = torch.full_like(ids, -100)
    if case["kind"] == "train":
        selected = (torch.rand(ids.shape, generator=g) < 0.15) & mask.bool()
        selected[:, 0] = False
        labels[selected] = ids[selected]
        ids = ids.masked_fill(selected, MASK_ID)
    elif case["kind"] == "fill_mask":
        pos = torch.randint(1, T - 1, (B,), generator=g)
        ids[torch.arange(B), pos] = MASK_ID
    return ids, mask, labels, int(mask.sum())


def ours_packing(case: dict, batch):
    """What our collators hand the model with each batch (built on the host, outside the timed step)."""
    ids, mask, labels, _ = batch
    selected = {"train": labels != -100, "classify": first_tokens(ids), "fill_mask": ids == MASK_ID}[case["kind"]]
    return pack_tokens(mask, selected)


def make_step(impl: str, model, case: dict, batch, device: str, precision: str, hf_optimizer: str = "fused"):
    packing = ours_packing(case, batch).to(device) if impl == "ours" else None
    ids, mask, labels, _ = (t.to(device) if torch.is_tensor(t) else t for t in batch)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                if precision == "bf16-mixed" else nullcontext())
    kind = case["kind"]
    if kind == "train":
        model.train()
        # ours: the fused AdamW kernel, as `litgpt pretrain` uses it. HF: by default the same, which is HF Trainer's
        # default optimizer with torch >= 2.8 ("adamw_torch_fused"); `--hf-optimizer torch-default` gives it
        # `torch.optim.AdamW` with default arguments instead (the for-loop path on CPU)
        fused = impl == "ours" or hf_optimizer == "fused"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01,
                                      fused=True if fused else None)

        def step():
            with autocast:
                if impl == "ours":
                    loss = model(ids, mask, labels=labels, packing=packing)
                else:
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step.optimizer = optimizer
        return step

    model.eval()
    if kind == "classify":
        def step():
            with torch.inference_mode(), autocast:
                if impl == "ours":
                    return model(ids, mask, packing=packing)
                return model(input_ids=ids, attention_mask=mask).logits
        return step

    def step():  # fill-mask: scores at the <mask> positions
        with torch.inference_mode(), autocast:
            if impl == "ours":
                hidden = model.roberta.hidden_at(ids, mask, None, packing=packing)
                logits = model.lm_head(hidden, model.roberta.wte.weight)
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits[ids == MASK_ID]
            return logits.float().softmax(-1).topk(5)
    return step


def model_flops(case: dict, batch, layers: int, C: int = 768, V: int = VOCAB) -> float:
    """Nominal FLOPs of one step, the same number for both implementations (so MFU ratios equal speed ratios):
    2 FLOPs per multiply-add, x3 for a training step (forward + backward). The encoder counts every real token:
    12 C^2 multiply-adds per token and layer for the projections and FFN, 2 C n per token for attention over a
    sequence of n real tokens. The head counts only what the task reads: the LM head (C^2 + C V) at the masked
    positions (A-C) or the <mask> positions (E), the classifier's dense layer at <s> (D)."""
    ids, mask, labels, tokens = batch
    lengths = mask.sum(dim=1).double()
    encoder = layers * (12 * C * C * tokens + 2 * C * float((lengths ** 2).sum()))
    if case["kind"] == "train":
        head, passes = int((labels != -100).sum()) * (C * C + C * V), 3
    elif case["kind"] == "fill_mask":
        head, passes = int((ids == MASK_ID).sum()) * (C * C + C * V), 1
    else:
        head, passes = ids.size(0) * C * C, 1
    return 2.0 * passes * (encoder + head)


def peak_tflops(args) -> float:
    """The card's dense peak for MFU: `--peak-tflops`, else what `litgpt pretrain` assumes for the device and
    precision (`litgpt.progress.peak_flops`: bf16 tensor cores for bf16-mixed); 0 = unknown."""
    if args.peak_tflops:
        return args.peak_tflops
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    return (peak_flops(torch.device(args.device), dtype) or 0) / 1e12


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(name: str, args, models: dict) -> dict:
    """Alternates ours and HF for `rounds` rounds; each round times `iters` steps after the warmup. Models are
    built once per (implementation, kind) and kept in `models`, so cases of one kind share a compiled model."""
    case = CASES[name]
    batch = make_batch(case)
    steps = {}
    for impl in ("ours", "hf"):
        key = (impl, case["kind"])
        if key not in models:
            models[key] = build(impl, case["kind"], args.layers, args.device, args.attention_dropout)
            if args.compile == "both" or (args.compile == "ours" and impl == "ours"):
                # dynamic shapes: one compilation serves every batch size and length of this kind
                if impl == "ours" and case["kind"] == "fill_mask":  # its step calls hidden_at, not forward
                    models[key].roberta.hidden_at = torch.compile(models[key].roberta.hidden_at, dynamic=True)
                else:
                    models[key] = torch.compile(models[key], dynamic=True)
        steps[impl] = make_step(impl, models[key], case, batch, args.device, args.precision, args.hf_optimizer)
        for _ in range(args.warmup):
            steps[impl]()
        sync(args.device)
    times = {"ours": [], "hf": []}
    for r in range(args.rounds):
        order = ("ours", "hf") if r % 2 == 0 else ("hf", "ours")
        for impl in order:
            sync(args.device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                steps[impl]()
            sync(args.device)
            times[impl].append((time.perf_counter() - t0) / args.iters)
    tokens = batch[3]
    result = {"case": name, "batch": f"{case['batch']}x{case['seq']}" + (" ragged" if case["ragged"] else ""),
              "real_tokens": tokens, "compiled": args.compile}
    for impl in ("ours", "hf"):
        med = statistics.median(times[impl])
        result[f"{impl}_s_per_step"] = med
        result[f"{impl}_tokens_per_s"] = tokens / med
    result["ratio"] = result["hf_s_per_step"] / result["ours_s_per_step"]
    result["model_tflop_per_step"] = model_flops(case, batch, args.layers) / 1e12
    peak = peak_tflops(args)
    if peak:
        result["peak_tflops"] = peak
        for impl in ("ours", "hf"):
            result[f"{impl}_mfu"] = result["model_tflop_per_step"] / result[f"{impl}_s_per_step"] / peak
    if not args.no_memory:
        for impl in ("ours", "hf"):
            result[f"{impl}_peak_mib"] = step_memory_mib(steps[impl], models[(impl, case["kind"])], args.device)
    return result


def persistent_bytes(model, optimizer=None) -> int:
    """Bytes held between steps: parameters, buffers and the optimizer's state (each storage counted once)."""
    tensors = list(model.parameters()) + list(model.buffers())
    if optimizer is not None:
        tensors += [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def step_memory_mib(step, model, device: str) -> float:
    """The peak memory of one step in MiB: what the model and optimizer hold between steps plus the most the step
    allocates on top of what was allocated before it, so the other model alive in this process never counts. On
    CUDA from the caching allocator's peak; on CPU from the profiler's record of every allocation and free (RSS
    would mostly show glibc's caching, not the model's needs)."""
    held = persistent_bytes(model, getattr(step, "optimizer", None))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (held + torch.cuda.max_memory_allocated() - before) / 2**20
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return (held + peak) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="A,B,C,D,E", help="comma-separated subset of A,B,C,D,E")
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (roberta-base has 12)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    parser.add_argument("--iters", type=int, default=3, help="steps timed per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 step, 1 warmup step")
    parser.add_argument("--compile", nargs="?", const="both", default="none", choices=["none", "ours", "both"],
                        help="torch.compile both models (--compile), only ours (against HF's eager model), or none")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the device's peak TFLOP/s for MFU (CUDA: looked up from the device name if not given)")
    parser.add_argument("--hf-optimizer", default="fused", choices=["fused", "torch-default"],
                        help="HF's AdamW: fused (HF Trainer's default) or torch.optim.AdamW's defaults")
    parser.add_argument("--shapes", default="", help="case A at these sizes instead, e.g. 4x512,32x512 (GPU runs)")
    parser.add_argument("--ragged", default="", help="case C at these sizes instead, e.g. 32x512: 32 sequences of "
                        "16..512 tokens")
    parser.add_argument("--attention-dropout", type=float, default=0.1,
                        help="both models' attention dropout (HF's default 0.1; litgpt's variable-length CUDA "
                        "kernel trains only without it)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.iters, args.warmup = 3, 1, 1
    added = add_cases(args.shapes, args.ragged)
    torch.set_grad_enabled(True)

    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    # a case given at other sizes runs at those instead
    names = [n for n in names if not any(a.startswith(n) for a in added)] + added
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--cases {','.join(unknown)}: expected some of A,B,C,D,E")
    print(f"# device={args.device} precision={args.precision} layers={args.layers} threads={torch.get_num_threads()}"
          f" torch={torch.__version__} compile={args.compile} hf_optimizer={args.hf_optimizer}"
          f" attention_dropout={args.attention_dropout} peak_tflops={peak_tflops(args) or 'unknown'}", flush=True)
    results, models = [], {}
    for name in names:
        res = time_case(name, args, models)
        results.append(res)
        print(json.dumps(res), flush=True)

    print()
    mfu = any("ours_mfu" in r for r in results)
    header = "| case | batch | ours tok/s | HF tok/s | ours/HF | ours peak MiB | HF peak MiB |"
    print(header + (" ours MFU | HF MFU |" if mfu else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|" if mfu else ""))
    for r in results:
        row = (f"| {r['case']} | {r['batch']} | {r['ours_tokens_per_s']:,.0f} | {r['hf_tokens_per_s']:,.0f} | "
               f"{r['ratio']:.2f}x | {r.get('ours_peak_mib', float('nan')):,.0f} | "
               f"{r.get('hf_peak_mib', float('nan')):,.0f} |")
        if mfu:
            row += f" {r.get('ours_mfu', float('nan')):.1%} | {r.get('hf_mfu', float('nan')):.1%} |"
        print(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

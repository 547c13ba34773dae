"""The report of `benchmarks/gpu_check.sh`: every stage's figures in `OUT/gpu_check.json`, the tables and the
targets of the accelerator check in `OUT/gpu_check.md`.

    python benchmarks/gpu_report.py OUT WORK
"""

import csv
import json
import re
import statistics
import sys
from pathlib import Path

# the targets, against HF's eager model in the same run
TARGETS = {"A at 32x512, ours compiled": 1.5, "ragged C, ours compiled": 2.5, "MFU, ours compiled": 0.45,
           "pretrain rate / benchmark rate": 0.9}


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def pretrain_rates(work: Path) -> dict:
    """tokens/s and MFU of `litgpt pretrain`'s log windows, the first (compilation, warmup) left out."""
    files = sorted((work / "pretrain" / "logs").rglob("metrics.csv"))
    if not files:
        return {}
    rows = [r for r in csv.DictReader(files[-1].open()) if r.get("tokens_per_sec")]
    steady = rows[1:] or rows
    result = {"windows": len(rows), "tokens_per_s": statistics.median(float(r["tokens_per_sec"]) for r in steady)}
    if steady and steady[0].get("mfu"):
        result["mfu_nominal_config"] = statistics.median(float(r["mfu"]) for r in steady)
    return result


def table(results) -> list:
    lines = ["| case | batch | ours tok/s | HF tok/s | ours/HF | ours MFU | HF MFU | ours peak MiB | HF peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for r in results or []:
        lines.append(f"| {r['case']} | {r['batch']} | {r['ours_tokens_per_s']:,.0f} | {r['hf_tokens_per_s']:,.0f} | "
                     f"{r['ratio']:.2f}x | {r.get('ours_mfu', nan):.1%} | {r.get('hf_mfu', nan):.1%} | "
                     f"{r.get('ours_peak_mib', nan):,.0f} | {r.get('hf_peak_mib', nan):,.0f} |")
    return lines


def main(out: Path, work: Path) -> None:
    stages = {}
    if (out / "stages.txt").is_file():
        for line in (out / "stages.txt").read_text().splitlines():
            name, rc, seconds = re.match(r"(\S+) rc=(\d+) seconds=(\d+)", line).groups()
            stages[name] = {"rc": int(rc), "seconds": int(seconds)}
    eager, compiled = load(work / "bench_eager.json"), load(work / "bench_compiled.json")
    finetune = load(work / "finetune.json")
    pretrain = pretrain_rates(work)
    tests = ""
    if (out / "cuda_tests.log").is_file():
        summary = [line for line in (out / "cuda_tests.log").read_text().splitlines() if " in " in line]
        tests = summary[-1].strip("= ") if summary else ""

    checks = {}
    if compiled:
        training_a = [r for r in compiled if r["case"].startswith("A")]
        largest_a = max(training_a, key=lambda r: r["real_tokens"]) if training_a else None
        ragged = next((r for r in compiled if r["case"].startswith("C")), None)
        if largest_a:
            checks["A at 32x512, ours compiled"] = largest_a["ratio"]
            if "ours_mfu" in largest_a:
                checks["MFU, ours compiled"] = largest_a["ours_mfu"]
            if pretrain:
                rate = largest_a["ours_tokens_per_s"]
                checks["pretrain rate / benchmark rate"] = pretrain["tokens_per_s"] / rate
                pretrain["benchmark_tokens_per_s"] = rate
                if largest_a.get("peak_tflops"):  # MFU as the benchmark counts a step's FLOPs
                    per_token = largest_a["model_tflop_per_step"] / largest_a["real_tokens"]
                    pretrain["mfu_benchmark_count"] = pretrain["tokens_per_s"] * per_token / largest_a["peak_tflops"]
        if ragged:
            checks["ragged C, ours compiled"] = ragged["ratio"]

    report = {"stages": stages, "bench_eager": eager, "bench_compiled": compiled, "finetune": finetune,
              "pretrain": pretrain,
              "cuda_tests": tests, "checks": {k: {"value": v, "target": TARGETS[k], "met": v >= TARGETS[k]}
                                              for k, v in checks.items()}}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    peak = next((r.get("peak_tflops") for r in (compiled or eager or []) if r.get("peak_tflops")), None)
    md = ["# gpu_check", "", f"peak assumed for MFU: {peak or 'unknown'} TFLOP/s", "",
          "| stage | status | seconds |", "|---|---|---|"]
    for name, stage in stages.items():
        status = "ok" if stage["rc"] == 0 else f"FAILED (rc {stage['rc']})"
        md.append(f"| {name} | {status} | {stage['seconds']} |")
    md += ["", "## Benchmark, both eager", ""] + table(eager)
    md += ["", "## Benchmark, ours compiled (HF eager)", ""] + table(compiled)
    md += ["", "## Finetuning step by head (ragged batch)", "",
           "| head | implementation | examples/s | real tokens/s | vs HF |", "|---|---|---|---|---|"]
    md += [f"| {r['head']} | {r['impl']} | {r['examples_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | {r['vs_hf']:.2f}x |"
           for r in finetune or []]
    md += ["", "## Pretraining", "", json.dumps(pretrain), "", "## CUDA tests", "", tests or "(no summary)", "",
           "## Targets", "", "| check | value | target | met |", "|---|---|---|---|"]
    md += [f"| {k} | {c['value']:.3g} | {c['target']} | {'yes' if c['met'] else 'NO'} |"
           for k, c in report["checks"].items()]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

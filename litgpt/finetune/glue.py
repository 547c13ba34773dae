"""`litgpt finetune --glue TASK|all`: finetune on GLUE tasks in GLUE's own layout and report the official metrics.

Each task (and seed) is one ordinary classification run (`classification.finetune`) into
`output_dir/<task folder>[/seed-S]`; the task decides the labels, the problem type and the metric that chooses the
epoch (`litgpt.data.glue.GLUE_TASKS`). Every task's files and output folder are checked before the first run starts.

GLUE's test labels are not public, so its dev split is what papers report, and they also choose the epoch on it,
which flatters the figure. By default the epoch is chosen on a held-out share of train (`--val_fraction`, 0.1) and
dev is scored once; `--select_on dev` reproduces the papers' practice, and the table says which was done. At the end
one table gives each task's dev metrics, the median over `--seeds` with the spread (max - min), as papers report
them; the same numbers go to `output_dir/glue_results.json`.
"""

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Tuple

from litgpt.args import FinetuneArgs
from litgpt.data.classification import ClassificationDataModule
from litgpt.data.glue import GLUE_TASKS, glue_task, tasks_present
from litgpt.export import check_output_dir
from litgpt.finetune.classification import finetune
from litgpt.utils import UsageError, atomic_write_text, check_writable_dir

RESULTS_FILE = "glue_results.json"


DEFAULT_VAL_FRACTION = 0.1


def run_glue(args: FinetuneArgs) -> None:
    data_dir, out = Path(args.data_dir), Path(args.output_dir)
    select_on = args.select_on or "validation"
    val_fraction = None if select_on == "dev" else args.val_fraction or DEFAULT_VAL_FRACTION
    if args.glue.lower() == "all":
        names = tasks_present(data_dir)
        if not names:
            raise UsageError(f"--glue all: no GLUE task folder with a train.tsv in {data_dir}; expected GLUE's layout "
                             f"({', '.join(t.folder + '/train.tsv' for t in GLUE_TASKS.values())})")
    else:
        names = [next(k for k, t in GLUE_TASKS.items() if t is glue_task(args.glue))]
    check_glue_output(out, data_dir)

    runs: List[Tuple[str, FinetuneArgs, ClassificationDataModule]] = []
    for name in names:  # read every task and check every output folder before the first run
        task = GLUE_TASKS[name]
        data = ClassificationDataModule(data_dir, task.num_labels, label_names=task.labels,
                                        num_workers=args.num_workers, problem_type=task.problem_type, glue_task=name,
                                        val_fraction=val_fraction, seed=args.seed, select_on=select_on)
        for k in range(args.seeds):
            run_dir = out / task.folder if args.seeds == 1 else out / task.folder / f"seed-{args.seed + k}"
            check_output_dir(run_dir, data_dir, resume=False)
            run_args = replace(args, output_dir=run_dir, seed=args.seed + k, glue=name, num_labels=task.num_labels,
                               problem_type=task.problem_type, label_names=task.labels, seeds=1,
                               val_fraction=val_fraction, select_on=select_on)
            runs.append((name, run_args, data))

    wall: Dict[str, float] = {}
    for name, run_args, data in runs:
        print(f"== GLUE {GLUE_TASKS[name].folder}, seed {run_args.seed}: {run_args.output_dir}", flush=True)
        t0 = time.perf_counter()
        finetune(run_args, data, metric=GLUE_TASKS[name].metrics[0])
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - t0

    results = summarize(names, [(name, Path(a.output_dir)) for name, a, _ in runs], wall)
    chosen_on = ("the epoch chosen on dev itself (the papers' practice; the figures are optimistic)"
                 if select_on == "dev" else f"the epoch chosen on {val_fraction:g} of train held out; dev scored once")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESULTS_FILE, json.dumps({"seeds": [args.seed + k for k in range(args.seeds)],
                                                      "selected_on": select_on, "chosen": chosen_on,
                                                      "tasks": results}, indent=2) + "\n")
    print(format_table(results, args.seeds, chosen_on))
    print(f"Saved {out / RESULTS_FILE}")


def check_glue_output(out: Path, data_dir: Path) -> None:
    """`output_dir` holds only what GLUE runs write (task folders, the results file), or is new or empty."""
    check_writable_dir(out, "--output_dir")
    if out.resolve() == data_dir.resolve() or data_dir.resolve() in out.resolve().parents:
        raise UsageError(f"--output_dir {out}: inside --data_dir {data_dir}, which is never written; pick another")
    ours = {t.folder for t in GLUE_TASKS.values()} | {RESULTS_FILE}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if foreign:
        raise UsageError(f"--output_dir {out}: holds {foreign[0]!r}, not a GLUE run's; refusing to write into it")


def summarize(names: List[str], runs: List[Tuple[str, Path]], wall: Dict[str, float]) -> Dict[str, Any]:
    """Per task and metric (MNLI's mismatched dev set as `dev_mismatched/accuracy`): each seed's value, the median
    and the spread."""
    results: Dict[str, Any] = {}
    for name in names:
        task = GLUE_TASKS[name]
        reports = [json.loads((path / "metrics.json").read_text()) for n, path in runs if n == name]
        values: Dict[str, List[float]] = {m: [r[m] for r in reports] for m in task.metrics}
        for extra in reports[0].get("extra_tests", {}):
            values[f"{extra}/{task.metrics[0]}"] = [r["extra_tests"][extra][task.metrics[0]] for r in reports]
        results[task.folder] = {
            "metrics": {m: {"median": statistics.median(v), "spread": max(v) - min(v), "values": v}
                        for m, v in values.items()},
            "seconds": round(wall[name], 1),
        }
    return results


def format_table(results: Dict[str, Any], seeds: int, chosen_on: str) -> str:
    title = (f"GLUE dev results ({chosen_on})" + (f": median of {seeds} seeds (spread: max - min)"
                                                  if seeds > 1 else ""))
    lines = [title, "| task | metric | dev" + (" | spread" if seeds > 1 else "") + " | seconds |",
             "|---|---|---" + ("|---" if seeds > 1 else "") + "|---|"]
    for task, result in results.items():
        for i, (metric, v) in enumerate(result["metrics"].items()):
            spread = f" | {v['spread']:.4f}" if seeds > 1 else ""
            seconds = f"{result['seconds']:.1f}" if i == 0 else ""
            lines.append(f"| {task if i == 0 else ''} | {metric} | {v['median']:.4f}{spread} | {seconds} |")
    return "\n".join(lines)

"""`litgpt finetune`: one entry point above every task. It checks the flags, then hands the run to `--glue`'s
runner (`glue.py`, which runs classification tasks) or to the task's own module (`classification.py`, `ner.py`,
`qa.py`); all of them train through the one loop in `loop.py`."""

import importlib
from dataclasses import replace
from pathlib import Path

from litgpt.args import FinetuneArgs, check_finetune_args


def setup(args: FinetuneArgs) -> None:
    from litgpt.distributed import check_world
    from litgpt.export import STATE_FILE

    check_finetune_args(args)
    args = replace(args, devices=check_world(args.devices, args.num_nodes, args.dist_timeout))
    if args.resume == "auto":  # an unfinished run in output_dir (a group its launcher restarted) continues
        out = Path(args.output_dir)
        args = replace(args, resume=(out / STATE_FILE).is_file() and not (out / "metrics.json").is_file())
    if args.glue is not None:
        from litgpt.finetune.glue import run_glue

        return run_glue(args)
    importlib.import_module(f"litgpt.finetune.{args.task}").setup(args)

"""`litgpt finetune`: one entry point above every task. It checks the flags, then hands the run to `--glue`'s
runner (`glue.py`, which runs classification tasks) or to the task's own module (`classification.py`, `ner.py`,
`qa.py`); all of them train through the one loop in `loop.py`."""

import importlib

from litgpt.args import FinetuneArgs, check_finetune_args


def setup(args: FinetuneArgs) -> None:
    check_finetune_args(args)
    if args.glue is not None:
        from litgpt.finetune.glue import run_glue

        return run_glue(args)
    importlib.import_module(f"litgpt.finetune.{args.task}").setup(args)

"""Finetune RoBERTa for text classification.

    python scripts/finetune_roberta.py --data_dir data/test_data_finetune --output_dir out/roberta_finetuned
    python scripts/finetune_roberta.py --help

A thin entry point over `litgpt/finetune/classification.py` (the same as `litgpt finetune`).
"""

import importlib.util
import os
import sys
from pathlib import Path


def main(argv=None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if importlib.util.find_spec("litgpt") is None:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    argv = sys.argv[1:] if argv is None else argv
    run_command(setup, argv, prog="finetune_roberta.py")


if __name__ == "__main__":
    main()

"""`litgpt SUBCOMMAND ...`: one dict from subcommand name to function, handed to jsonargparse.

Functions are imported only when their subcommand runs, so `litgpt fill_mask` does not pay for pretraining imports.
"""

import importlib
import os
import sys
from typing import Callable, List, Optional

COMMANDS = {
    "pretrain": "litgpt.pretrain:setup",
    "finetune": "litgpt.finetune.classification:setup",
    "fill_mask": "litgpt.fill_mask:main",
    "classify": "litgpt.classify:main",
    "train_tokenizer": "litgpt.tokenizer:train_tokenizer_command",
    "download": "litgpt.scripts.download:download_from_hub",
    "convert_to_litgpt": "litgpt.scripts.convert_hf_checkpoint:convert_hf_checkpoint",
    "convert_from_litgpt": "litgpt.scripts.convert_lit_checkpoint:convert_lit_checkpoint",
}


def _load(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def run_command(fn: Callable, args: List[str], prog: str) -> None:
    """Runs `fn` through jsonargparse; a `UsageError` or a bad flag ends with one line on stderr and exit code 2."""
    from jsonargparse import CLI

    from litgpt.utils import UsageError

    try:
        CLI(fn, args=args, as_positional=True, prog=prog)
    except UsageError as ex:
        print(f"error: {ex}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: litgpt SUBCOMMAND [--help] ...\n\nsubcommands:\n  " + "\n  ".join(COMMANDS))
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown subcommand {command!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    if rest == ["list"] and command in ("pretrain", "finetune", "download"):
        from litgpt.config import name_to_config

        print("\n".join(sorted(name_to_config)))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_command(_load(COMMANDS[command]), rest, prog=f"litgpt {command}")


if __name__ == "__main__":
    main()

"""`litgpt SUBCOMMAND ...`: one dict from subcommand name to function, handed to jsonargparse.

Functions are imported only when their subcommand runs, so `litgpt fill_mask` does not pay for pretraining imports.
"""

import argparse
import dataclasses
import importlib
import os
import sys
import typing
from typing import Any, Callable, Dict, List, Optional

# name -> (function, what it does in one line for `litgpt --help`)
COMMANDS = {
    "pretrain": ("litgpt.pretrain:setup", "pretrain RoBERTa with masked (or causal) language modelling"),
    "finetune": ("litgpt.finetune:setup",
                 "finetune a checkpoint: classification or regression (--task classification), NER, QA, embed"),
    "fill_mask": ("litgpt.fill_mask:main", "predict the tokens behind <mask> in a text"),
    "classify": ("litgpt.classify:main", "label texts with a finetuned classifier"),
    "ner": ("litgpt.ner:main", "tag the entities of texts with a finetuned token classifier"),
    "qa": ("litgpt.qa:main", "answer a question from a context with a finetuned QA model"),
    "serve": ("litgpt.serve:main", "serve a checkpoint over HTTP with dynamic batching (its own task, or embed)"),
    "embed": ("litgpt.embed:main", "sentence vectors from any checkpoint's encoder (a few texts, or a whole file)"),
    "mine": ("litgpt.mine:mine", "hard negatives for (anchor, positive) pairs, found by an embedding model"),
    "export": ("litgpt.onnx_export:main", "export a checkpoint to ONNX (fp32 or int8) for fast CPU inference"),
    "train_tokenizer": ("litgpt.train_tokenizer:train_tokenizer_command",
                        "train a BPE or WordPiece tokenizer on text files"),
    "download": ("litgpt.scripts.download:download_from_hub", "fetch a checkpoint from the HuggingFace Hub"),
    "convert_to_litgpt": ("litgpt.scripts.convert_hf_checkpoint:convert_hf_checkpoint",
                          "convert a HuggingFace RoBERTa or BERT folder into a litgpt checkpoint"),
    "convert_from_litgpt": ("litgpt.scripts.convert_lit_checkpoint:convert_lit_checkpoint",
                            "convert a litgpt checkpoint into a HuggingFace RoBERTa or BERT folder"),
}


def _load(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def settings_class(fn: Callable) -> Optional[type]:
    """A command may take one dataclass of settings (its fields are the flags), as `finetune` takes `FinetuneArgs`."""
    hints = [t for name, t in typing.get_type_hints(fn).items() if name != "return"]
    return hints[0] if len(hints) == 1 and dataclasses.is_dataclass(hints[0]) else None


def flag_types(fn: Callable) -> Dict[str, Any]:
    return typing.get_type_hints(settings_class(fn) or fn)


def normalize_argv(fn: Callable, args: List[str]) -> List[str]:
    """Makes three common shell habits work with jsonargparse:

    - a bare boolean flag (`--json`, `--use_agnews`) means `--json true`;
    - a list-of-strings flag may be repeated (`--text a --text b`); its values are passed as one JSON list, so each
      text stays a string even when it looks like YAML (`--text "Note: <mask>"`);
    - a mapping flag takes its keys one by one (`--model_config.n_layer 2 --model_config.n_embd 128`); they are
      passed as one mapping, the values read as YAML (numbers, booleans, null).
    """
    import json

    import yaml

    hints = flag_types(fn)
    bools = {f"--{n}" for n, t in hints.items() if t is bool or bool in typing.get_args(t)}
    lists = {f"--{n}" for n, t in hints.items() if t in (List[str], Optional[List[str]])}
    mappings = {f"--{n}" for n, t in hints.items() if t == Dict[str, Any] or Dict[str, Any] in typing.get_args(t)}
    out: List[str] = []
    collected: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        parent, dot, key = flag.partition(".")
        if parent in mappings and dot and key:
            if not eq and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            if parent not in collected:
                collected[parent] = {}
                out.extend([parent, None])
            collected[parent][key] = yaml.safe_load(value) if value else value
        elif flag in lists:
            if not eq:
                if i + 1 >= len(args):
                    out.append(arg)  # let jsonargparse report the missing value
                    i += 1
                    continue
                value = args[i + 1]
                i += 1
            if flag not in collected:
                collected[flag] = []
                out.extend([flag, None])  # placeholder, filled in below
            collected[flag].append(value)
        elif arg in bools and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.extend([arg, "true"])
        else:
            out.append(arg)
        i += 1
    for flag, values in collected.items():
        out[out.index(flag) + 1] = json.dumps(values)
    return out


def known_flags(fn: Callable) -> List[str]:
    """Every `--flag` of a command, nested dataclass fields included (`--train.micro_batch_size`)."""
    flags = []
    for name, hint in flag_types(fn).items():
        if name == "return":
            continue
        flags.append(f"--{name}")
        types = [hint, *typing.get_args(hint)]
        for t in types:
            if dataclasses.is_dataclass(t):
                flags += [f"--{name}.{f.name}" for f in dataclasses.fields(t)]
    return flags


def parse_error_line(fn: Callable, message: str) -> str:
    """jsonargparse's complaint as one line; an unknown flag gets the closest known one."""
    import difflib
    import re

    message = " ".join(message.split())
    unknown = re.search(r"unrecognized arguments: (--[\w.\-]+)", message)
    if unknown:
        flag = unknown.group(1)
        close = difflib.get_close_matches(flag, known_flags(fn), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; see --help for the flags"
        return f"unknown flag {flag}{hint}"
    return f"{message[:300]} (see --help)"


def run_command(fn: Callable, args: Optional[List[str]], prog: str) -> None:
    """Runs `fn` through jsonargparse; a `UsageError` or a bad flag ends with one line on stderr and exit code 2."""
    from jsonargparse import CLI

    from litgpt.utils import RunError, UsageError

    args = normalize_argv(fn, sys.argv[1:] if args is None else args)
    settings = settings_class(fn)
    try:
        if settings is None:
            CLI(fn, args=args, as_positional=True, prog=prog, exit_on_error=False)
        else:
            fn(CLI(settings, args=args, as_positional=True, prog=prog, exit_on_error=False))
    except argparse.ArgumentError as ex:
        print(f"error: {parse_error_line(fn, str(ex))}", file=sys.stderr)
        sys.exit(2)
    except UsageError as ex:
        print(f"error: {ex}", file=sys.stderr)
        sys.exit(2)
    except RunError as ex:
        print(f"error: {ex}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
        print("usage: litgpt SUBCOMMAND [--help] ...\n\nsubcommands:\n" + "\n".join(lines))
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown subcommand {command!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    # `litgpt download list` is handled by download_from_hub: it prints the HuggingFace repo ids
    if rest == ["list"] and command in ("pretrain", "finetune"):
        from litgpt.config import name_to_config

        print("\n".join(sorted(name_to_config)))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_command(_load(COMMANDS[command][0]), rest, prog=f"litgpt {command}")


if __name__ == "__main__":
    main()

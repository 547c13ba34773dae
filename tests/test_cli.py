from typing import List, Optional

from conftest import assert_usage_error, run_cli

from litgpt.__main__ import normalize_argv


def _fn(path: str, text: Optional[List[str]] = None, json: bool = False, top_k: int = 5) -> None:
    pass


def test_normalize_argv_bare_bools_and_repeated_lists():
    argv = ["ckpt", "--text", "Note: the <mask>.", "--json", "--text=b", "--top_k", "3"]
    assert normalize_argv(_fn, argv) == ["ckpt", "--text", '["Note: the <mask>.", "b"]', "--json", "true",
                                         "--top_k", "3"]
    assert normalize_argv(_fn, ["ckpt", "--json", "false"]) == ["ckpt", "--json", "false"]
    assert normalize_argv(_fn, ["ckpt", "--json"]) == ["ckpt", "--json", "true"]


def test_unknown_subcommand_and_list():
    proc = run_cli("frobnicate")
    assert assert_usage_error(proc.returncode, proc.stderr).startswith("error: unknown subcommand")
    proc = run_cli("pretrain", "list")
    assert proc.returncode == 0 and "roberta-base" in proc.stdout.split()


def test_pretrain_help_describes_every_flag(capsys):
    import pytest

    from litgpt.__main__ import main

    with pytest.raises(SystemExit) as ex:
        main(["pretrain", "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for text in ("Sequences per forward/backward pass", "Validate every this many optimizer steps",
                 "continues from the newest", "bf16-mixed"):
        assert text in out

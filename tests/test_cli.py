from typing import Any, Dict, List, Optional

from conftest import TOY, assert_usage_error, expect_usage_error, pretrain_args, run_cli

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


def test_help_says_what_each_subcommand_does(capsys):
    import pytest

    from litgpt.__main__ import COMMANDS, main

    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name in COMMANDS:
        line = next(line for line in lines if line.split()[:1] == [name])
        assert len(line.split()) > 3, line  # the name and a description


def test_misspelled_flag_is_one_line_with_the_closest_flag(capsys):
    line = expect_usage_error(capsys, ["pretrain", "--train.micro_bach_size", "4"])
    assert line == "error: unknown flag --train.micro_bach_size; did you mean --train.micro_batch_size?"
    line = expect_usage_error(capsys, ["finetune", "--data_dri", "x"])
    assert line.endswith("did you mean --data_dir?")
    expect_usage_error(capsys, ["pretrain", "--train.micro_batch_size", "four"], "train.micro_batch_size", "four")


def test_missing_local_path_is_no_such_folder_not_a_download_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    line = expect_usage_error(capsys, ["fill_mask", "out/pretrain-dem", "--text", "a <mask>"], "no such file or folder")
    assert "download" not in line
    line = expect_usage_error(capsys, ["finetune", "--data_dir", TOY, "--output_dir", tmp_path / "o",
                                       "--model_name", "out/pretrain-dem"], "no such file or folder")
    assert "download" not in line and "Hub" not in line
    # a registry name that was never downloaded still says how to get it
    expect_usage_error(capsys, ["fill_mask", "roberta-base", "--text", "a <mask>"],
                       "litgpt download FacebookAI/roberta-base")


def test_model_config_overrides_the_chosen_registry_entry(tmp_path, capsys):
    from litgpt.config import Config

    argv = normalize_argv(_fn_with_config, ["--model_config.vocab_size", "8192", "--model_config.causal", "true"])
    assert argv == ["--model_config", '{"vocab_size": 8192, "causal": true}']
    config = Config.resolve("roberta-small", {"vocab_size": 8192})
    assert (config.n_layer, config.n_embd, config.vocab_size, config.name) == (4, 256, 8192, "roberta-small")
    assert Config.resolve("roberta-small") == Config.from_name("roberta-small")
    expect_usage_error(capsys, ["pretrain", "--model_name", "roberta-small", "--model_config.n_layr", "2",
                                "--out_dir", tmp_path / "o", "--train.max_steps", "1"],
                       "did you mean --model_config.n_layer?", untouched=tmp_path)
    expect_usage_error(capsys, ["pretrain", "--model_config.n_layer", "two", "--out_dir", tmp_path / "o",
                                "--train.max_steps", "1"], "expected a number", untouched=tmp_path)


def _fn_with_config(model_config: Optional[Dict[str, Any]] = None) -> None:
    pass


def test_pretrain_logs_the_real_size_and_silences_library_chatter(tmp_path):
    proc = run_cli(*pretrain_args(tmp_path / "data", tmp_path / "out", "--model_name", "roberta-small",
                                  "--model_config.vocab_size", "1000", "--train.max_steps", "4",
                                  "--eval.initial_validation", "false"))
    assert proc.returncode == 0, proc.stderr
    assert "Model roberta-small (4 layers, 256 wide)" in proc.stdout
    assert "measured over the first 3 steps" in proc.stdout and "projected duration of the run" in proc.stdout
    assert "Seed set to" not in proc.stdout + proc.stderr


def test_roberta_base_on_a_cpu_names_the_faster_choices_once():
    from types import SimpleNamespace

    import torch

    from litgpt.config import Config
    from litgpt.progress import slow_start_hint

    printed = []
    cpu = SimpleNamespace(device=torch.device("cpu"), print=printed.append)
    slow_start_hint(cpu, Config.from_name("roberta-base"), 124_697_433)
    assert len(printed) == 1
    assert "config_hub/pretrain/cpu-demo.yaml" in printed[0] and "roberta-small" in printed[0] and "GPU" in printed[0]
    slow_start_hint(cpu, Config.from_name("roberta-small"), 5_364_736)
    slow_start_hint(SimpleNamespace(device=torch.device("cuda"), print=printed.append),
                    Config.from_name("roberta-base"), 124_697_433)
    assert len(printed) == 1

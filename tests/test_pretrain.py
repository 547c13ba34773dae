import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    assert_same_run,
    cli_error,
    expect_usage_error,
    final_weights,
    litgpt_command,
    max_weight_diff,
    pretrain_args,
    run_cli,
)

from litgpt.config import Config


def read_metrics(out_dir: Path):
    files = sorted((out_dir / "logs").rglob("metrics.csv"))
    assert files, f"no metrics.csv under {out_dir / 'logs'}"
    with open(files[-1]) as fp:
        return list(csv.DictReader(fp))


def column(rows, name):
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]


def tiny_run(data_dir, out_dir, *extra):
    """A short roberta-tiny pretraining run: `pretrain_args` with a fast learning-rate warmup and a short eval."""
    return pretrain_args(data_dir, out_dir, "--train.learning_rate", "2e-3", "--train.lr_warmup_steps", "2",
                         "--eval.max_iters", "4", *extra)


def test_seed_command_creates_data_and_checkpoints_and_loss_falls(tmp_path):
    data_dir, out_dir = tmp_path / "test_data", tmp_path / "output"
    # the seed command's flags, with a small model and token budget so it fits a CI run
    proc = run_cli("pretrain", "--model_name", "roberta-tiny", "--data_dir", data_dir, "--out_dir", out_dir,
                   "--train.global_batch_size", "32", "--train.micro_batch_size", "4",
                   "--train.max_tokens", "6000", "--train.learning_rate", "3e-3", "--train.lr_warmup_steps", "2",
                   "--train.save_interval", "4", "--eval.interval", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (data_dir / "test.txt").is_file()
    assert "Created" in proc.stdout + proc.stderr
    iters = sorted(out_dir.glob("iter-*.pt"))
    assert iters and (out_dir / "best.pt").is_file()
    for name in ("lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json"):
        assert (out_dir / "final" / name).is_file(), name
    assert (out_dir / "hyperparameters.yaml").is_file()
    assert not list(out_dir.rglob("*.tmp")), "temp files left behind"

    rows = read_metrics(out_dir)
    val = column(rows, "val_loss")
    assert len(val) >= 3 and val[0][0] == 0
    assert val[-1][1] < val[0][1] - 0.2, val
    tokens = column(rows, "tokens")
    assert tokens[-1][1] >= 6000
    # final/ is a checkpoint dir other commands read directly
    config = Config.from_file(out_dir / "final" / "model_config.yaml")
    state = torch.load(out_dir / "final" / "lit_model.pth", weights_only=True)
    assert state["roberta.wte.weight"].shape == (config.padded_vocab_size, config.n_embd)
    best = torch.load(out_dir / "best.pt", weights_only=True)
    assert abs(best["best_val_loss"] - min(v for step, v in val if step > 0)) < 1e-6


def test_sigkill_then_resume_auto_is_exact(tmp_path):
    data_dir = tmp_path / "data"
    steps = ["--train.max_steps", "24", "--train.save_interval", "2", "--train.keep_last", "3", "--eval.interval", "6",
             "--seed", "7"]
    full = tmp_path / "full"
    proc = run_cli(*tiny_run(data_dir, full, *steps))
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    child = subprocess.Popen(litgpt_command(*tiny_run(data_dir, killed, *steps)), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "iter-4.pt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    saved = sorted(killed.glob("iter-*.pt"))
    assert saved

    # what a kill in the middle of a save leaves: a temp file, which resuming clears and never reads
    (killed / ".iter-999.pt.tmp").write_bytes(b"half a checkpoint")
    proc = run_cli(*tiny_run(data_dir, killed, *steps, "--resume", "auto"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resumed from" in proc.stdout + proc.stderr
    assert not list(killed.glob(".*.tmp"))
    assert_same_run(full, killed, step=24)
    assert sorted(p.name for p in full.glob("iter-*.pt")) == ["iter-20.pt", "iter-22.pt", "iter-24.pt"]


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    cmd = litgpt_command(*tiny_run(data_dir, out_dir, "--train.max_steps", "100000", "--train.save_interval", "1000",
                                   "--eval.interval", "1000"))
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out_dir / "logs").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out[-2000:]
    saved = list(out_dir.glob("iter-*.pt"))
    assert len(saved) == 1 and "SIGTERM" in out
    assert not (out_dir / "final").exists()


def test_ddp_two_processes_match_one(tmp_path):
    config = Config.from_name("roberta-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    config.save(tmp_path / "model_config.yaml")
    data_dir = tmp_path / "data"
    common = ["--model_config", tmp_path / "model_config.yaml", "--data_dir", data_dir,
              "--train.global_batch_size", "8", "--train.micro_batch_size", "2", "--train.max_steps", "5",
              "--train.learning_rate", "2e-3", "--train.lr_warmup_steps", "2", "--train.log_interval", "1",
              "--eval.interval", "1000", "--eval.initial_validation", "false", "--accelerator", "cpu"]
    single = run_cli("pretrain", *common, "--out_dir", tmp_path / "one", "--devices", "1")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli("pretrain", *common, "--out_dir", tmp_path / "two", "--devices", "2", "--strategy", "ddp",
                  "--tokenizer_dir", tmp_path / "one")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = column(read_metrics(tmp_path / "one"), "train_loss")
    two = column(read_metrics(tmp_path / "two"), "train_loss")
    assert len(one) == len(two) == 5
    for (s1, l1), (s2, l2) in zip(one, two):
        assert s1 == s2 and abs(l1 - l2) < 1e-4, (one, two)
    assert max_weight_diff(final_weights(tmp_path / "one"), final_weights(tmp_path / "two")) < 1e-4


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--train.max_tokens", "10"], "smaller than one optimizer step"),
        (["--train.global_batch_size", "-8"], "must be a positive integer"),
        (["--resume", "true"], "nothing to resume"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, capsys, extra, message):
    out_dir = tmp_path / "out"
    args = tiny_run(tmp_path / "data", out_dir, "--train.max_tokens", "100000", *extra)
    expect_usage_error(capsys, args, message)
    assert not (tmp_path / "data").exists() and not out_dir.exists()


def test_unknown_model_and_unwritable_out_dir(tmp_path, capsys):
    expect_usage_error(capsys, ["pretrain", "--model_name", "roberta-huge", "--data_dir", tmp_path / "d", "--out_dir",
                                tmp_path / "o", "--train.max_steps", "1"], "known names", ignore_case=True)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    expect_usage_error(capsys, tiny_run(tmp_path / "d", a_file, "--train.max_steps", "1"), "not a folder")
    assert a_file.read_text() == "x"


def test_checkpoint_from_another_config_is_refused(tmp_path, capsys):
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    proc = run_cli(*tiny_run(data_dir, out_dir, "--train.max_steps", "2", "--train.save_interval", "1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = tiny_run(data_dir, out_dir, "--train.max_steps", "4", "--resume", "auto")
    args[args.index("roberta-tiny")] = "roberta-mini"
    expect_usage_error(capsys, args, "another config", untouched=out_dir)
    # an existing run is never overwritten without --resume
    expect_usage_error(capsys, tiny_run(data_dir, out_dir, "--train.max_steps", "4"), "already holds a run")


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from litgpt.model_roberta import RobertaForMaskedLM

    original = RobertaForMaskedLM.mlm_loss
    calls = {"train": 0}

    def mlm_loss(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] > 8:  # micro-batches of step 5 onwards (accumulation 2)
                loss, correct, count = out
                return loss * float("nan"), correct, count
        return out

    monkeypatch.setattr(RobertaForMaskedLM, "mlm_loss", mlm_loss)
    out_dir = tmp_path / "out"
    code, err = cli_error(capsys, tiny_run(tmp_path / "data", out_dir, "--train.max_steps", "10",
                                           "--train.save_interval", "2", "--eval.interval", "2"))
    err = err.strip()
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("error: non-finite") and "step 5" in last, err
    assert "Traceback" not in err
    assert sorted(p.name for p in out_dir.glob("iter-*.pt")) == ["iter-2.pt", "iter-4.pt"]
    best = torch.load(out_dir / "best.pt", weights_only=True)
    assert best["step"] <= 4
    assert all(torch.isfinite(v).all() for v in best["model"].values())
    assert not (out_dir / "final").exists()


def test_eta_uses_the_rate_since_the_run_started():
    """The ETA divides the time since this run started by the steps since then (a log window is one step here)."""
    from types import SimpleNamespace

    from litgpt.args import TrainArgs
    from litgpt.progress import log_progress

    printed = []
    fabric = SimpleNamespace(world_size=1, device=torch.device("cpu"), log_dict=lambda *a, **k: None,
                             print=printed.append)
    # resumed at step 10; 5 steps in 50 s since then: 10 s per step, 5 steps to go
    window = {"loss": torch.tensor(2.0), "correct": torch.tensor(1.0), "count": torch.tensor(4.0), "tokens": 512,
              "time": 10.0, "data_time": 0.0, "compute_time": 10.0, "steps": 1, "t_start": time.perf_counter() - 50,
              "tokens_at_start": 0, "steps_at_start": 10, "flops_per_token": 0, "peak_flops": None}
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e-4}])
    state = {"step": 15, "tokens": 5 * 512, "epoch": 0, "optimizer": optimizer}
    train = TrainArgs(max_steps=20, max_tokens=None)
    log_progress(fabric, state, window, train)
    assert printed[-1].endswith("ETA 0:00:50")

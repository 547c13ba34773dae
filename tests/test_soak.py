"""Soak test: pretraining on the CPU demo config, SIGKILLed every 30-90 s and resumed with `--resume auto`, must end
exactly where an uninterrupted run ends (steps, tokens, weights).

Not in the default suite: `pytest tests/test_soak.py --run-soak -s` (SOAK_MINUTES, default 20, sets its length).
"""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, assert_same_run, litgpt_command, pretrain_args

pytestmark = pytest.mark.soak
CPU_DEMO = "config_hub/pretrain/cpu-demo.yaml"


def pretrain_cmd(data_dir: Path, out_dir: Path, max_steps: int, *extra: str):
    return litgpt_command(*pretrain_args(data_dir, out_dir, "--train.max_steps", max_steps, "--train.save_interval", 5,
                                         "--train.keep_last", 3, "--train.log_interval", 50, "--eval.interval", 100,
                                         "--seed", 1234, *extra, base=("--config", ROOT / CPU_DEMO)))


def test_soak_kill_and_resume(tmp_path):
    minutes = float(os.environ.get("SOAK_MINUTES", "20"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference and the soak run share the 2 cores
    data_dir = tmp_path / "data"

    # calibrate: how many steps fit the soak's duration (two runs, so start-up time cancels out)
    times = []
    for steps in (10, 60):
        start = time.time()
        subprocess.run(pretrain_cmd(data_dir, tmp_path / f"calibrate{steps}", steps), env=env, check=True,
                       capture_output=True)
        times.append(time.time() - start)
    per_step = (times[1] - times[0]) / 50
    # kills cost a restart and the steps since the last checkpoint: aim the uninterrupted length a bit short
    max_steps = max(50, int(minutes * 60 / per_step * 0.85))
    print(f"\nsoak: {per_step:.3f} s/step -> max_steps {max_steps}")

    tokenizer = ["--tokenizer_dir", str(tmp_path / "calibrate10")]
    reference = subprocess.Popen(pretrain_cmd(data_dir, tmp_path / "reference", max_steps, *tokenizer), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out_dir = tmp_path / "soak"
    rng = random.Random(0)
    kills, started = 0, time.time()
    while True:
        resume = ["--resume", "auto"] if list(out_dir.glob("iter-*.pt")) else []
        run = subprocess.Popen(pretrain_cmd(data_dir, out_dir, max_steps, *tokenizer, *resume), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = run.communicate(timeout=rng.uniform(30, 90))
            assert run.returncode == 0, err[-2000:]
            break
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait()
            kills += 1
            print(f"soak: kill {kills} after {time.time() - started:.0f} s, "
                  f"newest checkpoint {sorted(out_dir.glob('iter-*.pt'), key=os.path.getmtime)[-1:]}")
    assert reference.wait() == 0
    elapsed = time.time() - started

    assert kills >= 1
    diff, tokens = assert_same_run(tmp_path / "reference", out_dir, step=max_steps)
    print(f"soak: survived {kills} SIGKILLs in {elapsed / 60:.1f} min; {max_steps} steps, {tokens:,} tokens,"
          f" max |weight difference| {diff:.2e}")

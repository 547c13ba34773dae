"""A simulated 2-node cluster on this machine: two launchers (torchrun with `--node_rank 0` and `1` and a c10d
rendezvous on 127.0.0.1, or a stand-in for SLURM's srun), each with 1 or 2 CPU processes talking gloo, a tiny
RoBERTa in fp32 and TextFiles data.

- The README's recipes (config_hub/pretrain/torchrun-2nodes.sh and slurm-2x8.sbatch, with tiny overrides) and its
  `fabric run` line: DDP on 2 nodes x 1, FSDP on 2 x 1 and DDP on 2 x 2 end where one process ends with the same
  global batch (loss curve, validation, final weights) and read every sequence of an epoch exactly once across the
  ranks.
- A rank SIGKILLed after a checkpoint: torchrun restarts the group, `--resume auto` continues from the newest
  iter-*.pt, and the final weights are the uninterrupted run's, bit for bit.
- Without restarts, a rank gone silent ends the others within `--dist_timeout` plus a margin, with one line.
- Finetuning on 2 nodes: the test metrics equal one process's evaluation of the same weights; a killed group resumes.
- A world that does not match `--num_nodes x --devices`, and several nodes with no launcher: one line, exit 2.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import (
    ROOT,
    demo_lines,
    expect_usage_error,
    final_weights,
    max_weight_diff,
    toy_records,
    write_files,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers in /proc")

# generous: under load a launch of two Python processes per node takes 20-60 s on 2 cores
LAUNCH_TIMEOUT = 420
RECIPE = ROOT / "config_hub" / "pretrain" / "roberta-base.yaml"
# the recipe's config (the recipes pass it first), made tiny: every run here, the 1-process reference too
TINY = ["--model_name", "roberta-tiny", "--model_config.hidden_dropout", "0",
        "--model_config.attention_dropout", "0", "--precision", "32-true", "--compile", "false",
        "--accelerator", "cpu", "--train.global_batch_size", "8", "--train.micro_batch_size", "2",
        "--train.max_seq_length", "32", "--train.max_steps", "6", "--train.learning_rate", "2e-3",
        "--train.lr_warmup_steps", "2", "--train.save_interval", "2", "--train.log_interval", "1",
        "--eval.interval", "3", "--eval.max_iters", "3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra) -> dict:
    # one thread per process: the processes of both "nodes" share 2 cores. TORCH_DISABLE_SHARE_RDZV_TCP_STORE as the
    # README and torchrun-2nodes.sh set it: without it a group that torchrun restarts can hang (pytorch issue 135712)
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
            **{k: str(v) for k, v in extra.items()}}


class Nodes:
    """The launchers of one run, one process per simulated node; node R's output goes to `log_dir/node{R}.log`."""

    def __init__(self, log_dir: Path, commands, envs) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.logs = [log_dir / f"node{r}.log" for r in range(len(commands))]
        self.nodes = [subprocess.Popen(list(map(str, cmd)), cwd=ROOT, env=env, stdout=open(log, "w"),
                                       stderr=subprocess.STDOUT) for cmd, env, log in zip(commands, envs, self.logs)]

    def wait(self, timeout: float = LAUNCH_TIMEOUT):
        deadline = time.time() + timeout
        try:
            return [node.wait(timeout=max(1.0, deadline - time.time())) for node in self.nodes]
        finally:
            self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            if node.poll() is None:
                for pid in workers(node.pid):
                    os.kill(pid, signal.SIGCONT)  # a stopped worker must be able to die
                    os.kill(pid, signal.SIGKILL)
                node.kill()
                node.wait()

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def check(self, codes) -> None:
        assert codes == [0] * len(self.nodes), f"{codes}\n" + "\n".join(self.output(r)[-3000:] for r in
                                                                       range(len(self.nodes)))


def workers(agent_pid: int):
    """The worker processes a torchrun agent started (its children)."""
    try:
        children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    except OSError:
        return []
    return [int(pid) for pid in children]


def torchrun(log_dir: Path, args, nproc: int = 1, max_restarts: int = 0) -> Nodes:
    """Two nodes of `torchrun ... -m litgpt ARGS`, as design.md writes the command; each worker's output also goes to
    `log_dir/workers{R}/<run>/attempt_<n>/<local rank>/`."""
    port = free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", nproc,
                 "--node_rank", r, "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                 "--max_restarts", max_restarts, "--log_dir", log_dir / f"workers{r}", "--redirects", "3",
                 "--tee", "3", "-m", "litgpt", *args] for r in range(2)]
    return Nodes(log_dir, commands, [environment()] * 2)


def worker_outputs(log_dir: Path, node: int, stream: str = "stderr"):
    """What node R's first worker wrote in each attempt, oldest first."""
    files = sorted((log_dir / f"workers{node}").glob(f"*/attempt_*/0/{stream}.log"))
    return [f.read_text(errors="replace") for f in files]


FAKE_SRUN = """#!{python}
# srun on one machine: SLURM_NNODES x SLURM_NTASKS_PER_NODE copies of the command with the variables srun sets;
# when one fails the others are killed (--kill-on-bad-exit)
import os, subprocess, sys, time
args = [a for a in sys.argv[1:] if not a.startswith("--kill-on-bad-exit")]
nodes, per_node = int(os.environ["SLURM_NNODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
tasks = []
for rank in range(nodes * per_node):
    env = dict(os.environ, SLURM_NTASKS=str(nodes * per_node), SLURM_PROCID=str(rank),
               SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node), SLURM_NODELIST="127.0.0.1",
               SLURM_JOB_NAME="litgpt-pretrain", SLURM_JOB_ID="4242")
    tasks.append(subprocess.Popen(args, env=env))
while any(t.poll() is None for t in tasks) and not any(t.poll() for t in tasks):
    time.sleep(0.1)
for t in tasks:
    if t.poll() is None:
        t.kill()
sys.exit(max(t.wait() != 0 for t in tasks))
"""


def read_log(path: Path, column: str):
    import csv

    rows = list(csv.DictReader(open(next(path.glob("logs/**/metrics.csv")))))
    return [(int(r["step"]), float(r[column])) for r in rows if r.get(column)]


def sequences(log_dir: Path, world: int):
    """Each rank's micro-batches as lists of (epoch, index), from `sequence_log.LoggedTextFiles`."""
    return [[list(map(tuple, json.loads(line))) for line in (log_dir / f"rank{r}.jsonl").read_text().splitlines()]
            for r in range(world)]


def assert_every_sequence_once(log_dir: Path, world: int, num_sequences: int) -> int:
    """Every (epoch, index) read at most once across the ranks, every epoch that was read through read whole, the
    ranks the same number of micro-batches (none ran out before another). Returns the number of whole epochs."""
    ranks = sequences(log_dir, world)
    assert len({len(batches) for batches in ranks}) == 1, [len(b) for b in ranks]
    seen = Counter(key for batches in ranks for batch in batches for key in batch)
    assert max(seen.values()) == 1, [k for k, c in seen.items() if c > 1][:5]
    last = max(epoch for epoch, _ in seen)
    for epoch in range(last):
        assert sorted(i for e, i in seen if e == epoch) == list(range(num_sequences)), epoch
    return last


def assert_same_as_one_process(one: Path, out: Path, what: str) -> float:
    """The loss curve, the validation figures and the final weights of `out` are those of the 1-process run."""
    # fp32, yet not 0: each rank sums its micro-batches' gradients, then the ranks' sums are averaged, in another
    # order than one process adds the same terms; the last bits differ, and Adam's update carries them on
    for column in ("train_loss", "val_loss", "val_accuracy"):
        expected, got = read_log(one, column), read_log(out, column)
        assert [s for s, _ in got] == [s for s, _ in expected] and len(got) >= 2, column
        assert max(abs(a - b) for (_, a), (_, b) in zip(expected, got)) < 1e-5, (column, expected, got)
    diff = max_weight_diff(final_weights(one), final_weights(out))
    print(f"\n{what} vs 1 process: max |weight difference| {diff:.2e}")
    assert diff < 1e-5
    return diff


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A small corpus (about 35 training blocks of 32 tokens: 6 steps of 8 read more than one epoch), its cache, and
    the 1-process reference run, whose tokenizer the other runs share."""
    import random

    from litgpt.data.text_files import _Sequences

    root = tmp_path_factory.mktemp("multinode")
    rng = random.Random(0)
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text("\n\n".join(" ".join(rng.sample(demo_lines(), 2)) for _ in range(34)))
    data = ["--data", "sequence_log.LoggedTextFiles", "--data.train_data_path", root / "corpus",
            "--data.cache_dir", root / "cache", "--data.num_workers", "0", "--data.val_fraction", "0.15"]
    one = root / "one"
    proc = subprocess.run([sys.executable, "-m", "litgpt", "pretrain", *map(str, [
        "--config", RECIPE, *TINY, *data, "--tokenizer_dir", "null", "--tokenizer_vocab_size", 600, "--devices", 1,
        "--strategy", "auto", "--out_dir", one, "--data.log_dir", one])], cwd=ROOT, env=environment(),
        capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "one": one, "args": [*TINY, *data, "--tokenizer_dir", one],
            "num_sequences": len(_Sequences(root / "cache" / "train", block_size=32))}


def run_torchrun_recipe(cluster, name: str, nproc: int, *extra) -> Path:
    """config_hub/pretrain/torchrun-2nodes.sh on both nodes, as the README runs it, with the tiny overrides."""
    out, port = cluster["root"] / name, free_port()
    envs = [environment(NNODES=2, NPROC_PER_NODE=nproc, NODE_RANK=r, RDZV_ENDPOINT=f"127.0.0.1:{port}",
                        MAX_RESTARTS=0, OUT_DIR=out, CACHE_DIR=cluster["root"] / "cache") for r in range(2)]
    command = ["bash", "config_hub/pretrain/torchrun-2nodes.sh", *cluster["args"], "--data.log_dir", out, *extra]
    nodes = Nodes(out, [command] * 2, envs)
    nodes.check(nodes.wait())
    return out


@pytest.fixture(scope="module")
def fsdp_run(cluster, tmp_path_factory):
    """FSDP on 2 nodes x 1 through config_hub/pretrain/slurm-2x8.sbatch, srun standing in for SLURM's."""
    out, bin_dir = cluster["root"] / "fsdp", tmp_path_factory.mktemp("bin")
    (bin_dir / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / "srun").chmod(0o755)
    env = environment(SLURM_NNODES=2, SLURM_NTASKS_PER_NODE=1, MASTER_PORT=free_port(), OUT_DIR=out,
                      CACHE_DIR=cluster["root"] / "cache")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    nodes = Nodes(out, [["bash", "config_hub/pretrain/slurm-2x8.sbatch", *cluster["args"], "--data.log_dir", out,
                         "--strategy", "fsdp"]], [env])
    nodes.check(nodes.wait())
    return out


def test_ddp_on_two_nodes_matches_one_process_and_reads_every_sequence_once(cluster):
    out = run_torchrun_recipe(cluster, "ddp", 1, "--strategy", "ddp")
    assert_same_as_one_process(cluster["one"], out, "DDP 2 nodes x 1")
    assert assert_every_sequence_once(out, 2, cluster["num_sequences"]) >= 1
    one, two = sequences(cluster["one"], 1)[0], sequences(out, 2)
    assert one == [batch for pair in zip(*two) for batch in pair]  # rank r reads micro-batches r, r + 2, ...


def test_fsdp_on_two_nodes_matches_one_process_and_reads_every_sequence_once(cluster, fsdp_run):
    assert_same_as_one_process(cluster["one"], fsdp_run, "FSDP 2 nodes x 1")
    assert assert_every_sequence_once(fsdp_run, 2, cluster["num_sequences"]) >= 1
    state = torch.load(fsdp_run / "iter-6.pt", weights_only=True)  # one file, whole: the same as DDP's
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["model"].keys() == final_weights(fsdp_run).keys()
    assert all(not k.startswith("_") for k in state["model"])


def test_two_nodes_of_two_processes_through_fabric_run(cluster):
    """`fabric run` (Lightning's launcher, torchrun underneath) on 2 nodes x 2, as the README writes it."""
    out, port, bin_dir = cluster["root"] / "ddp4", free_port(), Path(sys.executable).parent
    commands = [[bin_dir / "fabric", "run", "--num-nodes", "2", "--node-rank", r, "--main-address", "127.0.0.1",
                 "--main-port", port, "--devices", "2", "--accelerator", "cpu", bin_dir / "litgpt", "--", "pretrain",
                 "--config", RECIPE, *cluster["args"], "--num_nodes", "2", "--devices", "2", "--out_dir", out,
                 "--data.log_dir", out] for r in range(2)]
    nodes = Nodes(out, commands, [environment()] * 2)
    nodes.check(nodes.wait())
    assert_same_as_one_process(cluster["one"], out, "DDP 2 nodes x 2")
    assert assert_every_sequence_once(out, 4, cluster["num_sequences"]) >= 1


def wait_for(pattern: str, root: Path, nodes: Nodes, timeout: float = LAUNCH_TIMEOUT) -> float:
    """Waits until a file matching `pattern` is in `root` (the nodes still running); returns the time."""
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        assert all(node.poll() is None for node in nodes.nodes), nodes.output(0)[-3000:]
        assert time.time() < deadline, f"no {pattern} after {timeout} s"
        time.sleep(0.01)
    return time.time()


def test_kill_a_rank_torchrun_restarts_and_the_run_ends_exactly_as_uninterrupted(cluster, fsdp_run):
    """FSDP on 2 nodes x 1 under `torchrun --max_restarts 2` with `--resume auto`: node 1's worker is SIGKILLed
    after iter-2.pt; both nodes restart their workers, which continue from the newest complete iter-*.pt."""
    out = cluster["root"] / "recover"
    args = ["pretrain", "--config", RECIPE, *cluster["args"], "--num_nodes", "2", "--devices", "1", "--strategy",
            "fsdp", "--out_dir", out, "--data.log_dir", out, "--resume", "auto"]
    start = time.time()
    nodes = torchrun(out, args, max_restarts=2)
    try:
        saved = wait_for("iter-2.pt", out, nodes)
        (victim,) = workers(nodes.nodes[1].pid)
        os.kill(victim, signal.SIGSTOP)  # the group cannot finish without it; then it dies
        assert not (out / "final").exists(), "the run finished before the kill"
        newest = max(int(p.stem.split("-")[1]) for p in out.glob("iter-*.pt"))
        (out / f".iter-{newest + 2}.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # what a kill in a save leaves
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        codes = nodes.wait()
    finally:
        nodes.stop()
    done = time.time()
    nodes.check(codes)
    # each node's output (its workers' lines, tee'd by torchrun): two starts, the second resumed
    starts = [nodes.output(r).count("Initializing distributed") for r in (0, 1)]
    resumed = [line.split("]:", 1)[-1] for r in (0, 1) for line in nodes.output(r).splitlines()
               if "Resumed from" in line]
    print(f"\ntimeline: iter-2.pt written {saved - start:.1f} s after the launch; node 1's worker SIGKILLed at "
          f"{killed - start:.1f} s (newest checkpoint iter-{newest}.pt); workers started {starts} times on nodes 0 "
          f"and 1; {resumed[0] if resumed else 'no resume'}; finished at {done - start:.1f} s")
    assert starts == [2, 2] and len(resumed) == 2, (starts, resumed)
    assert all(f"iter-{newest}.pt at step {newest}" in line for line in resumed), resumed
    expected, got = final_weights(fsdp_run), final_weights(out)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert not list(out.glob(".*.tmp"))  # cleared by rank 0 on resume, never read


def test_a_rank_gone_silent_ends_the_others_within_dist_timeout(cluster):
    """Without restarts: node 1's worker is stopped (SIGSTOP: alive, its connections open, so nothing but the
    timeout can tell); node 0's worker stops after --dist_timeout with one line."""
    out = cluster["root"] / "lost"
    nodes = torchrun(out, ["pretrain", "--config", RECIPE, *cluster["args"], "--num_nodes", "2", "--devices", "1",
                           "--out_dir", out,
                           "--data.log_dir", out, "--train.max_steps", "100000", "--eval.interval", "100000",
                           "--dist_timeout", "15"])
    try:
        wait_for("iter-2.pt", out, nodes)
        (victim,) = workers(nodes.nodes[1].pid)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.time()
        code = nodes.nodes[0].wait(timeout=LAUNCH_TIMEOUT)
        elapsed = time.time() - stopped
    finally:
        nodes.stop()
    (stderr,) = worker_outputs(out, 0)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    print(f"\nnode 1's worker stopped; node 0 exited with {code} after {elapsed:.1f} s: {errors}")
    assert code != 0 and 15 <= elapsed < 15 + 60
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "lost a peer in" in errors[0] and "--dist_timeout 15 s" in errors[0]


# ---- finetuning ---------------------------------------------------------------------------------------------------
def finetune_nodes(out: Path, data_dir: Path, max_restarts: int = 0) -> Nodes:
    args = ["finetune", "--data_dir", data_dir, "--output_dir", out, "--model_name", "roberta-tiny", "--from_scratch",
            "--num_epochs", "2", "--batch_size", "4", "--max_length", "48", "--learning_rate", "1e-3",
            "--val_fraction", "0.25", "--accelerator", "cpu", "--num_nodes", "2", "--devices", "1", "--resume", "auto"]
    return torchrun(out.with_name(out.name + "-logs"), args, max_restarts=max_restarts)


def test_finetune_on_two_nodes_counts_each_example_once_and_resumes_after_a_kill(tmp_path):
    """Classification on 2 nodes x 1: the test metrics in metrics.json are what one process computes with the same
    weights; a group killed after its first epoch is restarted by torchrun and ends with the same weights."""
    import lightning as L

    from litgpt.checkpoint import load_checkpoint
    from litgpt.data.classification import ClassificationDataModule
    from litgpt.finetune.classification import score
    from litgpt.model_roberta import RobertaForSequenceClassification
    from litgpt.tokenizer import Tokenizer

    # 45 train examples: 34 after the validation split, so the batches of 4 do not split evenly over 2 ranks
    data_dir = write_files(tmp_path / "data", {"train.json": toy_records("train")[:45],
                                               "test.json": toy_records("test")[:21]})
    full = tmp_path / "full"
    nodes = finetune_nodes(full, data_dir)
    nodes.check(nodes.wait())
    metrics = json.loads((full / "metrics.json").read_text())

    loaded = load_checkpoint(full)
    model = RobertaForSequenceClassification(loaded.config, 2).eval()
    model.load_state_dict(loaded.state_dict)
    data = ClassificationDataModule(data_dir, 2, val_fraction=0.25, seed=42)
    data.connect(Tokenizer(full), batch_size=4, max_seq_length=48, seed=42)
    data.setup()
    with torch.no_grad():
        single = score(L.Fabric(accelerator="cpu", devices=1), model, data.test_dataloader(), loaded.config)
    assert single["num_examples"] == metrics["test"]["num_examples"] == 21
    for name in ("loss", "accuracy", "f1", "precision", "recall", "mcc"):
        assert abs(single[name] - metrics["test"][name]) < 1e-6, (name, single[name], metrics["test"][name])

    resumed = tmp_path / "resumed"
    nodes = finetune_nodes(resumed, data_dir, max_restarts=1)
    try:
        wait_for("train_state.pt", resumed, nodes)
        (victim,) = workers(nodes.nodes[1].pid)
        os.kill(victim, signal.SIGSTOP)
        assert not (resumed / "metrics.json").exists(), "the run finished before the kill"
        os.kill(victim, signal.SIGKILL)
        codes = nodes.wait()
    finally:
        nodes.stop()
    nodes.check(codes)
    assert [nodes.output(r).count("Resumed") for r in (0, 1)] == [1, 1]
    expected, got = (torch.load(d / "pytorch_model.bin", weights_only=True) for d in (full, resumed))
    assert max_weight_diff(expected, got) == 0


# ---- what is refused before any work ------------------------------------------------------------------------------
TORCHRUN_ENV = {"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "0",
                "LOCAL_RANK": "0", "GROUP_RANK": "0"}
SLURM_ENV = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "litgpt"}


@pytest.mark.parametrize("env,flags,fragments", [
    (TORCHRUN_ENV, ["--num_nodes", "2", "--devices", "1"], ["--num_nodes 2 x --devices 1", "torchrun started 4"]),
    (TORCHRUN_ENV, ["--num_nodes", "4", "--devices", "1"], ["4 x 1 = 4", "2 on this node"]),
    (SLURM_ENV, ["--num_nodes", "4", "--devices", "2"], ["srun started 4 processes"]),
    ({}, ["--num_nodes", "2", "--devices", "1"], ["--num_nodes 2: no launcher's rendezvous", "--rdzv_endpoint"]),
    ({}, ["--dist_timeout", "0"], ["--dist_timeout 0"]),
])
def test_a_world_that_does_not_fit_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, env, flags,
                                                                fragments):
    for key in [*TORCHRUN_ENV, *SLURM_ENV, "MASTER_ADDR", "NODE_RANK"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    common = ["--data_dir", tmp_path / "data", "--accelerator", "cpu"]
    expect_usage_error(capsys, ["pretrain", "--model_name", "roberta-tiny", *common, "--out_dir", tmp_path / "out",
                                "--train.max_steps", "2", *flags], *fragments, untouched=tmp_path)
    expect_usage_error(capsys, ["finetune", "--task", "classification", "--data_dir", ROOT / "data" /
                                "test_data_finetune", "--output_dir", tmp_path / "ft", "--model_name", "roberta-tiny",
                                "--from_scratch", *flags], *fragments, untouched=tmp_path)

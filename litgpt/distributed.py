"""Several processes and nodes: the world a launcher started, the Fabric strategy, the training state every rank
needs, and a lost peer as one line.

- Launching is torchrun's, SLURM's (`srun`) or `fabric run`'s (which runs torchrun): under them Fabric uses the
  processes it is given and starts none. `check_world` compares that world with `--num_nodes x --devices` before any
  work; several nodes without a launcher is refused (nothing would ever rendezvous).
- `make_strategy`: DDP, or FSDP2 (`fully_shard` on every block and the root) through Lightning's
  `ModelParallelStrategy`; both with `--dist_timeout` on every collective.
- The training state goes through `torch.distributed.checkpoint`'s state-dict API as full (unsharded) state dicts on
  CPU, gathered to rank 0, which alone writes: one file, the same for one device, DDP and FSDP (`full_state`,
  `load_full_state`). What differs per rank (RNG, data position) is gathered with `gather`.
- `lost_peer`: when a peer dies or stops answering, the collective fails (at once for a closed connection, after
  `--dist_timeout` for a silent peer) and the rank exits with one line naming the collective.
"""

import os
import sys
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from litgpt.utils import RunError, UsageError, first_line

LAUNCH_HINT = ("start each node with `torchrun --nnodes N --nproc_per_node M --node_rank R --rdzv_backend c10d "
               "--rdzv_endpoint HOST:PORT -m litgpt ...`, with `srun` under SLURM, or with `fabric run`")


# ---- the world ----------------------------------------------------------------------------------------------------
def launched_world() -> Optional[Tuple[str, int, Optional[int]]]:
    """(launcher, processes in all, processes on this node) when torchrun (or `fabric run`) or srun started this
    process, else None. Detected as Lightning detects them, torchrun first (it also runs inside SLURM jobs)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    env = os.environ
    if TorchElasticEnvironment.detect():
        return "torchrun", int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in env else None
    if SLURMEnvironment.detect():
        per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]  # "8" or "8(x2)"
        return "srun", int(env["SLURM_NTASKS"]), int(per_node) if per_node.isdigit() else None
    return None


def check_world(devices: Union[int, str], num_nodes: int, dist_timeout: float) -> Union[int, str]:
    """Checks `--num_nodes`, `--devices` and `--dist_timeout` against what was launched, before any work; returns the
    devices to give Fabric (under a launcher, "auto" becomes the processes it started on this node)."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise UsageError(f"--num_nodes {num_nodes}: expected a positive number of nodes")
    if not dist_timeout > 0:
        raise UsageError(f"--dist_timeout {dist_timeout}: expected a positive number of seconds")
    launched = launched_world()
    if launched is None:
        if num_nodes > 1 and not {"MASTER_ADDR", "NODE_RANK"} <= os.environ.keys():  # Fabric's own node launch
            raise UsageError(f"--num_nodes {num_nodes}: no launcher's rendezvous found (torchrun, srun or fabric run"
                             f" set none); {LAUNCH_HINT}")
        return devices
    launcher, world, local = launched
    env = os.environ
    if (env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
            and env.get("RANK") == "0"):
        print("warning: torchrun restarts share the rendezvous store between attempts, and a restarted group can "
              "hang (pytorch issue 135712); set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 where torchrun runs",
              file=sys.stderr)
    if str(devices) in ("auto", "-1") and local is not None:
        devices = local
    per_node = int(devices) if str(devices).lstrip("-").isdigit() else None
    if per_node is not None and (per_node * num_nodes != world or local not in (None, per_node)):
        here = f", {local} on this node" if local is not None else ""
        raise UsageError(f"--num_nodes {num_nodes} x --devices {devices}: {launcher} started {world} processes"
                         f"{here}; expected {num_nodes} x {per_node} = {num_nodes * per_node}. Make --num_nodes the "
                         "launcher's node count and --devices its processes per node")
    return devices


def launch(fabric, fn, *args: Any) -> Any:
    """`fabric.launch(fn, *args)`, or under `fabric run`, whose processes Fabric set up when it was made (and which
    refuses `launch`), `fn(fabric, *args)`."""
    if os.environ.get("LT_CLI_USED") == "1":  # what Lightning's connector reads to know `fabric run` started us
        return fn(fabric, *args)
    return fabric.launch(fn, *args)


def world_size(devices: Union[int, str], num_nodes: int, accelerator: str) -> int:
    """How many processes the run will have (`devices` as `check_world` returned it)."""
    if str(devices).lstrip("-").isdigit() and int(devices) > 0:
        return int(devices) * num_nodes
    on_gpu = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    return (torch.cuda.device_count() if on_gpu else 1) * num_nodes  # Fabric's "auto": every GPU, or 1 CPU process


# ---- the strategy -------------------------------------------------------------------------------------------------
def make_strategy(strategy: str, world: int, dist_timeout: float) -> Any:
    """`--strategy` as Fabric takes it: FSDP2 for `fsdp`; DDP for `ddp` and for `auto` on several processes (so
    `--dist_timeout` holds); `auto` on one."""
    timeout = timedelta(seconds=dist_timeout)
    if strategy == "fsdp":
        from lightning.fabric.strategies import ModelParallelStrategy

        # every rank one data-parallel shard (no tensor parallelism); checkpoints are gathered (see full_state)
        return ModelParallelStrategy(shard_model, data_parallel_size=world, tensor_parallel_size=1,
                                     save_distributed_checkpoint=False, timeout=timeout)
    if strategy == "ddp" or world > 1:
        from lightning.fabric.strategies import DDPStrategy

        return DDPStrategy(timeout=timeout)
    return "auto"


def shard_model(model: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    """FSDP2: each block its own unit (its weights gathered just before it runs), then the root (embeddings and
    heads). The entry points other than `forward` (the loss step, a block's last-layer shortcut) are registered so
    that FSDP gathers for them too."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from litgpt.model_roberta import Block

    mesh = mesh["data_parallel"]
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mesh=mesh)
            register_fsdp_forward_method(module, "at_selected")
    fully_shard(model, mesh=mesh)
    if hasattr(model, "mlm_loss"):
        register_fsdp_forward_method(model, "mlm_loss")
    return model


def is_sharded(fabric) -> bool:
    from lightning.fabric.strategies import ModelParallelStrategy

    return isinstance(fabric.strategy, ModelParallelStrategy)


# ---- the state every rank needs -----------------------------------------------------------------------------------
def gather(fabric, obj: Any) -> List[Any]:
    """`obj` from every rank, in rank order, on every rank."""
    if fabric.world_size == 1:
        return [obj]
    out: List[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def full_state(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None
               ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The model's (and optimizer's) full state dicts on CPU, keyed by parameter name. Under FSDP every rank must
    call it (it gathers the shards) and only rank 0 receives them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, [] if optimizer is None else [optimizer], options=options)


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: Dict[str, Any],
                    optimizer_state: Dict[str, Any]) -> None:
    """The inverse of `full_state`, on every rank (each keeps its shard under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, [optimizer], model_state_dict=model_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True, strict=True))


# ---- a lost peer --------------------------------------------------------------------------------------------------
@contextmanager
def lost_peer(fabric, dist_timeout: float) -> Iterator[None]:
    """Turns a collective that failed because a peer died (or stopped answering for `--dist_timeout` seconds) into
    a `RunError`: one line naming this rank, the collective and what torch said, exit code 1."""
    try:
        yield
    except Exception as ex:  # torch raises DistBackendError, DistNetworkError or a plain RuntimeError from gloo
        if fabric.world_size == 1 or not _from_a_collective(ex):
            raise
        import re

        reason = re.sub(r"^\[[^\]]*\]\s*", "", first_line(ex, limit=None)) or type(ex).__name__  # drop gloo's file:line
        raise RunError(f"rank {fabric.global_rank} lost a peer in {_collective(ex)} (--dist_timeout {dist_timeout:g} "
                       f"s): {reason[:160]}") from None


def _from_a_collective(ex: BaseException) -> bool:
    if isinstance(ex, torch.distributed.DistError):
        return True
    text = str(ex)
    return isinstance(ex, RuntimeError) and any(s in text for s in ("gloo", "Connection closed by peer", "Timed out",
                                                                   "NCCL", "Connection reset by peer"))


def _collective(ex: BaseException) -> str:
    """The collective the traceback ended in: a torch.distributed function, or DDP's gradient all-reduce."""
    import traceback

    frames = traceback.extract_tb(ex.__traceback__)
    for frame in reversed(frames):
        if frame.filename.endswith("distributed_c10d.py"):
            return frame.name
    if any(frame.name in ("backward", "_engine_run_backward") for frame in frames):
        return "the gradient all-reduce of backward"
    return "a collective"

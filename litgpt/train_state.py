"""The pretraining `out_dir` on disk: writing and resuming it.

- `iter-{step}.pt` and `best.pt`: the full training state (model, optimizer, model config, the counters step,
  tokens, epoch, best_val_loss, skipped_steps, and every rank's data position and RNG), gathered to rank 0, which
  alone writes it, to a temp file that is renamed; the same file for one device, DDP and FSDP;
- `final/`: a checkpoint dir (`lit_model.pth`, `model_config.yaml`, tokenizer files, `hyperparameters.yaml`),
  staged in a hidden folder and renamed;
- SIGTERM (preemption) asks the loop for one more `iter-{step}.pt` at the next step boundary.
"""

import os
import re
import shutil
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import yaml

from litgpt.distributed import full_state, gather, load_full_state
from litgpt.run import unwrap
from litgpt.utils import UsageError, atomic_torch_save, atomic_write_text, capture_rng, restore_rng, safe_torch_load

# what the loop counts, saved beside the model
COUNTERS = ("step", "tokens", "epoch", "best_val_loss", "skipped_steps")


def iter_checkpoints(out_dir: Path) -> List[Path]:
    """`iter-{step}.pt` files, oldest step first."""
    found = []
    for path in Path(out_dir).glob("iter-*.pt"):
        match = re.fullmatch(r"iter-(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def load_training_state(path: Path) -> dict:
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a checkpoint dict")
    return state


def resolve_resume(resume: Union[bool, str, Path], out_dir: Path) -> Optional[Path]:
    if resume is False or resume is None:
        return None
    if resume is True or str(resume) == "auto":
        found = iter_checkpoints(out_dir)
        if found:
            return found[-1]
        if resume is True:
            raise UsageError(f"--resume {resume}: nothing to resume, no iter-*.pt in {out_dir}")
        return None  # auto: a new run; a group that a launcher restarts then continues from what it saved
    path = Path(resume)
    if not path.is_file():
        raise UsageError(f"--resume {path}: no such checkpoint file")
    return path


def remove_partial_writes(out_dir: Path) -> None:
    """A run killed while saving leaves its temp file (never a half-written checkpoint); clear them before resuming."""
    leftovers = list(out_dir.glob(".*.tmp")) + list(out_dir.glob(".final.old"))
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if leftovers:
        names = sorted(p.name for p in leftovers)
        print(f"Removed {len(leftovers)} partial write(s) left by an interrupted run: {names}")



def check_same_start(fabric, resume_state: Optional[Dict[str, Any]], out_dir: Path) -> None:
    """Every rank found its checkpoint on its own (before the ranks could talk): they must have found the same one,
    or none. Then rank 0 clears what an interrupted save left."""
    found = gather(fabric, resume_state["resumed_from"] if resume_state else None)
    if len(set(found)) > 1:
        raise UsageError(f"--out_dir {out_dir}: the ranks found different checkpoints to continue from "
                         f"({', '.join(sorted({str(f or 'none') for f in found}))}); every node must see the same "
                         "out_dir (a shared filesystem)")
    if found[0] is not None and fabric.global_rank == 0:
        remove_partial_writes(out_dir)


class StopRequested:
    """SIGTERM (preemption) asks for a checkpoint at the next step boundary, then a clean exit."""

    def __init__(self) -> None:
        self.requested = False
        if sys.platform != "win32":
            try:
                signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not in the main thread
                pass

    def _handler(self, signum, frame) -> None:
        self.requested = True



def save_state(fabric, path: Path, state: Dict[str, Any]) -> None:
    """The full training state in one file, written by rank 0 alone: the model and optimizer gathered whole (under
    FSDP from every rank's shard), the counters, and from every rank its RNG and data position. It goes to a temp file
    that is renamed, so a kill at any moment (of any rank: the gather then fails) never leaves a file that looks
    complete."""
    model, optimizer = full_state(unwrap(state["model"]), unwrap_optimizer(state["optimizer"]))
    ranks = gather(fabric, {"data": state["data"].state_dict(), "rng": capture_rng()})
    if fabric.global_rank == 0:
        payload = {"model": model, "optimizer": optimizer, "ranks": ranks, "world_size": fabric.world_size,
                   "model_config": asdict(state["config"]), **{k: state[k] for k in COUNTERS}}
        atomic_torch_save(payload, path)
    fabric.barrier()


def load_state(fabric, state: Dict[str, Any], saved: Dict[str, Any]) -> None:
    """The inverse of `save_state`, on every rank: after it, the loop continues exactly where `saved` was taken."""
    load_full_state(unwrap(state["model"]), unwrap_optimizer(state["optimizer"]), saved["model"], saved["optimizer"])
    state.update({k: saved[k] for k in COUNTERS if k in saved})
    mine = saved["ranks"][fabric.global_rank]
    state["data"].load_state_dict(mine["data"])
    restore_rng(mine["rng"])


def check_resumable(saved: Dict[str, Any], world: int, source: str) -> None:
    """A training state resumes on the world that wrote it: every rank continues its own data position and RNG."""
    if "ranks" not in saved or "world_size" not in saved:
        raise UsageError(f"{source}: not a training state this version writes (no per-rank state); start a new run")
    if saved["world_size"] != world:
        raise UsageError(f"{source}: written by {saved['world_size']} process(es), and this run has {world} "
                         "(--num_nodes x --devices); resume with the same world")


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Fabric's wrapper holds the torch optimizer


def save_final(fabric, final_dir: Path, state: Dict[str, Any]) -> None:
    """`final/`: a checkpoint dir (lit_model.pth, model_config.yaml, tokenizer, hyperparameters.yaml)."""
    config = state["config"]
    state_dict, _ = full_state(unwrap(state["model"]))
    if fabric.global_rank == 0:
        staging = final_dir.with_name(f".{final_dir.name}.tmp")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        atomic_torch_save({k: v.detach().cpu() for k, v in state_dict.items()}, staging / "lit_model.pth")
        config.save(staging / "model_config.yaml")
        state["tokenizer"].save(staging, model_max_length=config.block_size)
        atomic_write_text(staging / "hyperparameters.yaml", yaml.safe_dump(state["hparams"], sort_keys=False))
        if final_dir.exists():
            old = final_dir.with_name(f".{final_dir.name}.old")
            os.replace(final_dir, old)
            os.replace(staging, final_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, final_dir)
    fabric.barrier()

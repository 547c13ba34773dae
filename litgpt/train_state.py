"""The pretraining `out_dir` on disk: writing and resuming it.

- `iter-{step}.pt` and `best.pt`: the full training state (model, optimizer, data position, RNG, model config and
  the counters step, tokens, epoch, best_val_loss, skipped_steps), written to a temp file and renamed;
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
        if not found:
            raise UsageError(f"--resume {resume}: nothing to resume, no iter-*.pt in {out_dir}")
        return found[-1]
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
    """The full training state, written to a temp file and renamed, so a crash never leaves a half-written one."""
    payload = {"model": state["model"], "optimizer": state["optimizer"], "data": state["data"].state_dict(),
               "rng": capture_rng(), "model_config": asdict(state["config"]), **{k: state[k] for k in COUNTERS}}
    tmp = path.with_name(f".{path.name}.tmp")
    fabric.save(tmp, payload)
    fabric.barrier()
    if fabric.global_rank == 0:
        with open(tmp, "rb+") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    fabric.barrier()


def load_state(state: Dict[str, Any], saved: Dict[str, Any]) -> None:
    """The inverse of `save_state`: after it, the loop continues exactly where `saved` was taken."""
    unwrap(state["model"]).load_state_dict(saved["model"])
    state["optimizer"].load_state_dict(saved["optimizer"])
    state.update({k: saved[k] for k in COUNTERS if k in saved})
    state["data"].load_state_dict(saved["data"])
    restore_rng(saved["rng"])


def save_final(fabric, final_dir: Path, state: Dict[str, Any]) -> None:
    """`final/`: a checkpoint dir (lit_model.pth, model_config.yaml, tokenizer, hyperparameters.yaml)."""
    config = state["config"]
    state_dict = full_state_dict(fabric, state["model"])
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


def full_state_dict(fabric, model) -> Dict[str, torch.Tensor]:
    from lightning.fabric.strategies import FSDPStrategy

    if isinstance(fabric.strategy, FSDPStrategy):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model._forward_module, options=options)
    return unwrap(model).state_dict()

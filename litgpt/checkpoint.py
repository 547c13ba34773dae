"""One way to read every kind of checkpoint the commands accept.

- a litgpt checkpoint dir: `lit_model.pth` + `model_config.yaml` (+ tokenizer files);
- a pretraining `out_dir`: its `best.pt` (else `final/`, else the newest `iter-*.pt`);
- a training-state file (`best.pt`, `iter-{step}.pt`);
- a HuggingFace RoBERTa dir (`config.json` + weights), converted in memory;
- a registry name such as `roberta-base`, when `litgpt download` put it under `checkpoints/`.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from litgpt.config import Config, name_to_config
from litgpt.utils import UsageError, safe_torch_load


@dataclass
class LoadedCheckpoint:
    config: Config
    state_dict: Dict[str, torch.Tensor]
    tokenizer_dir: Optional[Path]
    source: str  # one line for users: where the weights came from


def iter_checkpoints(out_dir: Path):
    """`iter-{step}.pt` files, oldest step first."""
    found = []
    for path in Path(out_dir).glob("iter-*.pt"):
        match = re.fullmatch(r"iter-(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def local_hub_dir(name: str, checkpoints_dir: Path = Path("checkpoints")) -> Optional[Path]:
    """Where `litgpt download` puts a registry model (`checkpoints/ORG/NAME`), if it is there."""
    candidates = [checkpoints_dir / name]
    if name in name_to_config and name_to_config[name].get("hf_config"):
        hf = name_to_config[name]["hf_config"]
        candidates.insert(0, checkpoints_dir / hf["org"] / hf["name"])
    for path in candidates:
        if (path / "lit_model.pth").is_file() or (path / "config.json").is_file():
            return path
    return None


def _tokenizer_dir(*candidates: Path) -> Optional[Path]:
    for path in candidates:
        if (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file():
            return path
    return None


def load_training_state(path: Path) -> dict:
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a checkpoint dict")
    return state


def load_checkpoint(source: Union[str, Path], checkpoints_dir: Path = Path("checkpoints")) -> LoadedCheckpoint:
    path = Path(source)
    if not path.exists() and isinstance(source, str) and not source.startswith((".", "/")):
        hub = local_hub_dir(source, checkpoints_dir)
        if hub is None:
            raise UsageError(
                f"{source}: no such checkpoint dir, and no downloaded weights under {checkpoints_dir}/"
                f" (run `litgpt download {_repo_id(source)}`)"
            )
        path = hub
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")

    if path.is_file():
        return _from_state_file(path)
    if (path / "lit_model.pth").is_file():
        from litgpt.utils import load_state_dict_file

        config = Config.from_checkpoint(path)
        state = load_state_dict_file(path / "lit_model.pth")
        return LoadedCheckpoint(config, state, _tokenizer_dir(path), f"litgpt checkpoint {path}")
    if (path / "best.pt").is_file():
        return _from_state_file(path / "best.pt")
    if (path / "final" / "lit_model.pth").is_file():
        return load_checkpoint(path / "final")
    iters = iter_checkpoints(path)
    if iters:
        return _from_state_file(iters[-1])
    if (path / "config.json").is_file():
        from litgpt.scripts.convert_hf_checkpoint import load_hf_checkpoint

        config, state = load_hf_checkpoint(path)
        return LoadedCheckpoint(config, state, _tokenizer_dir(path), f"HuggingFace checkpoint {path} (converted)")
    raise UsageError(
        f"{path}: not a checkpoint; expected lit_model.pth + model_config.yaml, a pretraining out_dir"
        " (best.pt, final/ or iter-*.pt) or a HuggingFace dir (config.json + weights)"
    )


def _from_state_file(path: Path) -> LoadedCheckpoint:
    state = load_training_state(path)
    if "model" in state and isinstance(state["model"], dict):
        weights = state["model"]
        if "model_config" not in state:
            raise UsageError(f"{path}: training state without model_config")
        config = Config(**state["model_config"])
    else:
        weights = state
        config_file = path.parent / "model_config.yaml"
        if not config_file.is_file():
            raise UsageError(f"{path}: plain weights need a model_config.yaml beside them")
        config = Config.from_file(config_file)
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UsageError(f"{path}: model weights must be tensors")
    tokenizer_dir = _tokenizer_dir(path.parent, path.parent / "final")
    step = state.get("step") if isinstance(state.get("step"), int) else None
    where = f"pretraining checkpoint {path}" + (f" (step {step})" if step is not None else "")
    return LoadedCheckpoint(config, weights, tokenizer_dir, where)


def _repo_id(name: str) -> str:
    hf = name_to_config.get(name, {}).get("hf_config")
    return f"{hf['org']}/{hf['name']}" if hf else name

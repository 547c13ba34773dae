"""What every command sets up before its loop: precision, devices, Fabric, the logger, hyperparameters.

Pretraining, finetuning and inference call these, so a flag means the same thing and fails the same way everywhere.
"""

import inspect
import os
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from litgpt.utils import UsageError, first_line

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def default_precision() -> str:
    """bf16-mixed on GPUs that support it, else full fp32."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def check_precision(precision: Optional[str]) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def check_devices(devices: Union[int, str]) -> None:
    """`--devices`: a positive count that this machine has (GPUs, else CPU cores), -1 or "auto"."""
    if isinstance(devices, str):
        if devices == "auto":
            return
        try:
            devices = int(devices)
        except ValueError:
            raise UsageError(f"--devices {devices!r}: expected a number or 'auto'") from None
    if devices == -1:
        return
    available = torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)
    if devices <= 0 or devices > available:
        where = "GPU(s)" if torch.cuda.is_available() else "CPU cores (no GPU)"
        raise UsageError(f"--devices {devices}: expected 1 to {available} ({available} {where} here)")


def make_fabric(devices: Union[int, str], accelerator: str, precision: str, **kwargs: Any):
    """A Fabric; a setting it rejects (no such accelerator, a precision the device lacks) is one line."""
    import lightning as L

    try:
        return L.Fabric(devices=devices, accelerator=accelerator, precision=precision, **kwargs)
    except (ValueError, RuntimeError, ImportError) as ex:
        reason = first_line(ex, limit=None) or ex.__class__.__name__
        raise UsageError(f"--accelerator {accelerator} --devices {devices} --precision {precision}: {reason}") from None


def make_logger(name: str, out_dir: Path):
    """CSV (the default) or TensorBoard logs under `out_dir/logs/`."""
    if name == "tensorboard":
        from lightning.fabric.loggers import TensorBoardLogger

        return TensorBoardLogger(root_dir=out_dir / "logs", name="tensorboard")
    from lightning.fabric.loggers import CSVLogger

    return CSVLogger(root_dir=out_dir / "logs", name="csv", flush_logs_every_n_steps=10)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model under Fabric's wrapper, DDP and torch.compile: the one whose state dict we save."""
    model = getattr(model, "_forward_module", model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def capture_hparams() -> Dict[str, Any]:
    """The calling function's arguments as plain YAML-able data (for `hyperparameters.yaml`)."""
    caller = inspect.currentframe().f_back
    names = caller.f_code.co_varnames[: caller.f_code.co_argcount + caller.f_code.co_kwonlyargcount]
    return {name: plain(caller.f_locals[name]) for name in names if name in caller.f_locals}


def plain(value: Any) -> Any:
    """Paths become strings, dataclasses dicts, data modules `{class_path, init_args}`; other objects their repr."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        from litgpt.data.base import DataModule

        if isinstance(value, DataModule):  # the --data flag: how jsonargparse would write it back
            init_args = {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.init}
            return {"class_path": f"{type(value).__module__}.{type(value).__qualname__}", "init_args": init_args}
        return {k: plain(v) for k, v in asdict(value).items()}
    return repr(value)

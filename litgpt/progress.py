"""What the pretraining loop reports as it goes: loss, accuracy, throughput, MFU and the time left.

A "window" sums the steps since the last log line; it also remembers where this run started, so the time left
comes from the rate since the start (a resumed run counts from where it resumed), not from one noisy window.
"""

import math
import time
from datetime import timedelta
from typing import Any, Dict, Optional

import torch

from litgpt.args import TrainArgs
from litgpt.config import Config

# after this many steps the measured rate and the projected duration are printed once
PROJECT_AFTER_STEPS = 3
# on a CPU, models this large run at tens to hundreds of tokens/s: point to faster choices
SLOW_ON_CPU_PARAMETERS = 50_000_000


def slow_start_hint(fabric, config: Config, num_params: int) -> None:
    """Said once, before the first step, when a large model is about to train on a CPU."""
    if fabric.device.type != "cpu" or num_params < SLOW_ON_CPU_PARAMETERS:
        return
    fabric.print(f"note: {config.name or 'this model'} ({num_params / 1e6:.0f}M parameters) trains at tens to hundreds "
                 "of tokens/s on a CPU. Faster choices: `--config config_hub/pretrain/cpu-demo.yaml` (a small "
                 "model that learns the demo corpus in minutes), a smaller `--model_name roberta-small`, or a GPU. "
                 "Each iter-*.pt holds the weights and the optimizer state (about 12 bytes a parameter); "
                 "`--train.keep_last N` keeps only the newest N.")


# dense bf16/fp16 peaks in TFLOP/s that Lightning's table lacks or lists with sparsity: the H200 reports itself as
# "NVIDIA H200", which its table does not match, and its H200 figures are the 2:4-sparse ones
DENSE_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0}


def peak_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """The device's nominal dense peak in FLOP/s for MFU, or None when unknown (CPU, an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    if dtype in (torch.bfloat16, torch.float16) and "pcie" not in name and "nvl" not in name:
        for chip, tflops in DENSE_PEAK_TFLOPS.items():
            if chip in name:
                return tflops * 1e12
    from lightning.fabric.utilities.throughput import get_available_flops

    return get_available_flops(device, dtype)


def new_window(fabric, state: Dict[str, Any]) -> Dict[str, Any]:
    """Sums over the steps since the last log line, plus where this run started (for the ETA)."""
    precision = str(fabric._connector._precision_input)
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32
    zero = lambda: torch.zeros((), device=fabric.device)  # noqa: E731
    return {"loss": zero(), "correct": zero(), "count": zero(), "tokens": 0, "time": 0.0, "data_time": 0.0,
            "compute_time": 0.0, "steps": 0, "t_start": time.perf_counter(), "tokens_at_start": state["tokens"],
            "steps_at_start": state["step"], "flops_per_token": state["config"].flops_per_token(),
            "peak_flops": peak_flops(fabric.device, dtype)}


def log_progress(fabric, state: Dict[str, Any], window: Dict[str, Any], train: TrainArgs) -> None:
    steps = window["steps"]
    stats = torch.stack([window["loss"] / steps, window["correct"], window["count"]]).double()
    if fabric.world_size > 1:  # report the global batch, not rank 0's share of it
        stats = fabric.all_reduce(stats, reduce_op="sum") / torch.tensor([fabric.world_size, 1, 1], device=stats.device)
    loss, correct, count = stats.tolist()  # one sync per log interval, not per step
    accuracy = correct / max(count, 1)
    tokens_per_sec = window["tokens"] / max(window["time"], 1e-9)
    lr = state["optimizer"].param_groups[0]["lr"]
    metrics = {"train_loss": loss, "train_ppl": math.exp(min(loss, 50)), "mlm_accuracy": accuracy, "lr": lr,
               "tokens_per_sec": tokens_per_sec, "tokens": state["tokens"], "epoch": state["epoch"],
               "data_time_fraction": window["data_time"] / max(window["time"], 1e-9)}
    if fabric.device.type == "cpu":  # host timers only measure compute when it runs synchronously
        # time in forward/backward/optimizer over the whole step (data loading, masking, bookkeeping)
        metrics["compute_fraction"] = window["compute_time"] / max(window["time"], 1e-9)
    if window["peak_flops"]:
        metrics["mfu"] = tokens_per_sec * window["flops_per_token"] / (window["peak_flops"] * fabric.world_size)
    fabric.log_dict(metrics, step=state["step"])
    remaining = remaining_seconds(state, window, train)
    eta = str(timedelta(seconds=int(remaining))) if remaining is not None else "?"
    mfu = f" | MFU {metrics['mfu']:.1%}" if "mfu" in metrics else ""
    fabric.print(f"step {state['step']} | loss {loss:.4f} | acc {accuracy:.3f} | lr {lr:.2e} | "
                 f"{tokens_per_sec:,.0f} tok/s{mfu} | tokens {state['tokens']:,} | ETA {eta}")
    for key in ("loss", "correct", "count"):
        window[key].zero_()
    window.update(tokens=0, time=0.0, data_time=0.0, compute_time=0.0, steps=0)


def remaining_seconds(state: Dict[str, Any], window: Dict[str, Any], train: TrainArgs) -> Optional[float]:
    """Time left at the rate since this run started, by whichever budget (steps or tokens) runs out first."""
    elapsed = time.perf_counter() - window["t_start"]
    remaining = []
    if train.max_tokens:
        done_tokens = max(state["tokens"] - window["tokens_at_start"], 1)
        remaining.append(elapsed / done_tokens * max(train.max_tokens - state["tokens"], 0))
    if train.max_steps:
        done_steps = max(state["step"] - window["steps_at_start"], 1)
        remaining.append(elapsed / done_steps * max(train.max_steps - state["step"], 0))
    return min(remaining) if remaining else None


def report_projection(fabric, state: Dict[str, Any], window: Dict[str, Any], train: TrainArgs) -> None:
    """Once, `PROJECT_AFTER_STEPS` steps into the run: the measured rate and how long the whole run will take."""
    steps = state["step"] - window["steps_at_start"]
    if steps != PROJECT_AFTER_STEPS:
        return
    elapsed = time.perf_counter() - window["t_start"]
    rate = (state["tokens"] - window["tokens_at_start"]) / max(elapsed, 1e-9)
    remaining = remaining_seconds(state, window, train)
    total = "?" if remaining is None else str(timedelta(seconds=int(elapsed + remaining)))
    fabric.print(f"measured over the first {steps} steps: {rate:,.0f} tok/s, {elapsed / steps:.2f} s/step; "
                 f"projected duration of the run: {total}")

"""Training and evaluation arguments. Their docstrings are the `--help` text."""

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass
class TrainArgs:
    """Training hyperparameters."""

    global_batch_size: int = 32
    """Sequences per optimizer step, summed over devices (= micro_batch_size x devices x accumulation)"""
    micro_batch_size: int = 4
    """Sequences per forward/backward pass on one device"""
    max_tokens: Optional[int] = None
    """Stop after this many real (non-pad) training tokens"""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps"""
    max_seq_length: Optional[int] = None
    """Longest sequence fed to the model; defaults to the model's block size"""
    learning_rate: float = 1e-4
    """Peak learning rate"""
    lr_warmup_steps: int = 2000
    """Optimizer steps of linear warmup from 0 to the peak learning rate"""
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup: linear to min_lr (RoBERTa), cosine, or constant"""
    min_lr: float = 0.0
    """Learning rate at the end of the decay"""
    weight_decay: float = 0.01
    """AdamW weight decay; never applied to biases, LayerNorm or embeddings' pad rows"""
    beta1: float = 0.9
    """AdamW beta1"""
    beta2: float = 0.98
    """AdamW beta2 (RoBERTa uses 0.98)"""
    adam_eps: float = 1e-6
    """AdamW epsilon (RoBERTa uses 1e-6)"""
    max_norm: Optional[float] = 1.0
    """Gradient clipping by global norm; null disables it"""
    save_interval: Optional[int] = 1000
    """Save `iter-{step}.pt` every this many optimizer steps (and at the end)"""
    log_interval: int = 1
    """Print and log progress every this many optimizer steps"""
    objective: Literal["mlm", "clm"] = "mlm"
    """mlm: masked language modelling; clm: left-to-right language modelling with the causal mode"""
    mask_prob: float = 0.15
    """Fraction of ordinary tokens selected for the MLM loss"""
    mask_replace_prob: float = 0.8
    """Of the selected tokens, the fraction replaced by <mask>"""
    random_replace_prob: float = 0.1
    """Of the selected tokens, the fraction replaced by a random token (the rest stay unchanged)"""


@dataclass
class EvalArgs:
    """Validation settings."""

    interval: int = 1000
    """Validate every this many optimizer steps (and at the end)"""
    max_iters: int = 100
    """At most this many validation batches per evaluation"""
    initial_validation: bool = True
    """Validate before the first step, so the log shows where the loss started"""
    final_validation: bool = True
    """Validate after the last step"""
    batch_size: Optional[int] = None
    """Validation batch size; defaults to the micro batch size"""

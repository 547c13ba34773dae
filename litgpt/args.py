"""Training and evaluation arguments. The `Args:` sections of the docstrings are the `--help` text."""

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass
class TrainArgs:
    """Training hyperparameters.

    Args:
        global_batch_size: Sequences per optimizer step, summed over devices (= micro_batch_size x devices x accumulation)
        micro_batch_size: Sequences per forward/backward pass on one device
        max_tokens: Stop after this many real (non-pad) training tokens
        max_steps: Stop after this many optimizer steps
        max_seq_length: Longest sequence fed to the model; defaults to the model's block size
        learning_rate: Peak learning rate
        lr_warmup_steps: Optimizer steps of linear warmup from 0 to the peak learning rate
        lr_schedule: Decay after warmup: linear to min_lr (RoBERTa), cosine, or constant
        min_lr: Learning rate at the end of the decay
        weight_decay: AdamW weight decay; never applied to biases and LayerNorm weights
        beta1: AdamW beta1
        beta2: AdamW beta2 (RoBERTa uses 0.98)
        adam_eps: AdamW epsilon (RoBERTa uses 1e-6)
        max_norm: Gradient clipping by global norm; null disables it
        save_interval: Save `iter-{step}.pt` every this many optimizer steps (and at the end)
        keep_last: Keep only this many newest `iter-*.pt` (older ones are deleted after a newer one is safely written); null keeps all
        log_interval: Print and log progress every this many optimizer steps
        objective: mlm: masked language modelling; clm: left-to-right language modelling with the causal mode
        mask_prob: Fraction of ordinary tokens selected for the MLM loss
        mask_replace_prob: Of the selected tokens, the fraction replaced by <mask>
        random_replace_prob: Of the selected tokens, the fraction replaced by a random token (the rest stay unchanged)
    """

    global_batch_size: int = 32
    micro_batch_size: int = 4
    max_tokens: Optional[int] = None
    max_steps: Optional[int] = None
    max_seq_length: Optional[int] = None
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 2000
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    min_lr: float = 0.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-6
    max_norm: Optional[float] = 1.0
    save_interval: Optional[int] = 1000
    keep_last: Optional[int] = None
    log_interval: int = 1
    objective: Literal["mlm", "clm"] = "mlm"
    mask_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

@dataclass
class EvalArgs:
    """Validation settings.

    Args:
        interval: Validate every this many optimizer steps (and at the end)
        max_iters: At most this many validation batches per evaluation
        initial_validation: Validate before the first step, so the log shows where the loss started
        final_validation: Validate after the last step
        batch_size: Validation batch size; defaults to the micro batch size
    """

    interval: int = 1000
    max_iters: int = 100
    initial_validation: bool = True
    final_validation: bool = True
    batch_size: Optional[int] = None

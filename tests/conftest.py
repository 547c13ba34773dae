import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--run-soak", action="store_true", help="run the long kill-and-resume soak test")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: pass --run-soak to run it")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def tiny_hf_config(**kwargs):
    from transformers import RobertaConfig

    defaults = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    defaults.update(kwargs)
    return RobertaConfig(**defaults)


def ragged_batch(vocab_size=120, lengths=(12, 7, 3, 10), pad_id=1, seed=0):
    """Right-padded ids that start with <s> and end with </s>, and the matching attention mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(4, vocab_size, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 0, 2
        mask[i, :n] = 1
    return ids, mask


def assert_loaders_leave_global_rng_alone(data) -> None:
    """A resumed run starts its iterators at other moments than an uninterrupted one: drawing from the global
    RNG there would shift dropout. Starting the train and val loaders must leave it where it was."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(data.train_dataloader()))
    list(data.val_dataloader())
    assert torch.equal(torch.rand(3), expected)


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Runs `python -m litgpt ...` in a subprocess and returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "litgpt", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

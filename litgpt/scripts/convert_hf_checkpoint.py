"""`litgpt convert_to_litgpt`: a HuggingFace RoBERTa or BERT dir -> a litgpt checkpoint (`lit_model.pth` +
`model_config.yaml`).

The mapping lives in `litgpt/convert.py`, the reading in `litgpt/checkpoint.py`.
"""

from pathlib import Path
from typing import Optional

import torch

from litgpt.checkpoint import load_hf_checkpoint
from litgpt.config import name_to_config
from litgpt.utils import UsageError, atomic_torch_save


@torch.inference_mode()
def convert_hf_checkpoint(checkpoint_dir: Path, model_name: Optional[str] = None) -> None:
    """Convert a HuggingFace RoBERTa or BERT checkpoint dir into a litgpt checkpoint dir, in place.

    Writes `lit_model.pth` and `model_config.yaml` beside the HF files and keeps the tokenizer files
    (adding `tokenizer.json` when only `vocab.json`/`merges.txt` are present).

    Args:
        checkpoint_dir: Folder with `config.json` and `model.safetensors` or `pytorch_model.bin`
            (RobertaModel, RobertaForMaskedLM, RobertaForSequenceClassification or RobertaForCausalLM).
        model_name: Registry name to record in the config, e.g. `roberta-base`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise UsageError(f"{checkpoint_dir}: not a folder")
    if model_name is None:
        name = checkpoint_dir.name
        model_name = name if name in name_to_config else None
    config, state = load_hf_checkpoint(checkpoint_dir, model_name)
    ensure_tokenizer_json(checkpoint_dir)
    atomic_torch_save(state, checkpoint_dir / "lit_model.pth")
    config.save(checkpoint_dir / "model_config.yaml")
    print(f"Converted {checkpoint_dir} -> lit_model.pth, model_config.yaml ({len(state)} tensors)")


def ensure_tokenizer_json(checkpoint_dir: Path) -> None:
    """HF dirs may ship only `vocab.json` + `merges.txt` (RoBERTa) or `vocab.txt` (BERT); write `tokenizer.json` so
    every command reads it."""
    if (checkpoint_dir / "tokenizer.json").is_file():
        return
    bpe = (checkpoint_dir / "vocab.json").is_file() and (checkpoint_dir / "merges.txt").is_file()
    if bpe or (checkpoint_dir / "vocab.txt").is_file():
        from litgpt.tokenizer import Tokenizer

        Tokenizer(checkpoint_dir).save(checkpoint_dir)


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(convert_hf_checkpoint, None, prog="convert_hf_checkpoint")

"""`litgpt convert_from_litgpt`: a litgpt checkpoint -> a HuggingFace RoBERTa or BERT dir (see `litgpt/export.py`)."""

from pathlib import Path

import torch

from litgpt.export import save_hf_dir
from litgpt.utils import UsageError


@torch.inference_mode()
def convert_lit_checkpoint(
    checkpoint_dir: Path, output_dir: Path, safetensors: bool = True, pytorch_bin: bool = False
) -> None:
    """Convert a litgpt checkpoint into a HuggingFace RoBERTa or BERT dir.

    Args:
        checkpoint_dir: A litgpt checkpoint dir (`lit_model.pth` + `model_config.yaml`), a pretraining
            `out_dir` (its `best.pt`), or a training-state file such as `out_dir/iter-1000.pt`.
        output_dir: Where to write `config.json`, `model.safetensors` and the tokenizer files.
        safetensors: Write `model.safetensors`.
        pytorch_bin: Also write `pytorch_model.bin`.
    """
    from litgpt.checkpoint import load_checkpoint

    if not safetensors and not pytorch_bin:
        raise UsageError("--safetensors false needs --pytorch_bin true: nothing would be written")
    checkpoint = load_checkpoint(checkpoint_dir)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output_dir {output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / "config.json").is_file():
        raise UsageError(f"output_dir {output_dir}: not empty and not a HuggingFace dir; refusing to write into it")
    save_hf_dir(checkpoint.state_dict, checkpoint.config, output_dir, checkpoint.tokenizer_dir, safetensors,
                pytorch_bin)
    print(f"Converted {checkpoint.source} -> {output_dir}")

"""litgpt checkpoint -> HuggingFace RoBERTa dir that `transformers` loads with `from_pretrained`."""

import json
from pathlib import Path
from typing import Dict

import torch

from litgpt.config import Config
from litgpt.scripts.convert_hf_checkpoint import LAYER_MAP, TOP_MAP
from litgpt.utils import UsageError, atomic_save_safetensors, atomic_torch_save, atomic_write_text

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def lit_to_hf_state_dict(state: Dict[str, torch.Tensor], config: Config) -> Dict[str, torch.Tensor]:
    top = {lit: hf for hf, lit in TOP_MAP.items()}
    layer = {lit: hf for hf, lit in LAYER_MAP.items()}
    bare = not any(k.startswith(("lm_head.", "classifier.")) for k in state)  # a headless RobertaModel
    prefix = "" if bare else "roberta."
    hf: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key if key.startswith(("roberta.", "lm_head.", "classifier.")) else f"roberta.{key}"
        if key in top:
            name = top[key]
            hf[name if name.startswith(("lm_head.", "classifier.")) else prefix + name] = value
            continue
        if key.startswith("roberta.h."):
            idx, rest = key[len("roberta.h.") :].split(".", 1)
            module, param = rest.rsplit(".", 1)
            base = f"{prefix}encoder.layer.{idx}"
            if module == "attn.qkv":
                q, k, v = value.chunk(3, dim=0)
                for part, tensor in (("query", q), ("key", k), ("value", v)):
                    hf[f"{base}.attention.self.{part}.{param}"] = tensor.contiguous()
                continue
            if module in layer:
                hf[f"{base}.{layer[module]}.{param}"] = value
                continue
        raise UsageError(f"unexpected weight {key!r} in the litgpt checkpoint")
    return hf


def hf_config_dict(config: Config, architecture: str) -> dict:
    hf = {
        "architectures": [architecture],
        "model_type": "roberta",
        "vocab_size": config.padded_vocab_size,
        "hidden_size": config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.norm_eps,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "classifier_dropout": config.classifier_dropout,
        "position_embedding_type": "absolute",
        "is_decoder": config.causal,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if architecture == "RobertaForSequenceClassification":
        id2label = {i: config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)}
        hf["num_labels"] = config.num_labels
        hf["id2label"] = {str(i): label for i, label in id2label.items()}
        hf["label2id"] = {label: i for i, label in id2label.items()}
    return hf


def architecture_for(state: Dict[str, torch.Tensor], config: Config) -> str:
    if any(k.startswith("classifier.") for k in state):
        return "RobertaForSequenceClassification"
    if any(k.startswith("lm_head.") for k in state):
        return "RobertaForCausalLM" if config.causal else "RobertaForMaskedLM"
    return "RobertaModel"


def save_hf_dir(
    state: Dict[str, torch.Tensor],
    config: Config,
    output_dir: Path,
    tokenizer_dir: Path = None,
    safetensors: bool = True,
    pytorch_bin: bool = False,
) -> None:
    """Writes config.json, the weights and the tokenizer files into `output_dir`, each file atomically."""
    if "classifier.out_proj.weight" in state:
        config.num_labels = state["classifier.out_proj.weight"].shape[0]
    architecture = architecture_for(state, config)
    hf_state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                for k, v in lit_to_hf_state_dict(state, config).items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    if safetensors:
        atomic_save_safetensors(hf_state, output_dir / "model.safetensors", metadata={"format": "pt"})
    if pytorch_bin:
        atomic_torch_save(hf_state, output_dir / "pytorch_model.bin")
    atomic_write_text(output_dir / "config.json", json.dumps(hf_config_dict(config, architecture), indent=2) + "\n")
    if tokenizer_dir is not None:
        from litgpt.tokenizer import Tokenizer

        tokenizer = Tokenizer(tokenizer_dir)
        tokenizer.save(output_dir, model_max_length=config.block_size)


@torch.inference_mode()
def convert_lit_checkpoint(
    checkpoint_dir: Path, output_dir: Path, safetensors: bool = True, pytorch_bin: bool = False
) -> None:
    """Convert a litgpt checkpoint into a HuggingFace RoBERTa dir.

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
    save_hf_dir(checkpoint.state_dict, checkpoint.config, output_dir, checkpoint.tokenizer_dir, safetensors, pytorch_bin)
    print(f"Converted {checkpoint.source} -> {output_dir}")

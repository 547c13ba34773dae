"""HuggingFace RoBERTa checkpoint -> litgpt checkpoint (`lit_model.pth` + `model_config.yaml`)."""

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from litgpt.config import Config, name_to_config
from litgpt.utils import UsageError, atomic_torch_save, load_state_dict_file

ROBERTA_ARCHITECTURES = {
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "RobertaForCausalLM",
}

# per-layer HF names -> litgpt names; query/key/value are fused into `attn.qkv`
LAYER_MAP = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "norm_1",
    "intermediate.dense": "mlp.fc",
    "output.dense": "mlp.proj",
    "output.LayerNorm": "norm_2",
}
TOP_MAP = {
    "embeddings.word_embeddings.weight": "roberta.wte.weight",
    "embeddings.position_embeddings.weight": "roberta.wpe.weight",
    "embeddings.token_type_embeddings.weight": "roberta.wtte.weight",
    "embeddings.LayerNorm.weight": "roberta.ln_emb.weight",
    "embeddings.LayerNorm.bias": "roberta.ln_emb.bias",
    "lm_head.dense.weight": "lm_head.dense.weight",
    "lm_head.dense.bias": "lm_head.dense.bias",
    "lm_head.layer_norm.weight": "lm_head.norm.weight",
    "lm_head.layer_norm.bias": "lm_head.norm.bias",
    "lm_head.bias": "lm_head.bias",
    "classifier.dense.weight": "classifier.dense.weight",
    "classifier.dense.bias": "classifier.dense.bias",
    "classifier.out_proj.weight": "classifier.out_proj.weight",
    "classifier.out_proj.bias": "classifier.out_proj.bias",
}
# present in HF checkpoints but not part of our model: tied copies, a legacy buffer, the unused pooler
DROPPED = ("lm_head.decoder.weight", "lm_head.decoder.bias", "embeddings.position_ids", "pooler.")


def read_hf_config(checkpoint_dir: Path) -> dict:
    path = checkpoint_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"{checkpoint_dir}: no config.json, so this is not a HuggingFace checkpoint dir")
    try:
        hf_config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as ex:
        raise UsageError(f"{path}: not valid JSON ({ex})") from None
    model_type = hf_config.get("model_type")
    architectures = hf_config.get("architectures") or []
    if model_type != "roberta" or any(a not in ROBERTA_ARCHITECTURES for a in architectures):
        raise UsageError(
            f"{path}: model_type={model_type!r}, architectures={architectures}; expected a RoBERTa checkpoint"
            f" (model_type 'roberta', one of {sorted(ROBERTA_ARCHITECTURES)})"
        )
    return hf_config


def config_from_hf(hf_config: dict, model_name: Optional[str] = None) -> Config:
    """Maps HF `RobertaConfig` fields onto our `Config`."""
    pad = hf_config.get("pad_token_id", 1)
    architectures = hf_config.get("architectures") or []
    id2label = {}
    if "RobertaForSequenceClassification" in architectures:
        id2label = {int(k): v for k, v in (hf_config.get("id2label") or {}).items()}
    base = dict(name_to_config[model_name]) if model_name in name_to_config else {"name": model_name or ""}
    base.update(
        vocab_size=hf_config["vocab_size"],
        padded_vocab_size=hf_config["vocab_size"],
        n_layer=hf_config["num_hidden_layers"],
        n_embd=hf_config["hidden_size"],
        n_head=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        block_size=hf_config["max_position_embeddings"] - pad - 1,
        type_vocab_size=hf_config.get("type_vocab_size", 1),
        pad_token_id=pad,
        bos_token_id=hf_config.get("bos_token_id", 0),
        eos_token_id=hf_config.get("eos_token_id", 2),
        mask_token_id=hf_config.get("mask_token_id", base.get("mask_token_id", hf_config["vocab_size"] - 1)),
        norm_eps=hf_config.get("layer_norm_eps", 1e-5),
        hidden_dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout=hf_config.get("classifier_dropout"),
        initializer_range=hf_config.get("initializer_range", 0.02),
        hidden_act=hf_config.get("hidden_act", "gelu"),
        causal=bool(hf_config.get("is_decoder", False)),
        num_labels=len(id2label),
        id2label=id2label,
    )
    return Config(**base)


def load_hf_weights(checkpoint_dir: Path) -> Dict[str, torch.Tensor]:
    """Reads `model.safetensors` (single or sharded) or `pytorch_model.bin`, safely."""
    if (checkpoint_dir / "model.safetensors").is_file():
        return load_state_dict_file(checkpoint_dir / "model.safetensors")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = checkpoint_dir / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: Dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_state_dict_file(checkpoint_dir / shard))
            return state
    if (checkpoint_dir / "pytorch_model.bin").is_file():
        return load_state_dict_file(checkpoint_dir / "pytorch_model.bin")
    raise UsageError(
        f"{checkpoint_dir}: no weights found; looked for model.safetensors, model.safetensors.index.json,"
        " pytorch_model.bin.index.json and pytorch_model.bin"
    )


def hf_to_lit_state_dict(hf_state: Dict[str, torch.Tensor], n_layer: int) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in hf_state.items():
        name = key[len("roberta.") :] if key.startswith("roberta.") else key
        if name.startswith(DROPPED) or key.startswith(DROPPED):
            continue
        if name in TOP_MAP:
            state[TOP_MAP[name]] = value
            continue
        if name.startswith("encoder.layer."):
            idx, rest = name[len("encoder.layer.") :].split(".", 1)
            module, param = rest.rsplit(".", 1)
            if module in ("attention.self.query", "attention.self.key", "attention.self.value"):
                qkv.setdefault((int(idx), param), {})[module.rsplit(".", 1)[1]] = value
                continue
            if module in LAYER_MAP:
                state[f"roberta.h.{idx}.{LAYER_MAP[module]}.{param}"] = value
                continue
        unknown.append(key)
    if unknown:
        raise UsageError(f"unexpected weights in the HuggingFace checkpoint: {unknown[:5]} (is it a RoBERTa model?)")
    for (idx, param), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise UsageError(f"layer {idx}: query/key/value {param} incomplete in the HuggingFace checkpoint")
        state[f"roberta.h.{idx}.attn.qkv.{param}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return state


def build_model(config: Config, state_dict: Dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Instantiates the right head for `state_dict` and loads it strictly, with one clear error on a mismatch."""
    from litgpt.model_roberta import (
        RobertaForMaskedLM,
        RobertaForSequenceClassification,
        RobertaModel,
        model_class_for_state_dict,
    )

    kind = model_class_for_state_dict(state_dict)
    with torch.device("meta"):
        if kind == "classification":
            num_labels = state_dict["classifier.out_proj.weight"].shape[0]
            model = RobertaForSequenceClassification(config, num_labels)
        elif kind == "mlm":
            model = RobertaForMaskedLM(config)
        else:
            model = RobertaModel(config)
    if kind == "base":
        state_dict = {k[len("roberta.") :]: v for k, v in state_dict.items()}
    check_state_dict(model, state_dict, source)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state_dict, strict=True)
    return model


def check_state_dict(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise UsageError(f"{source}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise UsageError(
                f"{source}: weight {key} has shape {tuple(state_dict[key].shape)}, the config expects"
                f" {tuple(value.shape)} (a checkpoint from another config?)"
            )


def load_hf_checkpoint(checkpoint_dir: Path, model_name: Optional[str] = None) -> Tuple[Config, Dict[str, torch.Tensor]]:
    """Reads a HF RoBERTa dir into our config and state dict, checked against each other."""
    checkpoint_dir = Path(checkpoint_dir)
    config = config_from_hf(read_hf_config(checkpoint_dir), model_name)
    state = hf_to_lit_state_dict(load_hf_weights(checkpoint_dir), config.n_layer)
    if "classifier.out_proj.weight" in state:
        num_labels = state["classifier.out_proj.weight"].shape[0]
        if config.num_labels != num_labels:
            config.num_labels = num_labels
            config.id2label = {i: config.id2label.get(i, f"LABEL_{i}") for i in range(num_labels)}
    build_model(config, state, str(checkpoint_dir))  # validates names and shapes
    return config, state


@torch.inference_mode()
def convert_hf_checkpoint(checkpoint_dir: Path, model_name: Optional[str] = None) -> None:
    """Convert a HuggingFace RoBERTa checkpoint dir into a litgpt checkpoint dir, in place.

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
    """HF RoBERTa dirs may ship only `vocab.json` + `merges.txt`; write `tokenizer.json` so every command can read it."""
    if (checkpoint_dir / "tokenizer.json").is_file():
        return
    if (checkpoint_dir / "vocab.json").is_file() and (checkpoint_dir / "merges.txt").is_file():
        from litgpt.tokenizer import Tokenizer

        Tokenizer(checkpoint_dir).save(checkpoint_dir)


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(convert_hf_checkpoint, None, prog="convert_hf_checkpoint")

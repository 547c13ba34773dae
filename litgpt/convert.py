"""The HuggingFace RoBERTa format, both ways: weight names, config fields, state dicts.

Pure mappings, no file I/O beyond `config.json`: `litgpt.checkpoint` reads HF folders with them and
`litgpt.export` writes HF folders with them. Query, key and value are fused into one `attn.qkv` on our side.
"""

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from litgpt.config import Config, name_to_config
from litgpt.utils import UsageError

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
    """The HF class name for the head that `state` carries."""
    from litgpt.model_roberta import model_class_for_state_dict

    kind = model_class_for_state_dict(state)
    if kind == "mlm":
        return "RobertaForCausalLM" if config.causal else "RobertaForMaskedLM"
    return {"classification": "RobertaForSequenceClassification", "base": "RobertaModel"}[kind]

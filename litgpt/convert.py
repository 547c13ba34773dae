"""The HuggingFace RoBERTa and BERT formats, both ways: weight names, config fields, state dicts.

Pure mappings, no file I/O beyond `config.json`: `litgpt.checkpoint` reads HF folders with them and
`litgpt.export` writes HF folders with them. Query, key and value are fused into one `attn.qkv` on our side.
"""

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from litgpt.config import BERT, Config, label_names, name_to_config
from litgpt.utils import UsageError

# The HF names by family. The blocks are named alike; the prefix, the heads and what HF stores but we do not differ.
# Query/key/value are fused into `attn.qkv` on our side; BERT's pooler is the encoder's `pooler`.
FAMILIES = {
    "roberta": dict(
        prefix="roberta.",
        architectures={"model": "RobertaModel", "mlm": "RobertaForMaskedLM", "causal": "RobertaForCausalLM",
                       "classification": "RobertaForSequenceClassification",
                       "token_classification": "RobertaForTokenClassification", "qa": "RobertaForQuestionAnswering"},
        heads={
            "lm_head.dense.weight": "lm_head.dense.weight",
            "lm_head.dense.bias": "lm_head.dense.bias",
            "lm_head.layer_norm.weight": "lm_head.norm.weight",
            "lm_head.layer_norm.bias": "lm_head.norm.bias",
            "lm_head.bias": "lm_head.bias",
            "classifier.dense.weight": "classifier.dense.weight",
            "classifier.dense.bias": "classifier.dense.bias",
            "classifier.out_proj.weight": "classifier.out_proj.weight",
            "classifier.out_proj.bias": "classifier.out_proj.bias",
            "qa_outputs.weight": "qa_outputs.weight",
            "qa_outputs.bias": "qa_outputs.bias",
        },
        # tied copies of the word embeddings, a legacy buffer, and the pooler RoBERTa's heads never read
        dropped=("lm_head.decoder.weight", "lm_head.decoder.bias", "embeddings.position_ids", "pooler."),
    ),
    "bert": dict(
        prefix="bert.",
        architectures={"model": "BertModel", "mlm": "BertForMaskedLM", "causal": "BertLMHeadModel",
                       "classification": "BertForSequenceClassification",
                       "token_classification": "BertForTokenClassification", "qa": "BertForQuestionAnswering"},
        heads={
            "cls.predictions.transform.dense.weight": "lm_head.dense.weight",
            "cls.predictions.transform.dense.bias": "lm_head.dense.bias",
            "cls.predictions.transform.LayerNorm.weight": "lm_head.norm.weight",
            "cls.predictions.transform.LayerNorm.bias": "lm_head.norm.bias",
            "cls.predictions.bias": "lm_head.bias",
            "classifier.weight": "classifier.out_proj.weight",
            "classifier.bias": "classifier.out_proj.bias",
            "qa_outputs.weight": "qa_outputs.weight",
            "qa_outputs.bias": "qa_outputs.bias",
        },
        # tied copies, a legacy buffer, and the next-sentence head of `BertForPreTraining` checkpoints
        dropped=("cls.predictions.decoder.", "embeddings.position_ids", "cls.seq_relationship."),
    ),
}
# HF's token classifiers call their one linear layer `classifier`, as BERT's sequence classifier does: which one a
# checkpoint holds comes from its architecture
TOKEN_HEAD = {"classifier.weight": "token_classifier.weight", "classifier.bias": "token_classifier.bias"}
# per-layer HF names -> litgpt names
LAYER_MAP = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "norm_1",
    "intermediate.dense": "mlp.fc",
    "output.dense": "mlp.proj",
    "output.LayerNorm": "norm_2",
}
# encoder names, below the family's prefix
ENCODER_MAP = {
    "embeddings.word_embeddings.weight": "roberta.wte.weight",
    "embeddings.position_embeddings.weight": "roberta.wpe.weight",
    "embeddings.token_type_embeddings.weight": "roberta.wtte.weight",
    "embeddings.LayerNorm.weight": "roberta.ln_emb.weight",
    "embeddings.LayerNorm.bias": "roberta.ln_emb.bias",
    "pooler.dense.weight": "roberta.pooler.weight",
    "pooler.dense.bias": "roberta.pooler.bias",
}
REQUIRED_FIELDS = ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
                   "max_position_embeddings")
# the names of early BERT checkpoints (TensorFlow's LayerNorm)
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


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
    known = FAMILIES.get(model_type, {}).get("architectures", {}).values()
    if model_type not in FAMILIES or any(a not in known for a in architectures):
        expected = sorted(a for family in FAMILIES.values() for a in family["architectures"].values())
        raise UsageError(f"{path}: model_type={model_type!r}, architectures={architectures}; expected a RoBERTa or "
                         f"BERT checkpoint (model_type 'roberta' or 'bert', one of {expected})")
    missing = [k for k in REQUIRED_FIELDS if not isinstance(hf_config.get(k), int)]
    if missing:
        raise UsageError(f"{path}: no integer {', '.join(missing)}; expected the fields of a {model_type} config")
    return hf_config


def config_from_hf(hf_config: dict, model_name: Optional[str] = None) -> Config:
    """Maps HF `RobertaConfig` / `BertConfig` fields onto our `Config`."""
    model_type = hf_config["model_type"]
    bert = model_type == "bert"
    pad = hf_config.get("pad_token_id", 0 if bert else 1)
    architectures = hf_config.get("architectures") or []
    id2label = {}
    labelled = [FAMILIES[model_type]["architectures"][k] for k in ("classification", "token_classification")]
    if any(a in architectures for a in labelled):
        id2label = {int(k): v for k, v in (hf_config.get("id2label") or {}).items()}
    base = dict(BERT) if bert else {}
    base.update(name_to_config.get(model_name, {"name": model_name or ""}))
    # the special ids are the tokenizer's, checked when one is loaded; these are the family's usual ones
    defaults = dict(bos_token_id=base.get("bos_token_id", 0), eos_token_id=base.get("eos_token_id", 2),
                    mask_token_id=base.get("mask_token_id", hf_config["vocab_size"] - 1))
    base.update(
        vocab_size=hf_config["vocab_size"],
        padded_vocab_size=hf_config["vocab_size"],
        n_layer=hf_config["num_hidden_layers"],
        n_embd=hf_config["hidden_size"],
        n_head=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        block_size=hf_config["max_position_embeddings"] - (0 if bert else pad + 1),
        type_vocab_size=hf_config.get("type_vocab_size", 2 if bert else 1),
        model_type=model_type,
        pad_aware_positions=not bert,
        pooler=bert,
        pad_token_id=pad,
        **{k: hf_config.get(k) if hf_config.get(k) is not None else v for k, v in defaults.items()},
        norm_eps=hf_config.get("layer_norm_eps", 1e-12 if bert else 1e-5),
        hidden_dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout=hf_config.get("classifier_dropout"),
        initializer_range=hf_config.get("initializer_range", 0.02),
        hidden_act=hf_config.get("hidden_act", "gelu"),
        causal=bool(hf_config.get("is_decoder", False)),
        num_labels=len(id2label),
        id2label=id2label,
        problem_type=(hf_config.get("problem_type")
                      if FAMILIES[model_type]["architectures"]["classification"] in architectures else None),
    )
    return Config(**base)


def hf_to_lit_state_dict(hf_state: Dict[str, torch.Tensor], config: Config,
                         architecture: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """HF names -> ours. `architecture` (config.json's) tells a token classifier's `classifier` from BERT's sequence
    classifier's; without it, a `classifier.weight` beside no pooler (BERT) or on its own (RoBERTa) is a token head."""
    family = FAMILIES[config.model_type]
    prefix = family["prefix"]
    if architecture is None and "classifier.weight" in hf_state:
        token = config.model_type == "roberta" or f"{prefix}pooler.dense.weight" not in hf_state
        architecture = family["architectures"]["token_classification" if token else "classification"]
    heads = family["heads"]
    if architecture == family["architectures"]["token_classification"]:
        heads = {**heads, **TOKEN_HEAD}
    state: Dict[str, torch.Tensor] = {}
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in hf_state.items():
        for old, new in LEGACY_SUFFIXES.items():
            key = key[: -len(old)] + new if key.endswith(old) else key
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name.startswith(family["dropped"]):
            continue
        if name in heads:
            state[heads[name]] = value
            continue
        if name in ENCODER_MAP:
            state[ENCODER_MAP[name]] = value
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
        raise UsageError(f"unexpected weights in the HuggingFace checkpoint: {unknown[:5]} (is it a "
                         f"{config.model_type} model?)")
    for (idx, param), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise UsageError(f"layer {idx}: query/key/value {param} incomplete in the HuggingFace checkpoint")
        state[f"roberta.h.{idx}.attn.qkv.{param}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return state


def lit_to_hf_state_dict(state: Dict[str, torch.Tensor], config: Config) -> Dict[str, torch.Tensor]:
    family = FAMILIES[config.model_type]
    from litgpt.model_roberta import HEAD_PREFIXES, headed_names

    heads = {lit: hf for names in (family["heads"], TOKEN_HEAD) for hf, lit in names.items()}
    encoder = {lit: hf for hf, lit in ENCODER_MAP.items()}
    layer = {lit: hf for hf, lit in LAYER_MAP.items()}
    bare = not any(k.startswith(HEAD_PREFIXES) for k in state)  # a headless RobertaModel / BertModel
    prefix = "" if bare else family["prefix"]
    hf: Dict[str, torch.Tensor] = {}
    for key, value in headed_names(state).items():
        if key in heads:
            hf[heads[key]] = value
            continue
        if key in encoder:
            hf[prefix + encoder[key]] = value
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
        "model_type": config.model_type,
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
        "classifier_dropout": config.classifier_dropout,
        "position_embedding_type": "absolute",
        "is_decoder": config.causal,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if config.model_type == "roberta":  # BERT's config has no bos/eos: its tokenizer's [CLS]/[SEP] play that part
        hf.update(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)
    if architecture in (FAMILIES[config.model_type]["architectures"][k] for k in ("classification",
                                                                                 "token_classification")):
        id2label = dict(enumerate(label_names(config.id2label, config.num_labels)))
        hf["num_labels"] = config.num_labels
        hf["id2label"] = {str(i): label for i, label in id2label.items()}
        hf["label2id"] = {label: i for i, label in id2label.items()}
        if config.problem_type is not None and architecture.endswith("SequenceClassification"):
            hf["problem_type"] = config.problem_type
    return hf


def architecture_for(state: Dict[str, torch.Tensor], config: Config) -> str:
    """The HF class name for the head that `state` carries."""
    from litgpt.model_roberta import model_class_for_state_dict

    kind = model_class_for_state_dict(state)
    if kind == "mlm" and config.causal:
        kind = "causal"
    return FAMILIES[config.model_type]["architectures"]["model" if kind == "base" else kind]

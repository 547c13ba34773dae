"""Model configuration: one dataclass plus a registry of named configs, RoBERTa and the BERT family.

BERT, MiniLM and RoBERTa are one encoder with a few switches: where positions start (`pad_aware_positions`), the
number of token types, the LayerNorm eps, BERT's pooler in front of the classifier (`pooler`), and the HuggingFace
weight names the checkpoints use (`model_type`).
"""

from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

# the fields that decide the weights' shapes (besides the vocabulary)
ARCH_FIELDS = ("n_layer", "n_embd", "n_head", "intermediate_size", "block_size", "type_vocab_size", "model_type",
               "pad_aware_positions")


def label_names(id2label: Dict[int, str], count: int) -> List[str]:
    """The names of label ids 0..count-1: `id2label`'s, and HF's default `LABEL_i` where it has none."""
    return [id2label.get(i, f"LABEL_{i}") for i in range(count)]


@dataclass
class Config:
    name: str = ""
    hf_config: Dict[str, str] = field(default_factory=dict)
    vocab_size: int = 50265
    # rows of the embedding/decoder; equal to `vocab_size` for RoBERTa, kept for Lit-GPT parity
    padded_vocab_size: Optional[int] = None
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    intermediate_size: int = 3072
    # usable positions; with `pad_aware_positions` the position table has `block_size + pad_token_id + 1` rows
    block_size: int = 512
    type_vocab_size: int = 1
    # the HuggingFace format the weights convert to and from: "roberta" or "bert"
    model_type: str = "roberta"
    # RoBERTa: positions count only real tokens and start at `pad_token_id + 1`; BERT: 0, 1, 2, ... everywhere
    pad_aware_positions: bool = True
    # BERT: the encoder carries a pooler (dense + tanh on [CLS]) that the classifier reads
    pooler: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    mask_token_id: int = 50264
    norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: Optional[float] = None
    initializer_range: float = 0.02
    hidden_act: str = "gelu"
    # causal mode: a causal attention mask and a next-token loss (HF's `is_decoder=True`)
    causal: bool = False
    # classification heads only
    num_labels: int = 0
    id2label: Dict[int, str] = field(default_factory=dict)
    # HF's names: single_label_classification, regression (num_labels 1) or multi_label_classification
    problem_type: Optional[str] = None

    def __post_init__(self) -> None:
        if self.padded_vocab_size is None:
            self.padded_vocab_size = self.vocab_size
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.model_type not in ("roberta", "bert"):
            raise ValueError(f"model_type {self.model_type!r} is not supported; expected 'roberta' or 'bert'")
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; RoBERTa uses 'gelu'")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        problem_types = ("single_label_classification", "regression", "multi_label_classification")
        if self.problem_type is not None and self.problem_type not in problem_types:
            raise ValueError(f"problem_type {self.problem_type!r}: expected one of {', '.join(problem_types)}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.block_size + (self.pad_token_id + 1 if self.pad_aware_positions else 0)

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "Config":
        if name not in name_to_config:
            raise ValueError(f"Unknown model name {name!r}. Known names: {', '.join(sorted(name_to_config))}")
        conf = deepcopy(name_to_config[name])
        conf.update(kwargs)
        return cls(**conf)

    @classmethod
    def from_file(cls, path: Union[str, Path], **kwargs: Any) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            with open(path, encoding="utf-8") as fp:
                conf = yaml.safe_load(fp)
        except yaml.YAMLError as ex:
            raise ValueError(f"{path}: not valid YAML ({ex.__class__.__name__})") from None
        if not isinstance(conf, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config fields {unknown}")
        conf.update(kwargs)
        return cls(**conf)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Union[str, Path], **kwargs: Any) -> "Config":
        """Loads `model_config.yaml` from a checkpoint dir."""
        checkpoint_dir = Path(checkpoint_dir)
        if (checkpoint_dir / "model_config.yaml").is_file():
            return cls.from_file(checkpoint_dir / "model_config.yaml", **kwargs)
        if checkpoint_dir.name in name_to_config:
            return cls.from_name(checkpoint_dir.name, **kwargs)
        raise FileNotFoundError(f"{checkpoint_dir}: no model_config.yaml found (is this a litgpt checkpoint dir?)")

    def architecture_diff(self, other: "Config") -> List[str]:
        """The fields that decide the weights' shapes where `other` differs: weights from one fit the other only
        when this is empty (vocabularies may differ: the embedding rows are checked when the weights load)."""
        return [f"{k}={getattr(other, k)} (expected {getattr(self, k)})" for k in ARCH_FIELDS
                if getattr(other, k) != getattr(self, k)]

    def flops_per_token(self) -> float:
        """Nominal training FLOPs per token (forward + backward = 3x forward): the blocks' matmuls and attention."""
        C, L, T = self.n_embd, self.n_layer, self.block_size
        block_params = L * (4 * C * C + 2 * C * self.intermediate_size)
        return 6 * block_params + 6 * L * 2 * C * T

    @classmethod
    def resolve(cls, name: str, overrides: Optional[Union[Dict[str, Any], str, Path]] = None) -> "Config":
        """`--model_name` with `--model_config.FIELD VALUE` overrides: the registry entry, field by field. A path
        instead of overrides is a whole `model_config.yaml` (named `name` when it has no name)."""
        import difflib

        from litgpt.utils import UsageError

        if isinstance(overrides, (str, Path)):
            try:
                config = cls.from_file(overrides)
            except (FileNotFoundError, ValueError) as ex:
                raise UsageError(f"--model_config {overrides}: {ex}") from None
            return config if config.name else replace(config, name=name)
        if name not in name_to_config:
            raise UsageError(f"--model_name {name!r}: unknown; known names: {', '.join(sorted(name_to_config))}")
        overrides = dict(overrides or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean --model_config.{close[0]}?" if close else f"known: {', '.join(sorted(known))}"
            raise UsageError(f"--model_config.{unknown[0]}: not a config field; {hint}")
        for key, value in overrides.items():
            default = getattr(cls, key, None)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UsageError(f"--model_config.{key} {value!r}: expected a number")
        try:
            return cls.from_name(name, **overrides)
        except ValueError as ex:
            raise UsageError(f"--model_config: {ex}") from None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        from litgpt.utils import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


def _roberta(name: str, org: str = "FacebookAI", **kwargs: Any) -> Dict[str, Any]:
    return dict(name=name, hf_config=dict(org=org, name=name), **kwargs)


# BERT's switches, with the ids of its uncased WordPiece vocabulary ([PAD]=0, [CLS]=101, [SEP]=102, [MASK]=103)
BERT = dict(model_type="bert", pad_aware_positions=False, pooler=True, type_vocab_size=2, norm_eps=1e-12,
            vocab_size=30522, pad_token_id=0, bos_token_id=101, eos_token_id=102, mask_token_id=103)


def _bert(name: str, org: str, **kwargs: Any) -> Dict[str, Any]:
    return dict(name=name, hf_config=dict(org=org, name=name), **{**BERT, **kwargs})


configs: List[Dict[str, Any]] = [
    _roberta("roberta-base"),
    _roberta("roberta-large", n_layer=24, n_embd=1024, n_head=16, intermediate_size=4096),
    _roberta("distilroberta-base", org="distilbert", n_layer=6),
    # small configs for CPU demos and tests; they keep RoBERTa's special ids and shrink the rest
    dict(name="roberta-small", n_layer=4, n_embd=256, n_head=4, intermediate_size=1024, block_size=128),
    dict(name="roberta-mini", n_layer=2, n_embd=128, n_head=2, intermediate_size=512, block_size=128),
    # the CPU demo: a 4096-token vocabulary trained on the demo text keeps the softmax cheap
    dict(
        name="roberta-demo",
        vocab_size=4096,
        mask_token_id=4095,
        n_layer=4,
        n_embd=256,
        n_head=4,
        intermediate_size=1024,
        block_size=128,
    ),
    dict(
        name="roberta-tiny",
        vocab_size=1000,
        mask_token_id=999,
        n_layer=2,
        n_embd=32,
        n_head=4,
        intermediate_size=64,
        block_size=64,
    ),
    # the BERT family
    _bert("bert-base-uncased", org="google-bert"),
    _bert("bert-large-uncased", org="google-bert", n_layer=24, n_embd=1024, n_head=16, intermediate_size=4096),
    _bert("all-MiniLM-L6-v2", org="sentence-transformers", n_layer=6, n_embd=384, n_head=12, intermediate_size=1536),
    _bert("all-MiniLM-L12-v2", org="sentence-transformers", n_layer=12, n_embd=384, n_head=12,
          intermediate_size=1536),
    # a small BERT for tests: a trained WordPiece vocabulary puts [PAD], [UNK], [CLS], [SEP], [MASK] at 0-4
    dict(BERT, name="bert-tiny", vocab_size=1000, bos_token_id=2, eos_token_id=3, mask_token_id=4, n_layer=2,
         n_embd=32, n_head=4, intermediate_size=64, block_size=64),
]
name_to_config: Dict[str, Dict[str, Any]] = {c["name"]: c for c in configs}

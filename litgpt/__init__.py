"""litgpt, RoBERTa edition: hackable RoBERTa pretraining, finetuning and inference."""

from litgpt.config import Config
from litgpt.model_roberta import (
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaModel,
)


def __getattr__(name):
    # the tokenizer pulls in `tokenizers`; import it only when asked for
    if name == "Tokenizer":
        from litgpt.tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'litgpt' has no attribute {name!r}")


__all__ = [
    "Config",
    "Tokenizer",
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForCausalLM",
    "RobertaForSequenceClassification",
]

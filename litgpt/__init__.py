"""litgpt, RoBERTa edition: hackable RoBERTa pretraining, finetuning and inference."""

import importlib

# Everything is imported on first use: `import litgpt` stays cheap, and each CLI command only imports what it needs.
_EXPORTS = {
    "Config": "litgpt.config",
    "Tokenizer": "litgpt.tokenizer",
    "RobertaModel": "litgpt.model_roberta",
    "RobertaForMaskedLM": "litgpt.model_roberta",
    "RobertaForCausalLM": "litgpt.model_roberta",
    "RobertaForSequenceClassification": "litgpt.model_roberta",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'litgpt' has no attribute {name!r}")


__all__ = list(_EXPORTS)

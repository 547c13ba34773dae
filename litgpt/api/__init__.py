"""Python API for inference: load any checkpoint, then fill masks, embed, classify text, tag entities or answer
questions.

```python
from litgpt.api import Classifier, Embedder, MaskedLM, QuestionAnswerer, TokenClassifier

mlm = MaskedLM.load("out/pretrain-demo/final")
mlm.fill_mask("The capital of France is <mask>.", top_k=5)
clf = Classifier.load("out/roberta_finetuned")
clf.predict(["great movie", "boring plot"])
emb = Embedder.load("path/to/all-MiniLM-L6-v2")  # pooling and normalization from the sentence-transformers files
emb.embed(["a sentence", "another one"])  # [2, 384]
TokenClassifier.load("out/ner").predict("Maria Lopez moved to Lisbon.")  # entities with character spans
QuestionAnswerer.load("out/qa").answer("Where did Maria move?", "Maria Lopez moved to Lisbon in 2015.")
```

`source` is anything `litgpt.checkpoint.load_checkpoint` reads: a litgpt checkpoint dir, a pretraining out_dir,
a training-state file, a HuggingFace dir, or a registry name that `litgpt download` fetched; or a folder written by
`litgpt export`, which runs on ONNX Runtime (`api/onnx_runtime.py`).
Texts go through the model in padded batches of `batch_size`, sorted by length so little compute goes to padding.
"""

from litgpt.api.base import POOLING, pool, resolve_device
from litgpt.api.texts import Classifier, Embedder, MaskedLM, sentence_transformers_recipe
from litgpt.api.tokens import QuestionAnswerer, TokenClassifier, group_entities, qa_settings, question_room

__all__ = ["Classifier", "Embedder", "MaskedLM", "QuestionAnswerer", "TokenClassifier", "POOLING", "pool",
           "resolve_device", "sentence_transformers_recipe", "group_entities", "qa_settings", "question_room"]

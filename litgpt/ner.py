"""`litgpt ner`: the entities in texts, from a finetuned token classifier (`litgpt finetune --task ner`)."""

import json as jsonlib
import sys
from pathlib import Path
from typing import List, Optional

from litgpt.classify import gather_texts


def main(
    checkpoint: str,
    text: Optional[List[str]] = None,
    file: Optional[Path] = None,
    json: bool = False,
    device: Optional[str] = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> None:
    """Tag the named entities (or any word labels) of texts with a finetuned token classifier.

    Args:
        checkpoint: A `litgpt finetune --task ner` output_dir, or any checkpoint with a token classification head.
        text: A text to tag; repeat the flag for several.
        file: A UTF-8 file with one text per line (blank lines are skipped); read after the --text values.
        json: Print one JSON document: a list with one `{"text", "entities": [{"entity", "label", "start", "end",
            "score"}]}` per text; `start`/`end` are character offsets into the text.
        device: `cpu`, `cuda` or `cuda:N`; default: the GPU if there is one.
        batch_size: Windows per forward pass.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    from litgpt.api import TokenClassifier

    texts = gather_texts(text, file)
    tagger = TokenClassifier.load(checkpoint, device=device, batch_size=batch_size, precision=precision)
    results = tagger.predict(texts)
    if json:
        print(jsonlib.dumps(results, ensure_ascii=False))
        return
    print(tagger.summary, file=sys.stderr)
    for result in results:
        print(result["text"])
        for e in result["entities"]:
            print(f"  {e['label']:<8} {e['entity']!r} [{e['start']}:{e['end']}] {e['score']:.4f}")
        if not result["entities"]:
            print("  (no entities)")

"""`litgpt classify`: label texts with a finetuned sequence classifier."""

import json as jsonlib
import sys
from pathlib import Path
from typing import List, Optional

from litgpt.utils import UsageError


def main(
    output_dir: str,
    text: Optional[List[str]] = None,
    text_pair: Optional[List[str]] = None,
    file: Optional[Path] = None,
    json: bool = False,
    device: Optional[str] = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> None:
    """Classify texts with a finetuned RoBERTa classifier.

    Args:
        output_dir: A finetuning output_dir (HuggingFace files), or any checkpoint with a classification head.
        text: A text to classify; repeat the flag for several.
        text_pair: The second text of a sentence pair, one per --text in the same order (for a model finetuned on
            pairs).
        file: A UTF-8 file with one text per line (blank lines are skipped); read after the --text values.
        json: Print one JSON document on stdout: a list with one `{"text", "label", "label_id", "probabilities"}`
            per text, the probabilities ordered by label id (`{"text", "score"}` for a regression model;
            `{"text", "labels", "label_ids", "probabilities"}` for a multi-label one; `text_pair` with pairs).
        device: `cpu`, `cuda` or `cuda:N`; default: the GPU if there is one.
        batch_size: Texts per forward pass.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    from litgpt.api import Classifier
    texts = gather_texts(text, file)
    if text_pair is not None and len(text_pair) != len(texts):
        raise UsageError(f"--text_pair: {len(text_pair)} given for {len(texts)} texts; pass one --text_pair per "
                         "--text (pairs do not go with --file)")
    classifier = Classifier.load(output_dir, device=device, batch_size=batch_size, precision=precision)
    predictions = classifier.predict(texts, text_pair)
    if json:
        print(jsonlib.dumps(predictions, ensure_ascii=False))
        return
    print(classifier.summary, file=sys.stderr)
    labels = classifier.labels
    for p in predictions:
        shown = p["text"] + (f"\t{p['text_pair']}" if "text_pair" in p else "")
        if "score" in p:
            print(f"{p['score']:.4f}\t{shown}")
        elif "labels" in p:
            probs = ", ".join(f"{name} {prob:.4f}" for name, prob in zip(labels, p["probabilities"]))
            print(f"{','.join(p['labels']) or '-'}\t({probs})\t{shown}")
        else:
            probs = ", ".join(f"{name} {prob:.4f}" for name, prob in zip(labels, p["probabilities"]))
            print(f"{p['label']}\t({probs})\t{shown}")


def gather_texts(text: Optional[List[str]], file: Optional[Path]) -> List[str]:
    """The `--text` values, then the lines of `--file`; at least one."""
    texts = list(text or []) + (read_lines(Path(file)) if file is not None else [])
    if not texts:
        raise UsageError('no input: pass --text "..." (repeatable) or --file texts.txt')
    return texts


def read_lines(path: Path) -> List[str]:
    if not path.is_file():
        raise UsageError(f"--file {path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as ex:
        raise UsageError(f"--file {path}: not UTF-8 text (byte {ex.start})") from None
    except OSError as ex:
        raise UsageError(f"--file {path}: cannot read it ({ex.strerror})") from None
    return [line for line in lines if line.strip()]

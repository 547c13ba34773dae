"""`litgpt qa`: the answer to a question as a span of its context, from a finetuned QA model
(`litgpt finetune --task qa`)."""

import json as jsonlib
import sys
from pathlib import Path
from typing import Optional

from litgpt.utils import UsageError


def main(
    checkpoint: str,
    question: Optional[str] = None,
    context: Optional[str] = None,
    context_file: Optional[Path] = None,
    json: bool = False,
    device: Optional[str] = None,
    precision: str = "fp32",
) -> None:
    """Answer a question from a context with a finetuned extractive QA model.

    Args:
        checkpoint: A `litgpt finetune --task qa` output_dir, or any checkpoint with a question-answering head.
        question: The question.
        context: The passage that holds the answer.
        context_file: Read the context from this UTF-8 file instead.
        json: Print `{"answer", "start", "end", "score"}`: `start`/`end` are character offsets into the context;
            `answer` is "" when a SQuAD v2 model judges the question unanswerable.
        device: `cpu`, `cuda` or `cuda:N`; default: the GPU if there is one.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    from litgpt.api import QuestionAnswerer

    if not question or not question.strip():
        raise UsageError('--question is required: the question to answer, e.g. --question "Who wrote it?"')
    if (context is None) == (context_file is None):
        raise UsageError("give the passage with exactly one of --context TEXT or --context_file FILE")
    if context_file is not None:
        path = Path(context_file)
        if not path.is_file():
            raise UsageError(f"--context_file {path}: file not found")
        try:
            context = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as ex:
            raise UsageError(f"--context_file {path}: not UTF-8 text (byte {ex.start})") from None
    reader = QuestionAnswerer.load(checkpoint, device=device, precision=precision)
    result = reader.answer(question, context)
    if json:
        print(jsonlib.dumps(result, ensure_ascii=False))
        return
    print(reader.summary, file=sys.stderr)
    if result["answer"]:
        print(f"{result['answer']}\t[{result['start']}:{result['end']}]\t{result['score']:.4f}")
    else:
        print(f"(no answer in the context)\t{result['score']:.4f}")

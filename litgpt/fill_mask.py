"""`litgpt fill_mask`: the most likely tokens at each `<mask>`, from any checkpoint."""

import json as jsonlib
import sys
from typing import List, Optional

from litgpt.utils import UsageError


def main(
    checkpoint_dir: str,
    text: Optional[List[str]] = None,
    top_k: int = 5,
    json: bool = False,
    device: Optional[str] = None,
    batch_size: int = 32,
    precision: str = "fp32",
) -> None:
    """Predict the tokens hidden behind `<mask>` in one or more texts.

    Args:
        checkpoint_dir: A litgpt checkpoint dir, a pretraining out_dir (its best.pt), a HuggingFace dir,
            or a registry name fetched with `litgpt download`.
        text: Text holding one or more `<mask>`; repeat the flag for several texts
            (`--text "Paris is the <mask>." --text "The <mask> barked."`).
        top_k: How many candidates to show per mask.
        json: Print one JSON document on stdout: a list with one entry per text, each a list with one entry per
            mask, each a list of `{"token_id", "token", "score"}` sorted best first.
        device: `cpu`, `cuda` or `cuda:N`; default: the GPU if there is one.
        batch_size: Texts per forward pass.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    from litgpt.api import MaskedLM

    texts = list(text or [])
    if not texts:
        raise UsageError('no input: pass --text "... <mask> ..." (repeatable)')
    mlm = MaskedLM.load(checkpoint_dir, device=device, batch_size=batch_size, precision=precision)
    results = mlm.fill_mask(texts, top_k=top_k)
    if json:
        print(jsonlib.dumps(results, ensure_ascii=False))
        return
    print(mlm.summary, file=sys.stderr)
    for text_, masks in zip(texts, results):
        print(text_)
        for m, candidates in enumerate(masks, 1):
            print(f"  mask {m}/{len(masks)}:")
            for rank, c in enumerate(candidates, 1):
                token = jsonlib.dumps(c["token"], ensure_ascii=False)  # quoted, so a leading space shows
                print(f"    {rank:>2}. {c['score']:.4f}  {token}  (id {c['token_id']})")

#!/usr/bin/env bash
# Case A on one CUDA GPU in bf16-mixed at 4 x 512 and 32 x 512 tokens, torch.compile off and then on (both
# models), with tokens/s, MFU and the ratio against HF. A few minutes on an H100. Results go to $OUT (default .).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
common=(--device cuda --precision bf16-mixed --cases A --shapes 4x512,32x512 --rounds 5 --iters 10 --warmup 3)
python benchmarks/compare_hf.py "${common[@]}" --json "$out/gpu_case_a_eager.json"
python benchmarks/compare_hf.py "${common[@]}" --compile --no-memory --json "$out/gpu_case_a_compile.json"

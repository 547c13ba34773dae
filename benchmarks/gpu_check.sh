#!/usr/bin/env bash
# The accelerator check, one command on one CUDA GPU (an H100 or H200: about 5 minutes, compilation included):
#
#   bash benchmarks/gpu_check.sh              # results in $OUT (default gpu_check_out/)
#   CPU_TEST=1 bash benchmarks/gpu_check.sh   # the same stages at tiny sizes on the CPU: checks the script itself
#
# 1. bench_eager: benchmarks/compare_hf.py in bf16-mixed, both models eager: case A at 4x512 and 32x512, a ragged
#    C at 32 x 16..512, D and E, with peak memory and MFU;
# 2. bench_compiled: the same with ours compiled (HF stays eager: the baseline the targets are set against);
# 3. pretrain: `litgpt pretrain` on roberta-base, bf16-mixed, compiled, micro batch 32 x 512, 60 steps over a
#    ~20 MB TextFiles corpus made by repeating the demo sentences, logging tokens/s and MFU;
# 4. finetune: benchmarks/compare_finetune.py, the training step of the sequence, token and span heads at 32 x 16..512
#    (ragged), HF against ours padded, packed, and packed and compiled (`litgpt finetune --compile`);
# 5. cuda_tests: tests/test_cuda.py (variable-length kernel against SDPA, no host sync in a step, bf16 logits).
# Both models train without attention dropout: the variable-length kernel has none (with it, ours pads for SDPA).
# $OUT gets gpu_check.json (every figure), gpu_check.md (the tables) and one log per stage; the corpus, caches
# and checkpoints go to $WORK (default /tmp/litgpt_gpu_check). A stage that fails is reported and the rest still
# run; the exit status is non-zero if any failed. Wheels in .whl/ (jsonargparse, litdata and their needs, for a
# machine without a package index) are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
work="${WORK:-/tmp/litgpt_gpu_check}"
mkdir -p "$out" "$work"
rm -rf "$work/pretrain" "$out/stages.txt"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "${CPU_TEST:-0}" = 1 ]; then
    bench=(--device cpu --precision 32-true --layers 1 --shapes 2x64,4x64 --ragged 4x64 --quick)
    pretrain=(--model_name roberta-base --model_config.n_layer 1 --accelerator cpu --precision 32-true
              --train.micro_batch_size 4 --train.global_batch_size 4 --train.max_seq_length 64
              --train.max_steps 12 --train.log_interval 3 --data.num_workers 1)
    corpus_mb=1
    finetune=(--device cpu --precision 32-true --layers 1 --ragged 4x64 --quick)
else
    bench=(--device cuda --precision bf16-mixed --shapes 4x512,32x512 --ragged 32x512 --rounds 5 --iters 10
           --warmup 3)
    pretrain=(--model_name roberta-base --accelerator cuda --precision bf16-mixed --train.micro_batch_size 32
              --train.global_batch_size 32 --train.max_seq_length 512 --train.max_steps 60 --train.log_interval 10
              --data.num_workers 8)
    corpus_mb=20
    finetune=(--device cuda --precision bf16-mixed --ragged 32x512 --rounds 5 --iters 10 --warmup 3)
fi
bench+=(--attention-dropout 0 --cases D,E)

failed=0
stage() {  # stage NAME COMMAND...: runs it with its output in $out/NAME.log, and notes its status and time
    local name=$1 start=$SECONDS rc
    shift
    echo "== $name: $*"
    "$@" > "$out/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$out/stages.txt"
    [ "$rc" = 0 ] || { failed=1; tail -n 20 "$out/$name.log"; }
}

stage bench_eager python benchmarks/compare_hf.py "${bench[@]}" --json "$work/bench_eager.json"
stage bench_compiled python benchmarks/compare_hf.py "${bench[@]}" --compile ours --no-memory \
    --json "$work/bench_compiled.json"

python - "$work/corpus" "$corpus_mb" <<'EOF'
import random, sys
from pathlib import Path
root, megabytes = Path(sys.argv[1]), float(sys.argv[2])
sentences = Path("litgpt/data/test_sentences.txt").read_text().split("\n")
sentences = [s for s in sentences if s.strip()]
rng, docs, size = random.Random(0), [], 0
while size < megabytes * 2**20:  # documents of 5-40 shuffled sentences, separated by blank lines
    doc = " ".join(rng.choice(sentences) for _ in range(rng.randint(5, 40)))
    docs.append(doc)
    size += len(doc) + 2
root.mkdir(parents=True, exist_ok=True)
(root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
EOF
stage pretrain python -m litgpt pretrain --data TextFiles --data.train_data_path "$work/corpus" \
    --data.cache_dir "$work/cache" --data.val_fraction 0.01 "${pretrain[@]}" \
    --model_config.attention_dropout 0 --train.lr_warmup_steps 10 --train.save_interval 100000 \
    --eval.initial_validation false --eval.final_validation false --eval.interval 100000 --compile true \
    --out_dir "$work/pretrain"
stage finetune python benchmarks/compare_finetune.py "${finetune[@]}" --compile --json "$work/finetune.json"
stage cuda_tests python -m pytest -q -p no:cacheprovider tests/test_cuda.py

python benchmarks/gpu_report.py "$out" "$work" || failed=1
exit $failed

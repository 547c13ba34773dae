"""LoRA against full finetuning on roberta-base dimensions: trainable parameters, peak training memory, wall time,
output size and accuracy, measured side by side on the toy reviews.

    python benchmarks/lora_memory.py                      # a random roberta-base, 1 epoch each, max_length 64
    python benchmarks/lora_memory.py --model_name out/pretrain-demo/final --epochs 8

Each run is `litgpt finetune` in its own process; its peak resident memory is read from /proc as it runs (weights,
gradients and optimizer state included).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def random_roberta_base(folder: Path) -> Path:
    import torch

    from litgpt import Config
    from litgpt.model_roberta import RobertaForMaskedLM
    from litgpt.train_tokenizer import train_tokenizer

    texts = [r["text"] for r in json.loads((ROOT / "data" / "test_data_finetune" / "train.json").read_text())]
    tokenizer = train_tokenizer(texts, vocab_size=2000, out_dir=folder)
    config = Config.from_name("roberta-base", mask_token_id=tokenizer.mask_id)
    torch.manual_seed(0)
    torch.save(RobertaForMaskedLM(config).state_dict(), folder / "lit_model.pth")
    config.save(folder / "model_config.yaml")
    return folder


def finetune(model: Path, out: Path, epochs: int, lr: float, extra: list) -> dict:
    cmd = [sys.executable, "-m", "litgpt", "finetune", "--data_dir", str(ROOT / "data" / "test_data_finetune"),
           "--output_dir", str(out), "--model_name", str(model), "--num_epochs", str(epochs), "--batch_size", "16",
           "--max_length", "64", "--learning_rate", str(lr), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)
        except (OSError, AttributeError):
            pass
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(stderr[-3000:])
    metrics = json.loads((out / "metrics.json").read_text())
    trained = re.search(r"([\d,]+) of ([\d,]+) parameters train", stdout)
    files = [f for f in ("lora.pt", "pytorch_model.bin") if (out / f).is_file()]
    return {"wall_s": time.perf_counter() - start, "peak_rss_mb": peak, "accuracy": metrics["accuracy"],
            "trainable": trained.group(1) if trained else "all", "output": {f: (out / f).stat().st_size for f in files}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lora_r", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model_name or random_roberta_base(Path(tmp) / "base")
        runs = {"full": finetune(model, Path(tmp) / "full", args.epochs, 5e-5, []),
                "lora": finetune(model, Path(tmp) / "lora", args.epochs, 2e-3,
                                 ["--lora_r", str(args.lora_r), "--lora_alpha", str(2 * args.lora_r)])}
    print(f"{model}, {args.epochs} epoch(s), batch 16 x 64 tokens, 32-true on CPU")
    print("| run | trainable params | peak RSS MB | wall s | accuracy | output files |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        files = ", ".join(f"{f} {size / 2**20:.1f} MiB" for f, size in r["output"].items())
        print(f"| {name} | {r['trainable']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} | {r['accuracy']:.3f} | "
              f"{files} |")


if __name__ == "__main__":
    main()

"""A bounded load test of `litgpt serve`: a fixed number of requests at fixed concurrencies, batching on and off.

    python benchmarks/serve_load.py                       # a random roberta-small classifier, 2,000 requests each
    python benchmarks/serve_load.py --checkpoint out/roberta_finetuned --requests 500 --workers_per_device 1
    python benchmarks/serve_load.py --export int8       # the same classifier, served from its int8 ONNX export

For each setting it starts the server on 127.0.0.1 (with the same flags every time but `--max_batch_size`), sends
`--requests` single-text `POST /predict` requests from `concurrency` client threads (each on its own keep-alive
connection), stops the server, and prints throughput, p50/p95/p99 latency and the error count. Every answer is
checked against `litgpt.api` run directly on the same texts (probabilities within `--tolerance`); a wrong answer counts
as an error. An int8 export is checked within 0.02 by default: its activations are quantized per batch, with one scale
over the batch, so a text's probabilities move a little with the company it is batched in (the largest difference
seen is printed).
"""

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (batching, concurrency) in the order they run
SETTINGS = [(False, 1), (False, 32), (True, 1), (True, 8), (True, 32)]


def small_classifier(folder: Path, name: str) -> Path:
    """A random classifier of the registry config `name` with a BPE tokenizer trained on the toy reviews."""
    import torch

    from litgpt import Config
    from litgpt.model_roberta import RobertaForSequenceClassification
    from litgpt.train_tokenizer import train_tokenizer

    texts = [r["text"] for r in json.loads((ROOT / "data" / "test_data_finetune" / "train.json").read_text())]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, vocab_size=2000, out_dir=folder)
    config = Config.from_name(name, vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_id,
                              num_labels=2, id2label={0: "negative", 1: "positive"})
    torch.manual_seed(0)
    torch.save(RobertaForSequenceClassification(config, 2).state_dict(), folder / "lit_model.pth")
    config.save(folder / "model_config.yaml")
    return folder


def start_server(checkpoint: Path, batching: bool, workers: int, batch_timeout: float) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    batch = ["--max_batch_size", "32", "--batch_timeout", str(batch_timeout)] if batching else ["--max_batch_size", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "litgpt", "serve", str(checkpoint), "--port", str(port),
                             "--accelerator", "cpu", "--workers_per_device", str(workers), *batch],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not come up in 120 s")


def run_setting(port: int, texts: list, expected: dict, requests: int, concurrency: int, tolerance: float) -> dict:
    def worker(indices):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies, errors, worst = [], 0, 0.0
        for i in indices:
            text = texts[i % len(texts)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", json.dumps({"text": text}), {"Content-Type": "application/json"})
                response = conn.getresponse()
                body = json.loads(response.read())
                diff = max(abs(a - b) for a, b in zip(body[0]["probabilities"], expected[text]))
                worst = max(worst, diff)
                ok = response.status == 200 and diff <= tolerance
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok
        conn.close()
        return latencies, errors, worst

    shares = [list(range(c, requests, concurrency)) for c in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, shares))
    wall = time.perf_counter() - start
    latencies = sorted(x for lat, _, _ in results for x in lat)
    q = statistics.quantiles(latencies, n=100)
    return {"requests": requests, "throughput": requests / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * q[94], "p99_ms": 1000 * q[98], "errors": sum(e for _, e, _ in results),
            "max_diff": max(w for _, _, w in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="a classifier; default: a small one built here")
    parser.add_argument("--config", default="roberta-small", help="registry config of the small model built here")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers_per_device", type=int, default=2,
                        help="model copies, each with cores // copies threads (2: one per core of a 2-core machine)")
    parser.add_argument("--batch_timeout", type=float, default=0.005)
    parser.add_argument("--export", choices=("none", "fp32", "int8"), default="none",
                        help="serve the classifier's ONNX export (`litgpt export`) instead of the checkpoint")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest probability difference from litgpt.api that counts as right; default 1e-5, "
                             "0.02 for an int8 export")
    args = parser.parse_args()
    tolerance = args.tolerance if args.tolerance is not None else (0.02 if args.export == "int8" else 1e-5)

    from litgpt.api import Classifier

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or small_classifier(Path(tmp) / "checkpoint", args.config)
        if args.export != "none":
            exported = Path(tmp) / f"onnx-{args.export}"
            subprocess.run([sys.executable, "-m", "litgpt", "export", str(checkpoint), "--output_dir", str(exported),
                            "--quantize", "int8" if args.export == "int8" else "none"], cwd=ROOT, check=True)
            checkpoint = exported
        texts = [r["text"] for r in json.loads((ROOT / "data" / "test_data_finetune" / "test.json").read_text())]
        expected = {p["text"]: p["probabilities"] for p in Classifier.load(checkpoint, device="cpu").predict(texts)}
        print(f"{checkpoint}: {args.requests} single-text requests per setting, {len(texts)} distinct texts, "
              f"{args.workers_per_device} model copies, batches of up to 32 in {args.batch_timeout} s, answers "
              f"checked within {tolerance}")
        print("| batching | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | max diff |")
        print("|---|---|---|---|---|---|---|---|")
        rows = {}
        for batching, concurrency in SETTINGS:
            proc, port = start_server(checkpoint, batching, args.workers_per_device, args.batch_timeout)
            try:
                run_setting(port, texts, expected, min(64, args.requests), concurrency, tolerance)  # warm-up
                row = run_setting(port, texts, expected, args.requests, concurrency, tolerance)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            rows[batching, concurrency] = row
            print(f"| {'on' if batching else 'off'} | {concurrency} | {row['throughput']:.0f} | {row['p50_ms']:.1f} | "
                  f"{row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} | {row['max_diff']:.1e} |", flush=True)
        ratio = rows[True, 32]["throughput"] / rows[False, 1]["throughput"]
        print(f"batched at concurrency 32 / unbatched at concurrency 1: {ratio:.1f}x")


if __name__ == "__main__":
    main()

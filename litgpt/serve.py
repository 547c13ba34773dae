"""`litgpt serve`: a checkpoint behind HTTP, on LitServe, with dynamic batching.

`POST /predict` takes `{"text": str}` or `{"texts": [str, ...]}` (fill-mask also `"top_k"`; a classifier of sentence
pairs also `"text_pair"` / `"text_pairs"`, the second texts; question answering `{"question", "context"}` or
`{"questions", "contexts"}`) and answers with the JSON that the matching command prints with `--json`: `litgpt
classify`, `fill_mask`, `embed`, `ner` or `qa`. `GET /health` answers 200 once the model is loaded. The task follows
the checkpoint's head (a classifier classifies, a masked LM fills masks, a token classifier tags entities, a QA
model answers, a bare encoder embeds); `--task embed` embeds with any of them.

Concurrent requests are grouped, up to `--max_batch_size` requests or `--batch_timeout` seconds, and their texts go
through the model together, sorted by length (`litgpt.api` pads each sorted batch), so an answer does not depend on
the company it came in. Every request is checked in the HTTP process before it joins a batch: a bad one gets its own
4xx with a JSON `{"detail": ...}` and never reaches, or fails, the others.
"""

import json
import secrets
import signal
from typing import Any, Dict, List, Optional, Tuple

import litserve as ls

from litgpt.api.base import TASK_OF_HEAD, TASKS
from litgpt.utils import UsageError

HEAD_OF_TASK = {"classify": "classification", "fill_mask": "LM", "ner": "token classification",
                "qa": "question-answering"}
# a task's request fields: (one input, a list of them, its second input, a list of those); None: no second input
FIELDS = {"classify": ("text", "texts", "text_pair", "text_pairs"), "qa": ("question", "questions", "context",
                                                                          "contexts")}
TEXTS_ONLY = ("text", "texts", None, None)


def request_inputs(payload: Dict[str, Any], task: str) -> Tuple[List[Any], Optional[List[Any]], bool]:
    """(first inputs, second inputs or None, whether the request gave one input rather than a list)."""
    one, many, second, seconds = FIELDS.get(task, TEXTS_ONLY)
    single = one in payload
    firsts = [payload[one]] if single else payload[many]
    if second is not None and (second in payload or seconds in payload):
        return firsts, [payload[second]] if single else payload[seconds], single
    return firsts, None, single


def main(
    checkpoint: str,
    task: Optional[str] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    accelerator: str = "auto",
    devices: int = 1,
    workers_per_device: int = 1,
    max_batch_size: int = 32,
    batch_timeout: float = 0.01,
    max_request_bytes: int = 1_000_000,
    max_texts: int = 256,
    api_key: Optional[str] = None,
    precision: str = "fp32",
) -> None:
    """Serve a checkpoint over HTTP: classification, fill-mask or sentence embeddings.

    Args:
        checkpoint: Any checkpoint: a finetuning output_dir, a pretraining out_dir or checkpoint dir, a HuggingFace or
            sentence-transformers folder.
        task: `classify`, `fill_mask`, `embed`, `ner` or `qa`. Default: from the checkpoint's head (classifier,
            masked LM, bare encoder, token classifier, QA model).
        host: The address to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or ::.
        port: The TCP port (1024-65535).
        accelerator: cpu, cuda or auto.
        devices: Number of GPUs, one model copy on each (ignored on CPU).
        workers_per_device: Model copies per device. On CPU the cores are split between the copies (each gets
            cores // copies threads, unless OMP_NUM_THREADS is set): with many concurrent clients, 2 copies of a
            small model keep both halves of the machine busy while the other copy's batch forms.
        max_batch_size: Requests grouped into one batch at most; 1 turns batching off.
        batch_timeout: Seconds a batch waits for more requests before it runs.
        max_request_bytes: Larger request bodies get 413.
        max_texts: Texts allowed in one request.
        api_key: Require `Authorization: Bearer KEY` on /predict (401 without it); also read from LITGPT_API_KEY.
        precision: `fp32`, `bf16` (autocast) or `auto`: bf16 on a CPU with bf16 dot products (AMX or AVX512-BF16),
            where it runs faster, else fp32. For PyTorch checkpoints; an ONNX export runs at its own precision.
    """
    import os

    from litgpt.api.base import check_precision, open_source

    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    for flag, value, low in (("--max_batch_size", max_batch_size, 1), ("--max_request_bytes", max_request_bytes, 1),
                             ("--max_texts", max_texts, 1), ("--workers_per_device", workers_per_device, 1),
                             ("--devices", devices, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{flag} {value!r}: expected an integer >= {low}")
    if not 0 <= batch_timeout < 30:
        raise UsageError(f"--batch_timeout {batch_timeout}: expected seconds from 0 to 30")
    if host not in ("127.0.0.1", "0.0.0.0", "::"):
        raise UsageError(f"--host {host!r}: expected 127.0.0.1, 0.0.0.0 or ::")
    if not 1024 <= port <= 65535:
        raise UsageError(f"--port {port}: expected 1024-65535")
    api_key = api_key or os.environ.get("LITGPT_API_KEY") or None

    loaded = open_source(checkpoint)  # fails here, in one line, before any server starts
    head, tokenizer = loaded.head, loaded.tokenizer
    check_precision(precision, loaded)
    task = task or TASK_OF_HEAD[head]
    if task != "embed" and TASK_OF_HEAD[head] != task:
        raise UsageError(f"--task {task}: {loaded.where} has no {HEAD_OF_TASK[task]} head (it serves "
                         f"{TASK_OF_HEAD[head]} or embed)")
    checks = RequestChecks(task, tokenizer, loaded.config.block_size, max_texts, max_request_bytes, api_key)
    if task == "qa":  # a question must leave its windows room for the context, as the model was finetuned
        from litgpt.api import qa_settings, question_room

        settings = qa_settings(loaded.folder, loaded.config.block_size)
        checks.question_limit = question_room(settings["max_length"], settings["doc_stride"], tokenizer.wordpiece)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    api = EncoderAPI(str(checkpoint), task, cpu_threads=max(1, cores // workers_per_device), precision=precision,
                     max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
    server = ls.LitServer(api, accelerator=accelerator, devices=devices, workers_per_device=workers_per_device,
                          timeout=60, middlewares=[(CheckMiddleware, {"checks": checks})])
    print(f"Serving {loaded.where} ({task}) on http://{host}:{port}/predict; batches of up to {max_batch_size} "
          f"requests, {batch_timeout} s timeout{'; bearer key required' if api_key else ''}", flush=True)
    main_pid = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() == main_pid:  # LitServe shuts its processes down on KeyboardInterrupt
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # a forked HTTP process, being stopped by LitServe: quietly
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")


class RequestError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class RequestChecks:
    """What a request must be, checked per request in the HTTP process: the key, the body's size and JSON, the
    fields and their types, non-empty texts, and for fill-mask a mask token and a length the model can read."""

    def __init__(self, task: str, tokenizer, block_size: int, max_texts: int, max_bytes: int,
                 api_key: Optional[str]) -> None:
        self.task, self.tokenizer, self.block_size = task, tokenizer, block_size
        self.max_texts, self.max_bytes, self.api_key = max_texts, max_bytes, api_key
        self.question_limit = block_size // 2  # QA: set from the model's windows by `main`

    def authorize(self, header: Optional[str]) -> None:
        if self.api_key is None:
            return
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise RequestError(401, "missing or wrong API key; send the header 'Authorization: Bearer KEY'")

    def parse(self, body: bytes) -> Dict[str, Any]:
        """The request body -> `{"texts": [...], "top_k": int, "pairs": [...] or None}`, or a `RequestError` saying
        what is wrong."""
        if len(body) > self.max_bytes:
            raise RequestError(413, f"request body of {len(body)} bytes; the limit is {self.max_bytes}")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as ex:
            raise RequestError(400, f"the body is not valid JSON ({ex.__class__.__name__}: {ex})") from None
        one, many, second, seconds = FIELDS.get(self.task, TEXTS_ONLY)
        if not isinstance(payload, dict):
            raise RequestError(422, f'expected a JSON object: {{"{one}": ...}} or {{"{many}": [...]}}')
        known = ({one, many} | ({"top_k"} if self.task == "fill_mask" else set())
                 | ({second, seconds} if second is not None else set()))
        unknown = sorted(set(payload) - known)
        if unknown:
            raise RequestError(422, f"unknown field {unknown[0]!r}; expected {', '.join(sorted(known))}")
        if (one in payload) == (many in payload):
            raise RequestError(422, f'give exactly one of "{one}" (a string) or "{many}" (a list of strings)')
        if second is not None and ((second in payload) or (seconds in payload)) and (
                (second in payload) != (one in payload)):
            raise RequestError(422, f'"{second}" goes with "{one}", "{seconds}" with "{many}"')
        if self.task == "qa" and second not in payload and seconds not in payload:
            raise RequestError(422, f'a question needs its "{second}" (or "{seconds}" with "{many}")')
        texts, pairs, _ = request_inputs(payload, self.task)
        if not isinstance(texts, list) or not texts:
            raise RequestError(422, f'"{many}" must be a non-empty list of strings')
        if len(texts) > self.max_texts:
            raise RequestError(422, f"{len(texts)} {many} in one request; the limit is {self.max_texts}")
        if pairs is not None and (not isinstance(pairs, list) or len(pairs) != len(texts)):
            raise RequestError(422, f'"{seconds}" must be a list of {len(texts)} strings, one per {one}')
        for what, items in ((one, texts), (second, pairs or [])):
            for i, text in enumerate(items):
                if not isinstance(text, str):
                    raise RequestError(422, f"{what} {i + 1}: expected a string, got {type(text).__name__}")
                if not text.strip():
                    raise RequestError(422, f"{what} {i + 1}: empty")
        top_k = payload.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
            raise RequestError(422, f'"top_k" {top_k!r}: expected an integer from 1 to 100')
        if self.task == "fill_mask":
            self._check_masks(texts)
        if self.task == "qa":
            self._check_questions(texts)
        return {"texts": texts, "top_k": top_k, "pairs": pairs}

    def _check_questions(self, questions: List[str]) -> None:
        for i, ids in enumerate(self.tokenizer.encode_batch([q.strip() for q in questions], add_special_tokens=False)):
            if len(ids) > self.question_limit:
                raise RequestError(422, f"question {i + 1}: {len(ids)} tokens; at most {self.question_limit} leave "
                                        "the model's windows room for the context")

    def _check_masks(self, texts: List[str]) -> None:
        mask = self.tokenizer.id_to_token(self.tokenizer.mask_id)
        for i, ids in enumerate(self.tokenizer.encode_batch(texts)):
            if self.tokenizer.mask_id not in ids:
                raise RequestError(422, f"text {i + 1}: no {mask} to fill")
            if len(ids) > self.block_size:
                raise RequestError(422, f"text {i + 1}: {len(ids)} tokens; the model reads at most {self.block_size}")


class CheckMiddleware:
    """Runs `RequestChecks` on every `POST /predict` before LitServe sees it (an ASGI middleware, so the checked
    body is handed on as it came)."""

    def __init__(self, app, checks: RequestChecks) -> None:
        self.app, self.checks = app, checks

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.checks.max_bytes:
                break
        try:
            headers = dict(scope.get("headers") or [])
            self.checks.authorize(headers.get(b"authorization", b"").decode("latin-1") or None)
            if scope.get("method") != "POST":
                raise RequestError(405, "use POST /predict with a JSON body")
            self.checks.parse(body)
        except RequestError as ex:
            return await _send_json(send, ex.status, {"detail": ex.detail})
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _send_json(send, status: int, payload: Dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class EncoderAPI(ls.LitAPI):
    """The model side, one copy per worker process: `setup` loads it, `predict` answers a batch of requests with one
    call into `litgpt.api` over all their texts (which sorts and pads them), then splits the answers back."""

    def __init__(self, checkpoint: str, task: str, cpu_threads: int, precision: str = "fp32", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint, self.task, self.precision, self.cpu_threads = checkpoint, task, precision, cpu_threads

    def setup(self, device) -> None:
        import os

        import torch

        from litgpt.api import Classifier, Embedder, MaskedLM, QuestionAnswerer, TokenClassifier

        # copies that each take every core would oversubscribe them (and spin in each other's way)
        if str(device).startswith("cpu") and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(self.cpu_threads)
        cls = {"classify": Classifier, "fill_mask": MaskedLM, "embed": Embedder, "ner": TokenClassifier,
               "qa": QuestionAnswerer}[self.task]
        self.model = cls.load(self.checkpoint, device=device, batch_size=32, precision=self.precision)
        print(f"model copy ready: {self.model.summary}", flush=True)  # which runtime and precision serve

    def decode_request(self, request: Dict[str, Any]) -> Dict[str, Any]:
        # checked in the HTTP process already (CheckMiddleware): this only normalizes the shape
        texts, pairs, single = request_inputs(request, self.task)
        return {"texts": list(texts), "top_k": request.get("top_k", 5), "single": single,
                "pairs": None if pairs is None else list(pairs)}

    def predict(self, x):
        requests: List[Dict[str, Any]] = x if isinstance(x, list) else [x]
        top_k = max(r["top_k"] for r in requests)
        answers: Dict[int, List[Any]] = {}
        # one model call for the single texts and one for the pairs: each sorts and pads its texts together
        for paired in (False, True):
            group = [i for i, r in enumerate(requests) if (r["pairs"] is not None) == paired]
            if not group:
                continue
            texts = [t for i in group for t in requests[i]["texts"]]
            pairs = [t for i in group for t in requests[i]["pairs"]] if paired else None
            got, start = self._answer(texts, pairs, top_k), 0
            for i in group:
                answers[i], start = got[start : start + len(requests[i]["texts"])], start + len(requests[i]["texts"])
        out = []
        for i, r in enumerate(requests):
            part = answers[i]
            if self.task == "fill_mask":  # the batch asked for the largest top_k; each request gets its own
                part = [[candidates[: r["top_k"]] for candidates in masks] for masks in part]
            if self.task == "qa" and r["single"]:  # one question: one answer, as `litgpt qa --json` prints it
                part = part[0]
            out.append(part)
        return out if isinstance(x, list) else out[0]

    def _answer(self, texts: List[str], pairs: Optional[List[str]], top_k: int) -> List[Any]:
        if self.task == "classify":
            return self.model.predict(texts, pairs)
        if self.task == "ner":
            return self.model.predict(texts)
        if self.task == "qa":
            return self.model.answer(texts, pairs)
        if self.task == "fill_mask":
            return self.model.fill_mask(texts, top_k=top_k)
        return self.model.embed(texts).tolist()

    def encode_response(self, output: Any) -> Any:
        return output

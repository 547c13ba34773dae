"""`litgpt serve`: a real server on 127.0.0.1 with a real HTTP client. Answers equal `litgpt.api`'s, bad requests get
their 4xx and leave the server answering, the key is enforced, batching groups concurrent requests, and the server
shuts down cleanly."""

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import ROOT, close, expect_usage_error, litgpt_command, save_checkpoint, toy_records

from litgpt import Config
from litgpt.api import Classifier, Embedder, MaskedLM
from litgpt.model_roberta import RobertaForSequenceClassification

TEXTS = [r["text"] for r in toy_records("test")[:12]] + ["short", "Ünïcödé and emoji 🎬 too!"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, payload, key=None, raw=None, timeout=60):
    """(status, parsed JSON body) of POST /predict."""
    data = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as ex:
        return ex.code, json.loads(ex.read() or b"null")


class Server:
    """`litgpt serve ...` in a subprocess, up once /health answers 200; stopped with SIGTERM."""

    def __init__(self, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(litgpt_command("serve", *args, "--port", self.port, "--accelerator", "cpu"),
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("the server did not come up")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out


@pytest.fixture(scope="module")
def classifier_dir(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_classifier")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, folder / name)
    config = Config.from_file(tiny_checkpoint / "model_config.yaml")
    config = Config(**{**config.to_dict(), "num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}})
    torch.manual_seed(1)
    return save_checkpoint(folder, RobertaForSequenceClassification(config, 3), config)


def test_classifier_server_answers_batches_checks_and_stops(classifier_dir):
    server = Server(classifier_dir, "--api_key", "s3cret", "--max_batch_size", "8", "--batch_timeout", "0.05",
                    "--max_request_bytes", "20000", "--max_texts", "16")
    try:
        port = server.port
        expected = Classifier.load(classifier_dir, device="cpu").predict(TEXTS)
        status, body = post(port, {"texts": TEXTS}, key="s3cret")
        assert status == 200 and close(body, expected)
        # concurrent single-text requests are batched together and answered as if alone
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda t: post(port, {"text": t}, key="s3cret"), TEXTS * 2))
        assert all(s == 200 for s, _ in answers)
        assert all(close(body, [e]) for (_, body), e in zip(answers, expected * 2))
        # sentence pairs, alone and batched with single texts
        seconds = TEXTS[::-1]
        expected_pairs = Classifier.load(classifier_dir, device="cpu").predict(TEXTS, seconds)
        status, body = post(port, {"texts": TEXTS, "text_pairs": seconds}, key="s3cret")
        assert status == 200 and close(body, expected_pairs) and body[0]["text_pair"] == seconds[0]
        requests = [{"text": t, "text_pair": b} if i % 2 else {"text": t}
                    for i, (t, b) in enumerate(zip(TEXTS, seconds))]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda r: post(port, r, key="s3cret"), requests))
        assert all(close(body, [(expected_pairs if i % 2 else expected)[i]]) for i, (_, body) in enumerate(answers))

        # the key
        assert post(port, {"text": "hi"})[0] == 401
        assert post(port, {"text": "hi"}, key="wrong")[0] == 401
        # bad requests: each its 4xx with a JSON detail
        bad = [
            (dict(raw=b"{not json"), 400),
            (dict(payload={"txt": "hi"}), 422),
            (dict(payload={}), 422),
            (dict(payload={"text": 5}), 422),
            (dict(payload={"texts": "not a list"}), 422),
            (dict(payload={"texts": ["ok", None]}), 422),
            (dict(payload={"text": "   "}), 422),
            (dict(payload={"text": "a", "texts": ["b"]}), 422),
            (dict(payload=["a list"]), 422),
            (dict(payload={"texts": ["x"] * 17}), 422),
            (dict(payload={"text": "x" * 30000}), 413),
            (dict(payload={"text": "a", "text_pair": 3}), 422),
            (dict(payload={"text": "a", "text_pair": " "}), 422),
            (dict(payload={"texts": ["a", "b"], "text_pairs": ["c"]}), 422),
            (dict(payload={"texts": ["a"], "text_pair": "b"}), 422),
        ]
        for kwargs, code in bad:
            status, body = post(port, kwargs.get("payload"), key="s3cret", raw=kwargs.get("raw"))
            assert status == code and isinstance(body["detail"], str) and body["detail"], (kwargs, status, body)
        # still answering, correctly
        status, body = post(port, {"text": TEXTS[0]}, key="s3cret")
        assert status == 200 and close(body, expected[:1])
    finally:
        out = server.stop()
    assert server.proc.returncode is not None
    assert "Traceback" not in out, out[-3000:]


def test_fill_mask_and_embed_servers(tiny_checkpoint):
    texts = ["the movie was <mask> .", "a <mask> film with a <mask> ending"]
    server = Server(tiny_checkpoint)
    try:
        expected = MaskedLM.load(tiny_checkpoint, device="cpu").fill_mask(texts, top_k=3)
        status, body = post(server.port, {"texts": texts, "top_k": 3})
        assert status == 200 and close(body, expected)
        assert post(server.port, {"text": "no mask here"})[0] == 422
        assert post(server.port, {"text": "<mask> " * 80})[0] == 422  # longer than the model's 64 positions
        assert post(server.port, {"text": "a <mask>", "top_k": 0})[0] == 422
        assert post(server.port, {"text": texts[0]})[0] == 200
    finally:
        server.stop()

    server = Server(tiny_checkpoint, "--task", "embed", "--max_batch_size", "1")  # batching off
    try:
        expected = Embedder.load(tiny_checkpoint, device="cpu").embed(TEXTS).tolist()
        status, body = post(server.port, {"texts": TEXTS})
        assert status == 200 and close(body, expected)
    finally:
        server.stop()


def test_bad_flags_fail_before_serving(classifier_dir, tiny_checkpoint, capsys):
    for args, fragment in ((["--task", "fill_mask"], "has no LM head"), (["--task", "translate"], "expected one of"),
                           (["--port", "80"], "--port 80"), (["--max_batch_size", "0"], "--max_batch_size 0")):
        expect_usage_error(capsys, ["serve", classifier_dir, *args], fragment)


@pytest.fixture(scope="module")
def token_dirs(tiny_checkpoint, tmp_path_factory):
    """Random tiny NER and QA checkpoints with the tiny tokenizer."""
    from litgpt.model_roberta import RobertaForQuestionAnswering, RobertaForTokenClassification

    base = Config.from_file(tiny_checkpoint / "model_config.yaml")
    ner = Config(**{**base.to_dict(), "num_labels": 3, "id2label": {0: "O", 1: "B-PER", 2: "I-PER"}})
    dirs = {}
    for name, config, cls in (("ner", ner, RobertaForTokenClassification), ("qa", base, RobertaForQuestionAnswering)):
        folder = tmp_path_factory.mktemp(name)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_checkpoint / file, folder / file)
        torch.manual_seed(2)
        dirs[name] = save_checkpoint(folder, cls(config), config)
    return dirs


def test_ner_and_qa_requests_are_checked_batched_and_answered_as_alone(token_dirs):
    """The model side of `litgpt serve` for the token-level tasks, in this process: mixed single and list requests
    in one batch get what `litgpt.api` answers for each alone; bad requests get their 422."""
    from litgpt.api import QuestionAnswerer, TokenClassifier
    from litgpt.serve import EncoderAPI, RequestChecks, RequestError

    api = EncoderAPI(str(token_dirs["ner"]), "ner", cpu_threads=torch.get_num_threads())
    api.setup("cpu")
    out = api.predict([api.decode_request({"text": t}) for t in TEXTS[:3]]
                      + [api.decode_request({"texts": TEXTS[3:5]})])
    expected = TokenClassifier.load(token_dirs["ner"], device="cpu").predict(TEXTS[:5])
    assert close(out, [[e] for e in expected[:3]] + [expected[3:5]])

    contexts = ["Hugo Diallo was born in Oslo in 2001. " * 3, "Maria Lopez works as a nurse in Lisbon."]
    questions = ["Where was Hugo born?", "What does Maria do?"]
    api = EncoderAPI(str(token_dirs["qa"]), "qa", cpu_threads=torch.get_num_threads())
    api.setup("cpu")
    out = api.predict([api.decode_request({"question": questions[0], "context": contexts[0]}),
                       api.decode_request({"questions": questions, "contexts": contexts})])
    expected = QuestionAnswerer.load(token_dirs["qa"], device="cpu").answer(questions, contexts)
    assert close(out, [expected[0], expected])

    tokenizer = api.model.tokenizer
    checks = RequestChecks("qa", tokenizer, 64, max_texts=4, max_bytes=10_000, api_key=None)
    assert checks.parse(json.dumps({"question": "q?", "context": "c."}).encode())["pairs"] == ["c."]
    for bad in ({"question": "q?"}, {"question": "q?", "contexts": ["c."]}, {"questions": ["q?"], "contexts": []},
                {"question": " ", "context": "c."}, {"text": "x"}, {"question": "why " * 60, "context": "c."}):
        with pytest.raises(RequestError) as ex:
            checks.parse(json.dumps(bad).encode())
        assert ex.value.status == 422 and ex.value.detail, bad

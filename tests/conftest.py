"""What the test files share: options, tiny models and checkpoints, tokenizers, file writers, the exact-resume
comparisons and the command line's bad-input contract. Test files import the helpers with `from conftest import ...`;
the fixtures (`tokenizer`, `tiny_checkpoint`) are found by pytest."""

import io
import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "data" / "test_data_finetune"  # the finetuning toy reviews: train.json and test.json
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--run-soak", action="store_true", help="run the long kill-and-resume soak test")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: pass --run-soak to run it")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


# ---- tiny models and checkpoints ----------------------------------------------------------------------------------
def tiny_hf_config(**kwargs):
    """A 2-layer, 32-wide HuggingFace RoBERTa config (120 tokens, 64 positions); `kwargs` override."""
    from transformers import RobertaConfig

    defaults = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2)
    return RobertaConfig(**{**defaults, **kwargs})


def ragged_batch(vocab_size=120, lengths=(12, 7, 3, 10), pad_id=1, seed=0):
    """Right-padded ids that start with <s> and end with </s>, and the matching attention mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(4, vocab_size, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 0, 2
        mask[i, :n] = 1
    return ids, mask


def save_checkpoint(out: Path, model: torch.nn.Module, config, tokenizer=None) -> Path:
    """Writes a litgpt checkpoint dir (what pretraining writes as `final/`): `lit_model.pth`, `model_config.yaml` and,
    given a tokenizer, its files. Returns `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "lit_model.pth")
    config.save(out / "model_config.yaml")
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def final_weights(out_dir) -> dict:
    """The weights a pretraining run ended with (`out_dir/final/lit_model.pth`)."""
    return torch.load(Path(out_dir) / "final" / "lit_model.pth", weights_only=True)


def close(a, b, tol=1e-5) -> bool:
    """Two JSON answers agree: the same keys, lengths and strings, every float within `tol`."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


def max_weight_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_weights_close(expected: dict, actual: dict, atol: float) -> None:
    """Every tensor of `expected` is in `actual`, equal within `atol` (no relative tolerance)."""
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, atol=atol, rtol=0)


def assert_same_run(reference: Path, resumed: Path, step: int):
    """A resumed pretraining run ended where the uninterrupted one ends: its checkpoint of `step` is at that step with
    as many tokens seen, and the final weights differ by at most 1e-6. Returns (the largest weight difference, the
    tokens seen)."""
    ref, res = (torch.load(Path(d) / f"iter-{step}.pt", weights_only=True) for d in (reference, resumed))
    assert res["step"] == ref["step"] == step
    assert res["tokens"] == ref["tokens"]
    diff = max_weight_diff(final_weights(reference), final_weights(resumed))
    assert diff <= 1e-6
    return diff, ref["tokens"]


# ---- texts, files and tokenizers ----------------------------------------------------------------------------------
def demo_lines():
    """The non-blank lines of the built-in demo text."""
    from litgpt.data.test_data import demo_sentences

    return [line for line in demo_sentences().splitlines() if line.strip()]


def toy_records(split: str):
    """The finetuning toy reviews of one split: a list of {"text", "label"}."""
    return json.loads((TOY / f"{split}.json").read_text())


def write_files(root: Path, files: dict) -> Path:
    """Creates `root` and writes `files` below it: {relative path: content}, where str is written as UTF-8 text, bytes
    as they are, None makes a folder and anything else is written as JSON. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer (600 tokens) trained on the demo lines, saved in its own folder."""
    from litgpt.train_tokenizer import train_tokenizer

    return train_tokenizer(demo_lines(), vocab_size=600, out_dir=tmp_path_factory.mktemp("demo_tokenizer"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A litgpt checkpoint dir: a random roberta-tiny MLM and a tokenizer trained on the toy train texts. Read it;
    a test that changes it works on a copy."""
    from litgpt import Config
    from litgpt.model_roberta import RobertaForMaskedLM
    from litgpt.train_tokenizer import train_tokenizer

    ckpt = tmp_path_factory.mktemp("tiny_ckpt")
    tokenizer = train_tokenizer([r["text"] for r in toy_records("train")], vocab_size=1000, out_dir=ckpt)
    config = Config.from_name("roberta-tiny", mask_token_id=tokenizer.mask_id)
    torch.manual_seed(0)
    return save_checkpoint(ckpt, RobertaForMaskedLM(config), config)


# ---- data loaders: the global RNG and exact resume ----------------------------------------------------------------
def assert_loaders_leave_global_rng_alone(data) -> None:
    """A resumed run starts its iterators at other moments than an uninterrupted one: drawing from the global
    RNG there would shift dropout. Starting the train and val loaders must leave it where it was."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(data.train_dataloader()))
    list(data.val_dataloader())
    assert torch.equal(torch.rand(3), expected)


def same_batch(x, y) -> bool:
    """Two batch dicts hold the same tensors (the packing is a function of them)."""
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x if torch.is_tensor(x[k]))


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(same_batch(x, y) for x, y in zip(a, b))


def batches_and_states(data, epochs: int):
    """Every train batch of `epochs` epochs, and the data module's state after each: {batches seen: state}."""
    loader = data.train_dataloader()
    batches, states = [], {}
    for _ in range(epochs):
        for batch in loader:
            batches.append(batch)
            states[len(batches)] = data.state_dict()
    return batches, states


def resumed_batches(data, state, count: int):
    """What a resumed run reads: `state`, saved and loaded as a checkpoint would be, is loaded after the loader
    exists, as the pretraining loop does; then up to `count` batches, with iter() again at each epoch's end."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    data.train_dataloader()
    data.load_state_dict(torch.load(buffer, weights_only=True))
    it, rest = iter(data.train_dataloader()), []
    for _ in range(3 * count + 3):  # bounded, in case a loader stopped yielding
        if len(rest) == count:
            break
        batch = next(it, None)
        if batch is None:  # end of epoch: the loop calls iter() again
            it = iter(data.train_dataloader())
            continue
        rest.append(batch)
    return rest


# ---- the command line ---------------------------------------------------------------------------------------------
def litgpt_command(*args):
    """The command line of `python -m litgpt ARGS`, every argument a string."""
    return [sys.executable, "-m", "litgpt", *map(str, args)]


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Runs `python -m litgpt ...` in a subprocess and returns the CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        litgpt_command(*args),
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli_here(*args):
    """`run_cli` in this process: litgpt's own `main` on `args`, the same parser and errors without a Python start-up
    (for the quick commands: embed, convert). Returns an object with `returncode`, `stdout` and `stderr`."""
    import contextlib
    import types

    from litgpt.__main__ import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else int(ex.code is not None)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


TINY_PRETRAIN = ("--model_name", "roberta-tiny", "--train.global_batch_size", "8", "--train.micro_batch_size", "4")


def pretrain_args(data_dir, out_dir, *extra, base=TINY_PRETRAIN):
    """`litgpt pretrain` arguments, all strings: `base` (a roberta-tiny run in batches of 8, micro-batches of 4),
    `--data_dir` (left out when None), `--out_dir`, then `extra` (of a repeated flag the last one wins)."""
    data = [] if data_dir is None else ["--data_dir", data_dir]
    return ["pretrain", *map(str, [*base, *data, "--out_dir", out_dir, *extra])]


def finetune_args(data_dir, output_dir, *extra):
    """Arguments of `litgpt finetune` (and of scripts/finetune_roberta.py), all strings: one epoch of a random
    roberta-tiny on `data_dir`, then `extra`."""
    return [*map(str, ["--data_dir", data_dir, "--output_dir", output_dir, "--model_name", "roberta-tiny",
                       "--from_scratch", "--num_epochs", "1", *extra])]


def snapshot(root: Path) -> dict:
    """Everything below `root`, with its size and modification time: equal snapshots mean nothing was created,
    deleted or changed (a file made and removed again changes its folder's time)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def cli_error(capsys, args, main=None):
    """Runs a command line in this process (`main`, litgpt's by default) on `args`, which must end in SystemExit;
    returns the exit code and what was printed on stderr."""
    if main is None:
        from litgpt.__main__ import main
    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    return ex.value.code, capsys.readouterr().err


def assert_usage_error(code, err: str, *fragments: str, ignore_case: bool = False) -> str:
    """The bad-input contract: exit code 2 and one `error: ` line on stderr, no traceback; each fragment is in the
    line. Returns the line."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        if ignore_case:
            assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
        else:
            assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def expect_usage_error(capsys, args, *fragments: str, main=None, untouched=None, ignore_case=False) -> str:
    """Runs a command line in this process (see `cli_error`) and checks the bad-input contract (see
    `assert_usage_error`); with `untouched`, also that nothing below that folder was created or changed."""
    before = None if untouched is None else snapshot(untouched)
    code, err = cli_error(capsys, args, main)
    line = assert_usage_error(code, err, *fragments, ignore_case=ignore_case)
    if untouched is not None:
        assert snapshot(untouched) == before, "files were created or changed"
    return line


# ---- tokenizer parity with transformers ------------------------------------------------------------------------
def varied_texts():
    """A few hundred sentences: the demo sentences, edited, plus unicode, whitespace, long words and special tokens."""
    rng = random.Random(0)
    lines = demo_lines()
    extra = [
        "", " ", "  ", "\n", "\t", "a", " a", "  leading spaces", "trailing spaces   ", "tabs\tand\nnew\r\nlines",
        "Café naïve façade jalapeño über Straße", "東京は日本の首都です。", "Москва — столица России.",
        "emoji 😀🎉👍🏽 and 👨‍👩‍👧", "مرحبا بالعالم",
        "Ελληνικά γράμματα", "ｆｕｌｌｗｉｄｔｈ", "\u200bzero\u200dwidth",
        "pneumonoultramicroscopicsilicovolcanoconiosis", "x" * 300, "ab" * 200, "1234567890 3.14159 1e-10 0xDEADBEEF",
        "don't can't won't I'm you're we've they'll he'd", "Hello <mask> world", "Hello<mask>world", "<mask>",
        " <mask> start", "two <mask> <mask> masks", "<s>literal</s> specials <pad> <unk>", "</s></s>",
        "https://example.com/path?q=1&x=2#frag", "e-mail: someone@example.org", "C++ and C# and F#",
        "((nested [brackets] {here}))", "...!!!???", "    indented code();", "UPPER lower MiXeD",
    ]
    edited = []
    for line in lines[:200]:
        words = line.split()
        rng.shuffle(words)
        edited.append(" " + " ".join(words))
        edited.append(line.upper())
    return lines + extra + edited


def assert_parity(ours, theirs, texts):
    for text in texts:
        assert ours.encode(text) == theirs(text)["input_ids"], text
        for n in (2, 5, 8, 16):
            expected = theirs(text, truncation=True, max_length=n)["input_ids"]
            assert ours.encode(text, max_length=n) == expected, (text, n)
    batch = theirs(texts)["input_ids"]
    assert ours.encode_batch(texts) == batch
    assert ours.encode_batch(texts, max_length=12) == theirs(texts, truncation=True, max_length=12)["input_ids"]
    for a, b in zip(texts[:120], texts[60:180]):
        assert ours.encode_pair(a, b) == theirs(a, b)["input_ids"], (a, b)
        assert ours.encode_pair(a, b, max_length=10) == theirs(a, b, truncation=True, max_length=10)["input_ids"]
    # >= 300 pairs at once, with HF's default truncation (longest_first) cutting one text, the other or both
    firsts, seconds = texts[:320], texts[::-1][:320]
    for n in (None, 9, 24, 64):
        expected = theirs(firsts, seconds, return_token_type_ids=True,
                          **({} if n is None else dict(truncation=True, max_length=n)))
        ids, types = ours.encode_pair_batch(firsts, seconds, max_length=n)
        assert ids == expected["input_ids"], n
        assert types == expected["token_type_ids"], n
    for ids in batch[:100]:
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids)

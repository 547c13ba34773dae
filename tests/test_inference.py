"""Inference: `litgpt.api`, `litgpt fill_mask`, `litgpt classify` and `litgpt download`, all offline on tiny models.

Everything is checked against HuggingFace `transformers` on the same weights: the fill-mask pipeline, the
masked-LM logits, the classifier's probabilities and the encoder's hidden states.
"""

import json
import shutil

import pytest
import torch
from conftest import assert_usage_error, cli_error, run_cli, save_checkpoint, tiny_hf_config

from litgpt import Config
from litgpt.__main__ import main as cli
from litgpt.api import Classifier, MaskedLM
from litgpt.model_roberta import RobertaForMaskedLM, RobertaForSequenceClassification
from litgpt.utils import UsageError

transformers = pytest.importorskip("transformers")

CORPUS = [
    "The capital of France is Paris.",
    "Paris is the capital and largest city of France.",
    "The dog barked at the cat in the garden.",
    "A great movie with a wonderful cast.",
    "The plot was boring and the acting was bad.",
    "Berlin is the capital of Germany, and Rome is the capital of Italy.",
    "She read a book about the history of the city.",
    "The weather in the mountains was cold and clear.",
]
TEXTS = [
    "The capital of France is <mask>.",
    "The <mask> barked at the <mask> in the garden.",
    "Paris is the <mask> of France.",
    "<mask> is great",
]


def perturb(model: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Spread the weights so the softmax has clear winners: top-k order is then no float-noise coin toss."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def lit_config(tokenizer, **kwargs) -> Config:
    return Config(name="tiny", vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=32, n_head=4, intermediate_size=64,
                  block_size=64, mask_token_id=tokenizer.mask_id, hidden_dropout=0.0, attention_dropout=0.0, **kwargs)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from litgpt.train_tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS * 4, vocab_size=300, out_dir=out)
    return out


@pytest.fixture(scope="module")
def corpus_tokenizer(tokenizer_dir):
    from litgpt.tokenizer import Tokenizer

    return Tokenizer(tokenizer_dir)


def pad_rows(rows, pad_id: int) -> torch.Tensor:
    """Token id lists, right-padded into one tensor."""
    ids = torch.full((len(rows), max(map(len, rows))), pad_id)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids


@pytest.fixture(scope="module")
def hf_mlm_dir(tmp_path_factory, corpus_tokenizer):
    """A transformers RobertaForMaskedLM saved with save_pretrained, plus our tokenizer files."""
    out = tmp_path_factory.mktemp("hf_mlm")
    torch.manual_seed(0)
    model = transformers.RobertaForMaskedLM(tiny_hf_config(vocab_size=corpus_tokenizer.vocab_size))
    perturb(model, seed=1)
    model.save_pretrained(out)
    corpus_tokenizer.save(out)
    return out


@pytest.fixture(scope="module")
def lit_mlm_dir(tmp_path_factory, corpus_tokenizer):
    """A litgpt checkpoint dir (what pretraining writes as `final/`) of a model trained a few steps."""
    tokenizer = corpus_tokenizer
    torch.manual_seed(0)
    config = lit_config(tokenizer)
    model = RobertaForMaskedLM(config)
    perturb(model, seed=2, std=0.2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = pad_rows([tokenizer.encode(t) for t in CORPUS], tokenizer.pad_id)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, ids, -100)
    labels[ids == tokenizer.pad_id] = -100
    inputs = torch.where(labels != -100, tokenizer.mask_id, ids)
    for _ in range(3):
        loss = model(inputs, (ids != tokenizer.pad_id).long(), labels=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_checkpoint(tmp_path_factory.mktemp("lit_mlm"), model, config, tokenizer)


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory, corpus_tokenizer, tokenizer_dir):
    """A finetuning output_dir: HF config.json + pytorch_model.bin + tokenizer files."""
    from litgpt.scripts.convert_lit_checkpoint import save_hf_dir

    out = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    config = lit_config(corpus_tokenizer, num_labels=2, id2label={0: "negative", 1: "positive"})
    model = RobertaForSequenceClassification(config, 2)
    perturb(model, seed=3)
    save_hf_dir(model.state_dict(), config, out, tokenizer_dir, safetensors=False, pytorch_bin=True)
    assert (out / "pytorch_model.bin").is_file() and not (out / "model.safetensors").exists()
    return out


def hf_pipeline(hf_dir):
    return transformers.pipeline("fill-mask", model=str(hf_dir), tokenizer=str(hf_dir), top_k=5, device="cpu")


def assert_same_as_pipeline(ours, theirs):
    """`ours`: our per-mask lists for one text; `theirs`: the pipeline's answer (flat when it has one mask)."""
    if theirs and isinstance(theirs[0], dict):
        theirs = [theirs]
    assert len(ours) == len(theirs)
    for our_mask, their_mask in zip(ours, theirs):
        assert [c["token_id"] for c in our_mask] == [c["token"] for c in their_mask]
        assert [c["token"] for c in our_mask] == [c["token_str"] for c in their_mask]
        for a, b in zip(our_mask, their_mask):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def cli_json(capsys, *args):
    cli([*map(str, args), "--json"])  # a bare boolean flag means true
    out = capsys.readouterr().out
    return json.loads(out)


# ---- the snippet from the docs ------------------------------------------------------------------------------
def test_api_snippet_runs_as_written(tmp_path, monkeypatch, lit_mlm_dir, clf_dir):
    shutil.copytree(lit_mlm_dir, tmp_path / "out" / "pretrain" / "final")
    shutil.copytree(clf_dir, tmp_path / "out" / "roberta_finetuned")
    monkeypatch.chdir(tmp_path)

    from litgpt.api import Classifier, MaskedLM

    mlm = MaskedLM.load("out/pretrain/final")
    filled = mlm.fill_mask("The capital of France is <mask>.", top_k=5)
    clf = Classifier.load("out/roberta_finetuned")
    predictions = clf.predict(["great movie", "boring plot"])
    vectors = mlm.embed(["a sentence", "another one"])

    assert len(filled) == 1 and len(filled[0]) == 5
    assert set(filled[0][0]) == {"token_id", "token", "score"}
    scores = [c["score"] for c in filled[0]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert [p["text"] for p in predictions] == ["great movie", "boring plot"]
    for p in predictions:
        assert set(p) == {"text", "label", "label_id", "probabilities"}
        assert p["label"] == ["negative", "positive"][p["label_id"]]
        assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert p["label_id"] == max(range(2), key=p["probabilities"].__getitem__)
    assert vectors.shape == (2, 32) and vectors.dtype == torch.float32


# ---- fill_mask against transformers -------------------------------------------------------------------------
def test_fill_mask_matches_hf_pipeline(hf_mlm_dir, tmp_path, capsys):
    pipe = hf_pipeline(hf_mlm_dir)
    expected = [pipe(t) for t in TEXTS]

    # the HF dir converted on the fly, then the litgpt checkpoint that convert_to_litgpt writes
    converted = tmp_path / "converted"
    shutil.copytree(hf_mlm_dir, converted)
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    convert_hf_checkpoint(converted)
    capsys.readouterr()
    for source in (hf_mlm_dir, converted):
        mlm = MaskedLM.load(source, device="cpu", batch_size=3)
        batched = mlm.fill_mask(TEXTS, top_k=5)  # several texts and masks, padded, in two batches
        for text, ours, theirs in zip(TEXTS, batched, expected):
            assert_same_as_pipeline(ours, theirs)
            assert _close(mlm.fill_mask(text, top_k=5), ours)  # alone, unpadded

    # the command line, with repeated --text, gives the same JSON document
    args = ["fill_mask", hf_mlm_dir, "--device", "cpu"]
    for text in TEXTS:
        args += ["--text", text]
    document = cli_json(capsys, *args)
    assert len(document) == len(TEXTS)
    for ours, theirs in zip(document, expected):
        assert_same_as_pipeline(ours, theirs)


def _close(a, b) -> bool:
    """Same nesting, same token ids and tokens, scores within 1e-6."""
    if isinstance(a, dict):
        return a["token_id"] == b["token_id"] and a["token"] == b["token"] and abs(a["score"] - b["score"]) < 1e-6
    return isinstance(a, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))


def test_litgpt_checkpoint_to_hf_gives_same_logits_and_fill_mask(lit_mlm_dir, tmp_path, capsys):
    from litgpt.scripts.convert_lit_checkpoint import convert_lit_checkpoint

    hf_dir = tmp_path / "hf"
    convert_lit_checkpoint(lit_mlm_dir, hf_dir)
    capsys.readouterr()
    hf_model = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
    mlm = MaskedLM.load(lit_mlm_dir, device="cpu")

    ids = pad_rows([mlm.tokenizer.encode(t) for t in TEXTS], mlm.tokenizer.pad_id)
    mask = (ids != mlm.tokenizer.pad_id).long()
    with torch.no_grad():
        ours = mlm.model(ids, mask)
        theirs = hf_model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)

    pipe = hf_pipeline(hf_dir)
    for text, ours in zip(TEXTS, mlm.fill_mask(TEXTS)):
        assert_same_as_pipeline(ours, pipe(text))


def test_pretraining_out_dir_and_training_state_load(lit_mlm_dir, tmp_path):
    """A pretraining out_dir is read through its best.pt (full training state), with the tokenizer in final/."""
    out_dir = tmp_path / "pretrain"
    shutil.copytree(lit_mlm_dir, out_dir / "final")
    state = {"model": torch.load(lit_mlm_dir / "lit_model.pth", weights_only=True),
             "model_config": Config.from_file(lit_mlm_dir / "model_config.yaml").to_dict(), "step": 3}
    torch.save(state, out_dir / "best.pt")
    expected = MaskedLM.load(lit_mlm_dir, device="cpu").fill_mask(TEXTS[0])
    mlm = MaskedLM.load(out_dir, device="cpu")
    assert "best.pt" in mlm.source
    assert _close(mlm.fill_mask(TEXTS[0]), expected)


def test_batching_does_not_change_results(lit_mlm_dir):
    one = MaskedLM.load(lit_mlm_dir, device="cpu", batch_size=1)
    many = MaskedLM.load(lit_mlm_dir, device="cpu", batch_size=16)
    assert _close(one.fill_mask(TEXTS, top_k=3), many.fill_mask(TEXTS, top_k=3))
    texts = ["a", "a much longer sentence about the capital of France", "short one", ""]
    torch.testing.assert_close(one.embed(texts), many.embed(texts), atol=1e-5, rtol=1e-5)
    assert many.embed([]).shape == (0, 32) and many.fill_mask([]) == []


def test_embed_is_mean_of_hf_hidden_states_over_real_tokens(hf_mlm_dir):
    texts = ["The capital of France is Paris.", "a dog", "The plot was boring and the acting was bad."]
    mlm = MaskedLM.load(hf_mlm_dir, device="cpu")
    ours = mlm.embed(texts)
    tok = transformers.AutoTokenizer.from_pretrained(hf_mlm_dir)
    batch = tok(texts, padding=True, return_tensors="pt")
    model = transformers.AutoModel.from_pretrained(hf_mlm_dir).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    theirs = (hidden * weights).sum(1) / weights.sum(1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_fill_mask_errors(lit_mlm_dir, clf_dir, capsys):
    mlm = MaskedLM.load(lit_mlm_dir, device="cpu")
    with pytest.raises(UsageError, match="text 2 has no <mask>"):
        mlm.fill_mask(["a <mask>", "no mask here"])
    with pytest.raises(UsageError, match="top_k"):
        mlm.fill_mask("a <mask>", top_k=0)
    with pytest.raises(UsageError, match="at most 64"):
        mlm.fill_mask("word " * 80 + "<mask>")
    with pytest.raises(UsageError, match="not a masked LM"):
        MaskedLM.load(clf_dir, device="cpu")
    with pytest.raises(UsageError, match="no classification head"):
        Classifier.load(lit_mlm_dir, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            MaskedLM.load(lit_mlm_dir, device="cuda")
    with pytest.raises(UsageError, match="not a device"):
        MaskedLM.load(lit_mlm_dir, device="tpu9")

    for args, message in [
        (["fill_mask", lit_mlm_dir, "--text", "no mask"], "error: text 1 has no <mask>: 'no mask'"),
        (["fill_mask", lit_mlm_dir], "error: no input"),
        (["fill_mask", clf_dir, "--text", "a <mask>"], "error: "),
        (["fill_mask", lit_mlm_dir / "missing", "--text", "a <mask>"], "error: "),
    ]:
        code, err = cli_error(capsys, args)
        assert code == 2
        assert err.startswith(message) and err.count("\n") == 1, err


def test_fill_mask_cli_readable_output_and_verbatim_texts(lit_mlm_dir, capsys):
    # repeated --text in every spelling; YAML-looking texts stay verbatim
    cli(["fill_mask", str(lit_mlm_dir), "--text", "Paris is the <mask> of France.", "--text=[<mask>, b]",
         "--text", "null <mask>", "--top_k", "3", "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Paris is the <mask> of France."
    assert out[1] == "  mask 1/1:"
    assert out[2].startswith("     1. 0.") and "(id " in out[2]
    assert len(out) == 3 * (2 + 3)
    assert out[5] == "[<mask>, b]" and out[10] == "null <mask>"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(lit_mlm_dir, clf_dir):
    cpu, gpu = MaskedLM.load(lit_mlm_dir, device="cpu"), MaskedLM.load(lit_mlm_dir, device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    for ours, theirs in zip(gpu.fill_mask(TEXTS, top_k=3), cpu.fill_mask(TEXTS, top_k=3)):
        for a, b in zip(ours, theirs):
            assert [c["token_id"] for c in a] == [c["token_id"] for c in b]
            assert [c["score"] for c in a] == pytest.approx([c["score"] for c in b], abs=1e-4)
    torch.testing.assert_close(gpu.embed(TEXTS), cpu.embed(TEXTS), atol=1e-4, rtol=1e-4)
    texts = ["great movie", "boring plot"]
    for a, b in zip(Classifier.load(clf_dir, device="cuda").predict(texts),
                    Classifier.load(clf_dir, device="cpu").predict(texts)):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)


# ---- classify -----------------------------------------------------------------------------------------------
def test_classifier_matches_hf_and_cli(clf_dir, tmp_path, capsys):
    texts = ["great movie", "boring plot", "The capital of France is Paris."]
    clf = Classifier.load(clf_dir, device="cpu", batch_size=2)
    assert clf.labels == ["negative", "positive"]
    predictions = clf.predict(texts)

    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(clf_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(clf_dir)
    with torch.no_grad():
        probs = hf_model(**tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    for p, expected in zip(predictions, probs.tolist()):
        assert p["probabilities"] == pytest.approx(expected, abs=1e-5)
        assert p["label"] == hf_model.config.id2label[p["label_id"]]
    assert {p["label"] for p in predictions} == {"negative", "positive"}, "the fixture should produce both labels"
    assert clf.predict([]) == []
    alone = clf.predict("great movie")
    assert len(alone) == 1 and alone[0]["label"] == predictions[0]["label"]
    assert alone[0]["probabilities"] == pytest.approx(predictions[0]["probabilities"], abs=1e-6)

    file = tmp_path / "texts.txt"
    file.write_text("boring plot\n\nThe capital of France is Paris.\n", encoding="utf-8")
    document = cli_json(capsys, "classify", clf_dir, "--text", "great movie", "--file", file, "--device", "cpu")
    assert [d["text"] for d in document] == texts
    for d, p in zip(document, predictions):
        assert d["label"] == p["label"] and d["label_id"] == p["label_id"]
        assert d["probabilities"] == pytest.approx(p["probabilities"], abs=1e-6)

    cli(["classify", str(clf_dir), "--text", "great movie", "--text", "boring plot"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, p in zip(lines, predictions):
        label, probs, text = line.split("\t")
        assert label == p["label"] and text == p["text"] and probs.startswith("(negative 0.")

    for args, message in [
        (["classify", clf_dir], "error: no input"),
        (["classify", clf_dir, "--file", tmp_path / "missing.txt"], "error: --file"),
    ]:
        code, err = cli_error(capsys, args)
        assert code == 2 and err.startswith(message)


# ---- download -----------------------------------------------------------------------------------------------
def test_select_files_prefers_safetensors():
    from litgpt.scripts.download import select_files

    repo = ["config.json", "merges.txt", "vocab.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin",
            "tf_model.h5", "flax_model.msgpack", "README.md"]
    assert select_files(repo) == ["config.json", "tokenizer.json", "vocab.json", "merges.txt", "model.safetensors"]
    assert select_files([f for f in repo if f != "model.safetensors"])[-1] == "pytorch_model.bin"
    sharded = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "pytorch_model.bin"]
    assert select_files(sharded)[1:] == sharded[1:4]
    assert select_files(repo, tokenizer_only=True) == ["tokenizer.json", "vocab.json", "merges.txt"]


def test_download_from_local_folder_converts_and_renames(hf_mlm_dir, tmp_path, capsys):
    from litgpt.scripts.download import download_from_hub

    # a HF-style repo folder with both weight formats and files we do not want
    source = tmp_path / "mirror"
    shutil.copytree(hf_mlm_dir, source)
    shutil.copy(source / "model.safetensors", source / "pytorch_model.bin")
    (source / "README.md").write_text("hello")
    checkpoints = tmp_path / "checkpoints"
    download_from_hub("someorg/tiny-roberta", checkpoint_dir=checkpoints, source_dir=source)
    target = checkpoints / "someorg" / "tiny-roberta"
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "lit_model.pth", "model_config.yaml", "tokenizer.json"} <= names
    assert "pytorch_model.bin" not in names and "README.md" not in names
    assert [p.name for p in (checkpoints / "someorg").iterdir()] == ["tiny-roberta"], "no staging dir left"
    assert Config.from_file(target / "model_config.yaml").name == "tiny-roberta"

    # what `litgpt fill_mask` reads from the downloaded checkpoint equals the source model
    expected = MaskedLM.load(hf_mlm_dir, device="cpu").fill_mask(TEXTS[0])
    assert _close(MaskedLM.load(target, device="cpu").fill_mask(TEXTS[0]), expected)

    # downloading again replaces the checkpoint as a whole
    (target / "stale.txt").write_text("x")
    download_from_hub("someorg/tiny-roberta", checkpoint_dir=checkpoints, source_dir=source)
    assert not (target / "stale.txt").exists() and (target / "lit_model.pth").is_file()
    assert [p.name for p in (checkpoints / "someorg").iterdir()] == ["tiny-roberta"]

    # a failing conversion leaves nothing, not even the org folder it created
    bad = tmp_path / "bad"
    shutil.copytree(hf_mlm_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "bert"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="expected a RoBERTa or BERT checkpoint"):
        download_from_hub("other/bert", checkpoint_dir=checkpoints, source_dir=bad)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["someorg"]
    capsys.readouterr()


def test_download_tokenizer_only(hf_mlm_dir, tmp_path, capsys):
    from litgpt.scripts.download import TOKENIZER_FILES, download_from_hub

    checkpoints = tmp_path / "checkpoints"
    download_from_hub("org/tok", checkpoint_dir=checkpoints, tokenizer_only=True, source_dir=hf_mlm_dir)
    target = checkpoints / "org" / "tok"
    assert sorted(p.name for p in target.iterdir()) == sorted(set(TOKENIZER_FILES) - {"vocab.txt"})  # RoBERTa's
    # into an existing checkpoint: the tokenizer files are refreshed, the weights stay
    download_from_hub("org/full", checkpoint_dir=checkpoints, source_dir=hf_mlm_dir)
    (checkpoints / "org" / "full" / "tokenizer.json").unlink()
    download_from_hub("org/full", checkpoint_dir=checkpoints, tokenizer_only=True, source_dir=hf_mlm_dir)
    names = {p.name for p in (checkpoints / "org" / "full").iterdir()}
    assert {"tokenizer.json", "lit_model.pth", "model.safetensors"} <= names
    assert sorted(p.name for p in (checkpoints / "org").iterdir()) == ["full", "tok"]
    assert "(tokenizer files)" in capsys.readouterr().out


def test_download_from_offline_hf_cache(hf_mlm_dir, tmp_path, monkeypatch, capsys):
    """With HF_HUB_OFFLINE=1 a snapshot already in the HF cache is converted, through snapshot_download."""
    from huggingface_hub import constants

    from litgpt.scripts.download import download_from_hub

    cache = tmp_path / "hub"
    repo = cache / "models--FacebookAI--roberta-base"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(hf_mlm_dir, snapshot)
    shutil.copy(snapshot / "model.safetensors", snapshot / "pytorch_model.bin")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    download_from_hub("roberta-base", checkpoint_dir=tmp_path / "checkpoints")
    target = tmp_path / "checkpoints" / "FacebookAI" / "roberta-base"
    assert (target / "lit_model.pth").is_file() and (target / "model.safetensors").is_file()
    assert not (target / "pytorch_model.bin").exists()
    assert "Saved FacebookAI/roberta-base" in capsys.readouterr().out
    # the registry name now resolves to the downloaded checkpoint
    monkeypatch.chdir(tmp_path)
    assert MaskedLM.load("roberta-base", device="cpu").config.name == "roberta-base"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HF_HUB_OFFLINE": "1"}, "not in the local HuggingFace cache and HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "could not reach http://127.0.0.1:9"),
    ],
    ids=["offline", "unreachable"],
)
def test_download_without_network_fails_in_one_line(tmp_path, env, message):
    env = {**env, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_CACHE": str(tmp_path / "hf_home" / "hub")}
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    result = run_cli("download", "FacebookAI/roberta-base", "--checkpoint_dir", checkpoints, env=env, timeout=120)
    line = assert_usage_error(result.returncode, result.stderr, message)
    assert result.stderr.count("\n") == 1, result.stderr
    assert line.startswith("error: FacebookAI/roberta-base: ")
    assert list(checkpoints.iterdir()) == []


def test_download_list_and_bad_repo_id(capsys):
    cli(["download", "list"])
    assert capsys.readouterr().out.split() == [
        "FacebookAI/roberta-base", "FacebookAI/roberta-large", "distilbert/distilroberta-base",
        "google-bert/bert-base-uncased", "google-bert/bert-large-uncased", "sentence-transformers/all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L12-v2",
    ]
    _, err = cli_error(capsys, ["download", "not/a/repo"])
    assert err.startswith("error: 'not/a/repo': not a HuggingFace repo id")

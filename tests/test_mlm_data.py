"""Masking statistics and reproducibility, the collator, TestMLMDataset (and a user subclass) and TestData."""

import pytest
import torch
from conftest import (
    assert_loaders_leave_global_rng_alone,
    batches_and_states,
    demo_lines,
    resumed_batches,
    same_batches,
    write_files,
)
from custom_dataset import CustomMLMDataset  # the README's subclass, verbatim

from litgpt.data.mlm import IGNORE_INDEX, MLMCollator, MLMMasker, example_generator, mask_tokens
from litgpt.data.test_data import TestData, TestMLMDataset, demo_sentences, split_distinct
from litgpt.utils import UsageError


def make_data(tokenizer, data_dir, batch_size=8, seed=3, num_workers=0, rank=0, world_size=1, **kwargs):
    data = TestData(data_dir=data_dir, num_workers=num_workers, **kwargs)
    data.connect(tokenizer, batch_size=batch_size, max_seq_length=32, seed=seed, rank=rank, world_size=world_size)
    data.prepare_data()
    data.setup()
    return data


def test_masking_statistics_on_real_text(tokenizer):
    masker = MLMMasker.from_tokenizer(tokenizer)
    collate = MLMCollator(tokenizer.pad_id, masker, seed=0)
    examples = [torch.tensor(ids) for ids in tokenizer.encode_batch(demo_lines())]
    special = torch.tensor(sorted(tokenizer.special_ids))
    ordinary = selected = masked = randomized = kept = 0
    passes = 0
    while ordinary < 100_000:
        for start in range(0, len(examples), 16):
            items = [{"input_ids": e, "index": start + i, "epoch": passes}
                     for i, e in enumerate(examples[start:start + 16])]
            batch = collate(items)
            originals = torch.full_like(batch["input_ids"], tokenizer.pad_id)
            for i, e in enumerate(examples[start:start + 16]):
                originals[i, : len(e)] = e
            sel = batch["labels"] != IGNORE_INDEX
            assert torch.equal(batch["labels"][sel], originals[sel])
            assert not torch.isin(originals[sel], special).any()  # never a special token or padding
            assert not (sel & (batch["attention_mask"] == 0)).any()
            new = batch["input_ids"][sel]
            assert not torch.isin(new[new != tokenizer.mask_id], special).any()  # random tokens are ordinary
            assert torch.equal(batch["input_ids"][~sel], originals[~sel])  # nothing else changes
            ordinary += int((~torch.isin(originals, special)).sum())
            selected += int(sel.sum())
            masked += int((new == tokenizer.mask_id).sum())
            kept += int((new == originals[sel]).sum())
            randomized += int(((new != tokenizer.mask_id) & (new != originals[sel])).sum())
        passes += 1
    assert ordinary >= 100_000
    assert abs(selected / ordinary - 0.15) < 0.005
    assert abs(masked / selected - 0.8) < 0.015
    # a random replacement equal to the original counts as kept (1 in ~600 here)
    assert abs(randomized / selected - 0.1) < 0.015
    assert abs(kept / selected - 0.1) < 0.015


def test_masking_split_is_configurable(tokenizer):
    ids = torch.tensor(tokenizer.encode(" ".join(demo_lines()[:200])))
    out, labels = mask_tokens(ids, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, mask_prob=0.3,
                              mask_replace_prob=0.5, random_replace_prob=0.0,
                              generator=torch.Generator().manual_seed(1))
    sel = labels != IGNORE_INDEX
    n = int((~torch.isin(ids, torch.tensor(sorted(tokenizer.special_ids)))).sum())
    assert abs(int(sel.sum()) - 0.3 * n) <= 1  # the count is exact up to rounding
    masked = int((out[sel] == tokenizer.mask_id).sum())
    assert masked + int((out[sel] == ids[sel]).sum()) == int(sel.sum())  # no random replacements
    assert abs(masked / int(sel.sum()) - 0.5) < 0.06
    with pytest.raises(UsageError, match="mask_prob"):
        MLMMasker.from_tokenizer(tokenizer, mask_prob=1.5)
    with pytest.raises(UsageError, match="add up to at most 1"):
        MLMMasker.from_tokenizer(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)


def test_masking_reproducible_and_batched(tokenizer):
    masker = MLMMasker.from_tokenizer(tokenizer)
    ids = torch.tensor(tokenizer.encode(" ".join(demo_lines()[:20])))
    a = masker(ids, example_generator(1, 0, 5))
    b = masker(ids, example_generator(1, 0, 5))
    c = masker(ids, example_generator(1, 1, 5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # a padded 2-D batch: padding is never selected; short rows still get one target
    batch = torch.full((3, 12), tokenizer.pad_id)
    batch[0, :12] = ids[:12]
    batch[1, :4] = ids[:4]
    batch[2, :2] = torch.tensor([tokenizer.bos_id, tokenizer.eos_id])
    out, labels = masker(batch, torch.Generator().manual_seed(0))
    assert (labels[batch == tokenizer.pad_id] == IGNORE_INDEX).all()
    assert (labels[1] != IGNORE_INDEX).sum() == 1
    assert (labels[2] == IGNORE_INDEX).all() and torch.equal(out[2], batch[2])


def test_collator_padding_and_clm(tokenizer):
    seqs = [tokenizer.encode(t) for t in ("a short one", "a somewhat longer sentence than that", "x")]
    batch = MLMCollator.from_tokenizer(tokenizer, objective="clm")([torch.tensor(s) for s in seqs])
    T = max(map(len, seqs))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, T)
    for i, s in enumerate(seqs):
        assert batch["input_ids"][i, : len(s)].tolist() == s == batch["labels"][i, : len(s)].tolist()
        assert (batch["input_ids"][i, len(s):] == tokenizer.pad_id).all()
        assert (batch["labels"][i, len(s):] == IGNORE_INDEX).all()
        assert batch["attention_mask"][i].tolist() == [1] * len(s) + [0] * (T - len(s))
    mlm = MLMCollator.from_tokenizer(tokenizer, seed=5)
    items = [{"input_ids": torch.tensor(s), "index": i, "epoch": 0} for i, s in enumerate(seqs)]
    # per-example masking does not depend on the batch an example is in
    assert torch.equal(mlm(items)["labels"][0, : len(seqs[0])], mlm(items[:1])["labels"][0])
    assert batch["input_ids"].dtype == torch.long


def test_test_dataset_creates_demo_file(tokenizer, tmp_path, capsys):
    ds = TestMLMDataset(tmp_path / "new" / "dir", tokenizer, block_size=16)
    assert (tmp_path / "new" / "dir" / "test.txt").read_text(encoding="utf-8") == demo_sentences()
    assert "Created" in capsys.readouterr().out
    assert len(ds) == len(demo_lines())
    item = ds[0]
    assert set(item) == {"input_ids", "labels", "attention_mask"}
    assert len(item["input_ids"]) <= 16 and item["input_ids"][-1] == tokenizer.eos_id
    assert torch.equal(ds[0]["input_ids"], item["input_ids"])  # validation stream: same masks every time
    assert not torch.equal(ds[(0, 0)]["labels"], ds[(1, 0)]["labels"]) or not torch.equal(
        ds[(0, 1)]["labels"], ds[(1, 1)]["labels"])
    (tmp_path / "empty").mkdir()
    TestMLMDataset(tmp_path / "empty", tokenizer)
    assert (tmp_path / "empty" / "test.txt").is_file()


def test_test_dataset_bad_input(tokenizer, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError, match="no test.txt"):
        TestMLMDataset(other, tokenizer)
    assert [p.name for p in other.iterdir()] == ["notes.md"]  # left untouched
    with pytest.raises(UsageError, match="not a folder"):
        TestMLMDataset(other / "notes.md", tokenizer)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"\n  \n\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("line one\nline two\ncaf\xe9\n".encode("latin-1"), r"test\.txt:3: invalid UTF-8"),
    ],
    ids=["empty", "blank", "binary", "latin1"],
)
def test_test_dataset_bad_file(tokenizer, tmp_path, content, match):
    d = write_files(tmp_path / "data", {"test.txt": content})
    with pytest.raises(UsageError, match=match) as info:
        TestMLMDataset(d, tokenizer)
    assert str(d / "test.txt") in str(info.value)


def test_custom_dataset_subclass(tokenizer, tmp_path):
    (tmp_path / "your_data.txt").write_text("first custom line\n\nsecond custom line here\n", encoding="utf-8")
    ds = CustomMLMDataset(tmp_path, tokenizer, block_size=8)
    assert len(ds) == 3  # the empty line still gives <s></s>
    assert ds.examples[0].tolist() == tokenizer.encode("first custom line", max_length=8)
    assert not (tmp_path / "test.txt").exists()
    item = ds[2]
    assert len(item["input_ids"]) == 8 and set(item) == {"input_ids", "labels", "attention_mask"}
    # and through the data module, as a class or as an import path
    data = make_data(tokenizer, tmp_path, batch_size=2, dataset_class=CustomMLMDataset, val_split=0.0)
    batches = list(data.train_dataloader())
    assert len(batches) == 2 and all(len(b["input_ids"]) == 2 for b in batches)  # padded to whole batches
    assert {r[0] for r in originals(batches)} == {tuple(e.tolist()) for e in data.dataset.examples}
    assert data.val_dataloader() is None
    data = make_data(tokenizer, tmp_path / "default", dataset_class="litgpt.data.test_data.TestMLMDataset")
    assert len(data.dataset) == len(demo_lines())
    with pytest.raises(UsageError, match="dataset_class"):
        make_data(tokenizer, tmp_path, dataset_class="no.such.Module")


def test_split_is_disjoint_and_deduplicated(tokenizer, tmp_path):
    lines = demo_lines()[:60]
    (tmp_path / "test.txt").write_text("\n".join(lines + lines[:30] + lines[:5]), encoding="utf-8")
    data = make_data(tokenizer, tmp_path, val_split=0.2)
    ex = data.dataset.examples
    train = {tuple(ex[i].tolist()) for i in data.train_indices}
    val = [tuple(ex[i].tolist()) for i in data.val_indices]
    assert len(val) == len(set(val)) == 12 and not train & set(val)
    assert len(train) + len(val) == 60
    assert len(data.train_indices) + len(val) < len(ex)  # val keeps one copy of each
    again = make_data(tokenizer, tmp_path, val_split=0.2)
    assert again.val_indices == data.val_indices
    assert split_distinct(ex, 0.2, seed=4) != split_distinct(ex, 0.2, seed=3)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "test.txt").write_text("same\nsame\n", encoding="utf-8")
    data = make_data(tokenizer, tmp_path / "one")
    assert data.val_indices == [] and data.train_indices == [0, 1]


def originals(batches):
    """(original ids, labels) per row: labels put back where tokens were replaced."""
    rows = []
    for b in batches:
        for ids, labels, mask in zip(b["input_ids"], b["labels"], b["attention_mask"]):
            n = int(mask.sum())
            orig = torch.where(labels != IGNORE_INDEX, labels, ids)[:n]
            rows.append((tuple(orig.tolist()), tuple(labels[:n].tolist())))
    return rows


def test_val_masks_fixed_and_train_remasked(tokenizer, tmp_path):
    data = make_data(tokenizer, tmp_path)
    assert same_batches(list(data.val_dataloader()), list(data.val_dataloader()))
    loader = data.train_dataloader()
    lengths = [len(loader)]
    epoch0 = list(loader)
    lengths.append(len(loader))
    epoch1 = list(loader)
    assert [len(epoch0), len(epoch1)] == lengths and abs(lengths[0] - lengths[1]) <= 1
    rows0, rows1 = originals(epoch0), originals(epoch1)
    expected = [tuple(data.dataset.examples[i].tolist()) for i in data.train_indices]
    # every example once per epoch; the batch that ends an epoch takes its rest from the next epoch's shuffle
    keys = loader.order(0) + loader.order(1) + loader.order(2)
    assert len(keys) == len(set(keys)) and len(rows0) == len(loader.order(0))
    for epoch in (0, 1):
        assert sorted(i for e, i in keys if e == epoch) == sorted(data.train_indices)
    assert {r[0] for r in rows0} == set(expected) >= {r[0] for r in rows1}
    assert [r[0] for r in rows0][:50] != [r[0] for r in rows1][:50]  # reshuffled
    labels0, labels1 = dict(rows0), dict(rows1)
    changed = sum(labels0[k] != labels1[k] for k in labels1)
    assert changed > 0.9 * len(labels1)  # re-masked
    val = originals(data.val_dataloader())
    assert not {r[0] for r in val} & set(expected)


def test_exact_resume_and_worker_independence(tokenizer, tmp_path):
    reference = make_data(tokenizer, tmp_path)
    batches, states = batches_and_states(reference, epochs=3)
    per_epoch = len(batches) // 3
    for cut in (5, per_epoch, per_epoch + 7):  # mid-epoch, at the epoch end, in the next epoch
        rest = resumed_batches(make_data(tokenizer, tmp_path), states[cut], len(batches) - cut)
        assert len(rest) == len(batches) - cut and same_batches(rest, batches[cut:]), cut
    # state loaded before the loader is created, and worker processes: the same batches
    resumed = make_data(tokenizer, tmp_path, num_workers=2)
    resumed.load_state_dict(states[5])
    assert same_batches(list(resumed.train_dataloader())[:3], batches[5:8])
    with pytest.raises(UsageError, match="same --data"):
        resumed.load_state_dict({"module": "TextFiles", "loader": {}})


def test_ranks_get_disjoint_shards(tokenizer, tmp_path):
    shards = [make_data(tokenizer, tmp_path, rank=r, world_size=2) for r in range(2)]
    loaders = [s.train_dataloader() for s in shards]
    assert abs(len(loaders[0]) - len(loaders[1])) <= 1
    orders = [loader.order(0) + loader.order(1) for loader in loaders]
    # the ranks take micro-batches of the stream in turn: nothing read twice, every example once per epoch
    assert not set(orders[0]) & set(orders[1])
    assert sorted(i for o in orders for e, i in o if e == 0) == sorted(shards[0].train_indices)
    rows = [[r[0] for r in originals(list(loader))] for loader in loaders]
    assert [len(r) for r in rows] == [len(loader.order(0)) for loader in loaders]
    # validation: each batch on one rank; the rank with fewer repeats one, which validation does not count
    loaders = [s.val_dataloader() for s in shards]
    assert len(loaders[0]) == len(loaders[1]) == -(-loaders[0].num_batches // 2)
    assert sum(loader.counted() for loader in loaders) == loaders[0].num_batches
    counted = [tuple(x.tolist()) for loader in loaders for b in list(loader)[: loader.counted()]
               for x in b["input_ids"]]
    assert sorted(counted) == sorted(tuple(x.tolist()) for b in make_data(tokenizer, tmp_path).val_dataloader()
                                     for x in b["input_ids"])


def test_loaders_leave_the_global_rng_alone(tokenizer, tmp_path):
    assert_loaders_leave_global_rng_alone(make_data(tokenizer, tmp_path, num_workers=1))

"""A small line-per-example MLM dataset (`data_dir/test.txt`) and the data module that wraps it.

When `data_dir` is missing or empty, `test.txt` is created there from the demo sentences shipped with the package,
so `litgpt pretrain` runs out of the box. To train on your own small file, subclass and override `_load_examples()`:
it can read `self.data_dir`, `self.tokenizer` and `self.block_size`, which are set before it is called.
"""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch.utils.data import Dataset

from litgpt.data.base import DataModule, EpochLoader, EvalLoader
from litgpt.data.mlm import MLMCollator, MLMMasker, derive_seed, example_generator
from litgpt.data.readers import find_text_files, read_text_lines
from litgpt.utils import UsageError, atomic_write_text

TEST_FILE = "test.txt"
# the validation stream: masks derived from (seed, VAL_EPOCH, index) are the same at every evaluation
VAL_EPOCH = -1


def demo_sentences() -> str:
    from importlib.resources import files

    return (files("litgpt.data") / "test_sentences.txt").read_text(encoding="utf-8")


def ensure_test_file(data_dir: Path) -> Path:
    """`data_dir/test.txt`, created from the demo sentences when `data_dir` is missing or empty. A folder that
    already holds other files is never written to."""
    data_dir = Path(data_dir)
    path = data_dir / TEST_FILE
    if path.is_file():
        return path
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"{data_dir}: not a folder")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise UsageError(f"{data_dir}: no {TEST_FILE} in this folder (expected one text per line); "
                         "the folder is not empty, so it is left untouched")
    text = demo_sentences()
    atomic_write_text(path, text)
    print(f"Created {path} with {len(text.splitlines())} demo sentences")
    return path


class TestMLMDataset(Dataset):
    """One example per non-empty line of `data_dir/test.txt`, each `<s> line </s>` cut to `block_size` tokens.

    `dataset[i]` masks example i the same way every time (the validation stream); `dataset[(epoch, i)]` masks it
    from (seed, epoch, i), which is how the training loader asks, so each epoch gets fresh masks.
    Returns a dict of `input_ids`, `labels` (-100 where nothing is predicted) and `attention_mask` (all ones).
    `objective="clm"` returns the ids unmasked, with labels equal to the ids.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, data_dir: Union[str, Path], tokenizer: Any, block_size: int = 512, mask_prob: float = 0.15,
                 seed: int = 42, objective: str = "mlm", mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1) -> None:
        self.data_dir = Path(data_dir)
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.mask_prob = mask_prob
        self.seed = seed
        self.objective = objective
        self.masker = (MLMMasker.from_tokenizer(tokenizer, mask_prob=mask_prob, mask_replace_prob=mask_replace_prob,
                                                random_replace_prob=random_replace_prob)
                       if objective == "mlm" else None)
        self._generator: Optional[torch.Generator] = None
        examples = self._load_examples()
        self.examples: List[torch.Tensor] = [torch.as_tensor(e, dtype=torch.long).flatten() for e in examples]
        if not self.examples:
            raise UsageError(f"{self.data_dir}: no examples found (every line was empty or shorter than 2 tokens)")

    def _ensure_test_file(self) -> Path:
        return ensure_test_file(self.data_dir)

    def _load_examples(self) -> List[torch.Tensor]:
        path = self._ensure_test_file()
        lines = [line.strip() for line in read_text_lines(path)]
        lines = [line for line in lines if line]
        examples = []
        for tokens in self.tokenizer.encode_batch(lines, max_length=self.block_size):
            if len(tokens) < 2:
                continue
            examples.append(torch.tensor(tokens, dtype=torch.long))
        return examples

    def _create_masked_input(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, labels)` for one example, drawn from `self._generator` (set per example by `__getitem__`)."""
        if self.objective == "clm":
            return tokens.clone(), tokens.clone()
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return self.masker(tokens, self._generator)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (VAL_EPOCH, key)
        index = int(index)
        if index < 0:
            index += len(self.examples)
        tokens = self.examples[index]
        self._generator = example_generator(self.seed, int(epoch), index)
        input_ids, labels = self._create_masked_input(tokens)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": torch.ones_like(input_ids)}


def _resolve_class(spec: Any) -> type:
    if isinstance(spec, type):
        return spec
    if isinstance(spec, str) and spec.strip():
        module, _, name = spec.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            raise UsageError(f"--data.dataset_class {spec}: cannot import it (expected 'package.module.ClassName')"
                             ) from None
        if isinstance(cls, type) and issubclass(cls, Dataset):
            return cls
    raise UsageError(f"--data.dataset_class {spec!r}: expected a TestMLMDataset subclass or its import path")


@dataclass
class TestData(DataModule):
    """The small demo corpus: `data_dir/test.txt`, one sentence per line (created from demo sentences if missing).

    Validation takes `val_split` of the distinct examples, chosen with `seed`; identical lines all go to the same
    side, so validation never repeats a training example. Validation masks are fixed across evaluations.

    Args:
        data_dir: Folder holding test.txt; created with the demo sentences when missing or empty.
        val_split: Fraction of distinct examples held out for validation.
        seed: Seed for the split, the shuffling and the masking.
        num_workers: DataLoader worker processes (the batches do not depend on it).
        dataset_class: A TestMLMDataset subclass, or its import path 'package.module.ClassName', to read the data.
    """

    __test__ = False

    data_dir: Path = Path("data/test_data")
    val_split: float = 0.1
    seed: int = 42
    num_workers: int = 0
    dataset_class: Optional[str] = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not 0.0 <= self.val_split < 1.0:
            raise UsageError(f"--data.val_split {self.val_split}: expected a fraction in [0, 1)")
        if self.num_workers < 0:
            raise UsageError(f"--data.num_workers {self.num_workers}: expected >= 0")
        self.dataset: Optional[TestMLMDataset] = None
        self.train_indices: List[int] = []
        self.val_indices: List[int] = []
        self._train_loader = None

    def _dataset_cls(self) -> type:
        return TestMLMDataset if self.dataset_class is None else _resolve_class(self.dataset_class)

    def prepare_data(self) -> None:
        cls = self._dataset_cls()
        if cls._load_examples is TestMLMDataset._load_examples:
            ensure_test_file(self.data_dir)

    def tokenizer_training_texts(self) -> List[Path]:
        """`test.txt`, or with a custom dataset class every text file in `data_dir`; files are streamed, so a
        huge line costs no more memory than a short one."""
        self.prepare_data()
        path = self.data_dir / TEST_FILE
        return [path] if path.is_file() else find_text_files(self.data_dir, "--data.data_dir")

    def setup(self, stage: str = "") -> None:
        self._require_connected()
        self.dataset = self._dataset_cls()(
            self.data_dir, self.tokenizer, block_size=self.max_seq_length, mask_prob=self.mask_prob, seed=self.seed,
            objective=self.objective, mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob)
        self.train_indices, self.val_indices = split_distinct(self.dataset.examples, self.val_split, self.seed)
        if not self.train_indices:
            raise UsageError(f"{self.data_dir}: too few distinct examples ({len(self.dataset.examples)}) to split off "
                             f"--data.val_split {self.val_split}")
        self._train_loader = None

    def _collator(self) -> MLMCollator:
        return MLMCollator(self.tokenizer.pad_id, objective="clm" if self.objective == "clm" else "mlm",
                           masker=self.dataset.masker, seed=self.seed)

    def _make_train_loader(self) -> EpochLoader:
        if self.dataset is None:
            raise RuntimeError("TestData: call setup() before train_dataloader()")
        return EpochLoader(self.dataset, self.train_indices, self.batch_size, self._collator(), seed=self.seed,
                           rank=self.rank, world_size=self.world_size, num_workers=self.num_workers)

    def val_dataloader(self) -> Optional[EvalLoader]:
        """Validation batches in a fixed order with fixed masks, dealt to the ranks. `None` when `val_split` is 0."""
        if self.dataset is None:
            raise RuntimeError("TestData: call setup() before val_dataloader()")
        if not self.val_indices:
            return None
        batches = [self.val_indices[i : i + self.batch_size] for i in range(0, len(self.val_indices), self.batch_size)]
        return EvalLoader(self.dataset, batches, self._collator(), self.rank, self.world_size, self.num_workers,
                          self.seed)


def split_distinct(examples: List[torch.Tensor], val_split: float, seed: int) -> Tuple[List[int], List[int]]:
    """Train and validation example indices. Identical examples are grouped and each group goes to one side (the
    validation side keeps one copy), so the two never share an example. With `val_split > 0` and at least two
    distinct examples, validation gets at least one group and training keeps at least one."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(tuple(ex.tolist()), []).append(i)
    keys = list(groups)
    n_val = 0
    if val_split > 0 and len(keys) >= 2:
        n_val = min(max(1, round(val_split * len(keys))), len(keys) - 1)
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(derive_seed(seed, 7, 7))).tolist()
    val_keys = {keys[i] for i in perm[:n_val]}
    train = sorted(i for k, idx in groups.items() if k not in val_keys for i in idx)
    val = sorted(groups[k][0] for k in val_keys)
    return train, val

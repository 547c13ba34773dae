"""What the finetuning data modules (classification, NER, QA) share: three splits kept apart, and their loaders.

- `train` trains the model.
- `validation` chooses it: the best epoch, QA's null threshold, early stopping. It is a `validation` or `dev` file
  beside train when the folder has one; else `--val_fraction` of train, carved out by `carve_validation` (seeded,
  stratified by label for single-label classification, whole documents for NER and whole articles for QA); else
  there is none, nothing is chosen and the last epoch is the model.
- `test` is scored once, by the chosen model, at the end. Nothing read from it feeds back into training.

`selection` names the split that chooses ("validation", "dev" or "none"), `validation_from` where it came from.
"""

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from litgpt.data.base import DataModule, EpochBatches, check_batching
from litgpt.utils import UsageError

VALIDATION_NAMES = ("validation", "dev")


class FinetuneDataModule(DataModule):
    """The finetuning data modules' base: `connect` with an evaluation batch size, the epoch's shuffle, and loaders
    of length-grouped batches (`EpochBatches`), shuffled and sharded by rank for training, longest first for
    evaluation. Finetuning resumes at an epoch boundary, so no loader position is saved.

    A subclass reads `train`, then calls `find_validation` (a file, a carved share of train, or none), reads `test`,
    and in `setup()` tokenizes each split into an `ExampleList` in `self._sets` ("train", "validation", "test",
    and any further evaluation split); it names its `collator()` and `fingerprint_parts()`."""

    default_max_length = 512
    # evaluation splits whose examples must all be on one rank (entities need whole sentences, answers all of a
    # context's windows) are evaluated whole on every rank
    shard_evaluation = True
    split_suffixes: Tuple[str, ...] = ()
    validation: Any = None
    selection = "none"
    validation_from = ""

    def connect(self, tokenizer: Any, batch_size: int = 1, max_seq_length: Optional[int] = None, seed: int = 42,
                rank: int = 0, world_size: int = 1, eval_batch_size: Optional[int] = None) -> None:
        """Hands over what the data needs from the run; `eval_batch_size` defaults to twice `batch_size`."""
        check_batching(batch_size, max_seq_length, rank, world_size)
        check_batching(eval_batch_size or 2 * batch_size, None, rank, world_size)
        self.tokenizer = tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or 2 * batch_size
        self.max_seq_length = max_seq_length or getattr(tokenizer, "model_max_length", None) or self.default_max_length
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._train_loader = None

    # ---- the splits ------------------------------------------------------------------------------------------
    def find_validation(self, read: Callable[[Path], Any], val_fraction: Optional[float], seed: int,
                        strata: Optional[Callable[[Any], Sequence[Hashable]]] = None,
                        groups: Optional[Callable[[Any], Sequence[Hashable]]] = None) -> None:
        """Sets `validation`, `selection` and `validation_from`: a `validation`/`dev` file beside train, read with
        `read`, else `hold_out(val_fraction, ...)` of train, else none."""
        path = find_optional_file(Path(self.data_dir), VALIDATION_NAMES, self.split_suffixes)
        if path is None:
            return self.hold_out(val_fraction, seed, strata, groups)
        if val_fraction is not None:
            raise UsageError(f"--val_fraction {val_fraction}: {path} is the validation split already; drop the flag, "
                             "or the file")
        self.validation, self.selection, self.validation_from = read(path), path.stem, path.name

    def hold_out(self, val_fraction: Optional[float], seed: int,
                 strata: Optional[Callable[[Any], Sequence[Hashable]]] = None,
                 groups: Optional[Callable[[Any], Sequence[Hashable]]] = None) -> None:
        """Takes `val_fraction` of `train` out as the validation split (`carve_validation`; `strata(train)` gives
        each example's class, `groups(train)` its document); nothing when `val_fraction` is None."""
        if val_fraction is None:
            return
        where = f"--val_fraction {val_fraction} of {self.train.path.name}"
        keep, held = carve_validation(len(self.train), val_fraction, seed, strata(self.train) if strata else None,
                                      groups(self.train) if groups else None, where)
        self.train, self.validation = take(self.train, keep), take(self.train, held)
        self.selection, self.validation_from = "validation", f"{where} (seed {seed})"

    def fingerprint_parts(self, split: Any) -> Any:
        """A split's content as JSON-able data, for `fingerprint`."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """A hash of every split's content; a resumed run checks that it sees the same data."""
        h = hashlib.sha256()
        for name, split in self.splits().items():
            h.update(json.dumps([name, self.fingerprint_parts(split)], sort_keys=True, default=str).encode("utf-8"))
        return h.hexdigest()

    def splits(self) -> Dict[str, Any]:
        """The raw splits by name, None left out."""
        return {name: split for name, split in (("train", self.train), ("validation", self.validation),
                                                ("test", self.test)) if split is not None}

    def split_name(self, split: str) -> str:
        """What a split is called in reports: its file's name."""
        return self.splits()[split].path.name

    def sizes(self) -> str:
        """"240 train / 20 validation / 80 test", for the run's first lines."""
        return " / ".join(f"{len(split)} {name}" for name, split in self.splits().items())

    # ---- loaders ---------------------------------------------------------------------------------------------
    def collator(self) -> Callable:
        raise NotImplementedError

    def _make_train_loader(self) -> Any:
        return self.loader(self._sets["train"], self.batch_size, shuffle=True)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's shuffle of the train loader."""
        self.train_dataloader().batch_sampler.set_epoch(epoch)

    def eval_dataloader(self, split: str) -> Any:
        """An evaluation split ("validation", "test" or a further one), longest first (each rank its share, or all
        of it: `shard_evaluation`)."""
        return self.loader(self._sets[split], self.eval_batch_size, shuffle=False)

    def val_dataloader(self) -> Any:
        return self.eval_dataloader("validation")

    def test_dataloader(self) -> Any:
        return self.eval_dataloader("test")

    def eval_examples(self, split: str) -> List[Any]:
        """The prepared examples of an evaluation split in its loader's order."""
        examples = self._sets[split].examples
        return [examples[i] for batch in self.eval_dataloader(split).batch_sampler for i in batch]

    def loader(self, dataset: Optional["ExampleList"], batch_size: int, shuffle: bool) -> Any:
        from torch.utils.data import DataLoader

        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a loader")
        rank, world_size = (self.rank, self.world_size) if shuffle or self.shard_evaluation else (0, 1)
        batches = EpochBatches(len(dataset), batch_size, shuffle, self.seed, rank, world_size, lengths=dataset.lengths)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=self.collator(),
                          num_workers=getattr(self, "num_workers", 0))

    def state_dict(self) -> Dict[str, Any]:
        return {"module": type(self).__name__, "loader": None}


class ExampleList(torch.utils.data.Dataset):
    """Prepared examples, each with its `input_ids` (or itself a sequence of ids first), for length-grouped
    batches."""

    def __init__(self, examples: Sequence[Any]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        return self.examples[i]

    @property
    def lengths(self) -> List[int]:
        return [len(getattr(e, "input_ids", None) or e[0]) for e in self.examples]


# ---- a validation split ---------------------------------------------------------------------------------------
def find_optional_file(data_dir: Path, names: Sequence[str], suffixes: Sequence[str]) -> Optional[Path]:
    """The first `name + suffix` file in `data_dir`, names first, or None."""
    for name in names:
        for suffix in suffixes:
            if (data_dir / f"{name}{suffix}").is_file():
                return data_dir / f"{name}{suffix}"
    return None


def check_val_fraction(val_fraction: Optional[float]) -> None:
    if val_fraction is not None and not 0 < val_fraction <= 0.5:
        raise UsageError(f"--val_fraction {val_fraction}: expected a fraction in (0, 0.5] of the train split")


def carve_validation(n: int, fraction: float, seed: int, strata: Optional[Sequence[Hashable]] = None,
                     groups: Optional[Sequence[Hashable]] = None, where: str = "--val_fraction"
                     ) -> Tuple[List[int], List[int]]:
    """(train indices, validation indices) of `n` examples, each in file order: `fraction` of them held out, drawn
    with `seed`.

    - `strata` (a class per example): each class gives round(fraction x its count) examples, at least one, so the
      validation split holds every class in the train split's proportions, within one example per class.
    - `groups` (a document per example): whole documents are held out, in a seeded order, until they hold
      round(fraction x n) examples; at least one document stays on each side.
    - neither: round(fraction x n) examples, at least one, drawn at random.
    """
    check_val_fraction(fraction)
    g = torch.Generator().manual_seed(seed)

    def share(count: int) -> int:
        return min(max(1, math.floor(fraction * count + 0.5)), count - 1)

    held: List[int] = []
    if strata is not None:
        by_class: Dict[Hashable, List[int]] = {}
        for i, label in enumerate(strata):
            by_class.setdefault(label, []).append(i)
        for label in sorted(by_class, key=repr):
            members = by_class[label]
            if len(members) < 2:
                raise UsageError(f"{where}: class {label!r} has {len(members)} example; a validation split that holds "
                                 "every class needs at least 2 of each (add examples, or give a validation file)")
            held += [members[i] for i in torch.randperm(len(members), generator=g)[: share(len(members))].tolist()]
    elif groups is not None:
        documents: Dict[Hashable, List[int]] = {}
        for i, group in enumerate(groups):
            documents.setdefault(group, []).append(i)
        order = list(documents.values())
        if len(order) < 2:
            raise UsageError(f"{where}: the train split is one document; carving a validation split takes whole "
                             "documents, so it needs at least 2 (or give a validation file)")
        target = share(n)
        for k in torch.randperm(len(order), generator=g).tolist():
            if len(held) >= target:
                break
            if len(held) + len(order[k]) < n:  # train keeps at least one document
                held += order[k]
    else:
        if n < 2:
            raise UsageError(f"{where}: the train split has {n} example; nothing is left to carve a validation split")
        held = torch.randperm(n, generator=g)[: share(n)].tolist()
    chosen = set(held)
    return [i for i in range(n) if i not in chosen], sorted(chosen)


def take(split: Any, indices: Sequence[int]) -> Any:
    """The examples `indices` of a split dataclass: each list field with one entry per example is indexed, the
    rest (its path, flags) is kept."""
    n = len(split)
    changes = {f.name: [value[i] for i in indices] for f in dataclasses.fields(split)
               if isinstance(value := getattr(split, f.name), list) and len(value) == n}
    return dataclasses.replace(split, **changes)

"""The DataModule contract every data module follows, and the one epoch sampler they share.

How the pretraining loop uses a data module::

    data.connect(tokenizer, batch_size, max_seq_length, mask_prob=..., objective=..., seed=..., rank=...,
                 world_size=...)
    if global_rank == 0:
        data.prepare_data()      # one-time work: create test.txt, tokenize a corpus into a cache
    barrier()
    data.setup()                 # every rank
    train_loader = data.train_dataloader()   # yields dicts of input_ids, labels, attention_mask (masked, padded)
    val_loader = data.val_dataloader()       # same, with the same masks at every evaluation
    state = data.state_dict()    # plain data, save it with the checkpoint
    data.load_state_dict(state)  # after this, iterating train_loader continues exactly where `state` was taken

The train loader is iterated epoch after epoch: when an iterator is exhausted, `iter(train_loader)` starts the next
epoch, reshuffled from (seed, epoch) and re-masked. Ranks: `connect(rank=, world_size=)` gives each DDP rank a
disjoint shard of every epoch (for streaming data litdata does the split from torch.distributed). Do not pass the
loaders through `fabric.setup_dataloaders` (it would replace the sampler); move batches to the device yourself.
The finetuning data modules (`litgpt.data.finetuning`) follow the same contract with their own `connect` arguments.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch

from litgpt.data.mlm import derive_seed
from litgpt.utils import UsageError

# classification batches: groups of this many batches are sorted by length together, so padding stays small
# while the order stays random
GROUP_BATCHES = 50


# ---- the DataModule base ------------------------------------------------------------------------------------
class DataModule:
    """Base for data modules. Subclasses are dataclasses whose fields are the `--data.*` flags."""

    tokenizer: Any = None
    batch_size: int = 1
    max_seq_length: int = 512
    mask_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    objective: str = "mlm"
    rank: int = 0
    world_size: int = 1

    def connect(self, tokenizer: Any, batch_size: int = 1, max_seq_length: Optional[int] = None,
                mask_prob: float = 0.15, objective: str = "mlm", seed: Optional[int] = None,
                mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                rank: int = 0, world_size: int = 1) -> None:
        """Hands over what the data module needs from the training run.

        `seed=None` keeps the module's own `seed` field. `rank`/`world_size` select this process's shard. The mask
        probabilities are checked where they are used, by the masker (and up front by `TrainArgs.validate`).
        """
        if objective not in ("mlm", "clm"):
            raise UsageError(f"--train.objective {objective!r}: expected 'mlm' or 'clm'")
        check_batching(batch_size, max_seq_length, rank, world_size)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length or getattr(tokenizer, "model_max_length", None) or 512
        self.mask_prob = mask_prob
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.objective = objective
        if seed is not None:
            self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def _require_connected(self) -> None:
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}: call connect(tokenizer, ...) before setup()")

    def prepare_data(self) -> None:
        """One-time preparation, run on global rank 0 before `setup()` (other ranks wait at a barrier)."""

    def setup(self, stage: str = "") -> None:
        """Loads the data on every rank."""

    def tokenizer_training_texts(self) -> List[Union[str, Path]]:
        """Texts (`str`) or files (`Path`) to train a tokenizer on when the run has none."""
        raise NotImplementedError(f"{type(self).__name__} cannot provide tokenizer training text")

    def _make_train_loader(self) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        """The (single, stateful) train loader; `state_dict()` reports its position."""
        if getattr(self, "_train_loader", None) is None:
            self._train_loader = self._make_train_loader()
            pending = getattr(self, "_pending_state", None)
            if pending is not None:
                self._train_loader.load_state_dict(pending)
                self._pending_state = None
        return self._train_loader

    def val_dataloader(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """The train loader's position as plain Python data (safe for `torch.load(weights_only=True)`)."""
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            pending = getattr(self, "_pending_state", None)
            return {"module": type(self).__name__, "loader": pending}
        return {"module": type(self).__name__, "loader": loader.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores the train loader's position; works before or after `train_dataloader()` was called."""
        if not isinstance(state, dict) or "loader" not in state:
            raise UsageError("data state in the checkpoint is not a data module state")
        if state.get("module") != type(self).__name__:
            raise UsageError(f"the checkpoint's data state is from {state.get('module')}, not {type(self).__name__};"
                             " resume with the same --data")
        if state["loader"] is None:
            return
        loader = getattr(self, "_train_loader", None)
        if loader is None:
            self._pending_state = state["loader"]
        else:
            loader.load_state_dict(state["loader"])


def check_batching(batch_size: int, max_seq_length: Optional[int], rank: int, world_size: int) -> None:
    """The checks every `connect` makes."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size {batch_size!r}: expected a positive integer")
    if max_seq_length is not None and (not isinstance(max_seq_length, int) or max_seq_length < 2):
        raise UsageError(f"max_seq_length {max_seq_length!r}: expected an integer >= 2")
    if not (0 <= rank < world_size):
        raise ValueError(f"rank {rank} outside world_size {world_size}")


# ---- the epoch sampler ------------------------------------------------------------------------------------------
class EpochBatches:
    """This rank's batches of example indices for one epoch: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches an uninterrupted one would. `set_epoch(e)` picks the epoch; `len()` costs nothing.

    Without `lengths` (pretraining) the epoch's order is padded by repeating its start (like `DistributedSampler`)
    so every rank gets the same number of full batches, and rank r takes micro-batches r, r + W, ... of it: W ranks
    with accumulation A see exactly the micro-batches one process with accumulation W * A would.
    With `lengths` (classification; `lengths[i]` is the length of example i) training shuffles, sorts each group of
    `GROUP_BATCHES` batches by length, cuts it into batches and shuffles the batches, so similar lengths share a
    batch; ranks take every W-th batch, and the few batches that would leave ranks with different counts are
    dropped (DDP needs the same number of steps everywhere). Evaluation (`shuffle=False`) is longest first.
    """

    def __init__(self, indices: Union[int, Sequence[int]], batch_size: int, shuffle: bool = True, seed: int = 42,
                 rank: int = 0, world_size: int = 1, lengths: Optional[Sequence[int]] = None) -> None:
        self.indices = list(range(indices)) if isinstance(indices, int) else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("EpochBatches needs at least one example")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lengths = list(lengths) if lengths is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> int:
        """Batches in the epoch before they are dealt out to the ranks."""
        n, bs, world = len(self.indices), self.batch_size, self.world_size
        if self.lengths is None:
            return -(-n // (bs * world)) * world
        batches = -(-n // bs)
        if self.shuffle and world > 1:
            batches = batches - batches % world or batches
        return batches

    def __len__(self) -> int:
        return len(range(self.rank, self._num_batches(), self.world_size))

    def batches(self, epoch: Optional[int] = None) -> List[List[int]]:
        """This rank's batches for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        bs, idx = self.batch_size, self.indices
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -1))
        if self.shuffle:
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        if self.lengths is None:
            total = self._num_batches() * bs
            idx = (idx * -(-total // len(idx)))[:total]
            batches = [idx[i : i + bs] for i in range(0, total, bs)]
        else:
            group = bs * GROUP_BATCHES if self.shuffle else len(idx)
            batches = []
            for start in range(0, len(idx), group):
                part = sorted(idx[start : start + group], key=lambda i: -self.lengths[i])
                batches += [part[j : j + bs] for j in range(0, len(part), bs)]
            if self.shuffle:
                batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches[: self._num_batches()][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())


# ---- a resumable loader over a map-style dataset ------------------------------------------------------------------
class EpochLoader:
    """Batches of a map-style dataset from `EpochBatches`, epoch after epoch, resumable mid-epoch.

    The dataset is indexed with `(epoch, index)` keys when `pass_epoch=True` so an example's masking can be derived
    from (seed, epoch, index): the same batches come out whatever `num_workers` is, and a restored loader continues
    exactly. `state_dict()` counts the examples this rank has consumed in the current epoch.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], batch_size: int, collate_fn: Callable,
                 shuffle: bool = True, seed: int = 42, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pass_epoch: bool = True) -> None:
        self.dataset = dataset
        self.sampler = EpochBatches(indices, batch_size, shuffle, seed, rank, world_size)
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.seed = seed
        self.world_size = world_size
        self.num_workers = num_workers
        self.pass_epoch = pass_epoch
        self.epoch = 0
        self.offset = 0

    @property
    def examples_per_rank(self) -> int:
        return len(self.sampler) * self.batch_size

    def __len__(self) -> int:
        return len(self.sampler)

    def order(self, epoch: int) -> List[int]:
        """This rank's example indices for `epoch`, in order."""
        return [i for batch in self.sampler.batches(epoch) for i in batch]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        from torch.utils.data import DataLoader

        if self.offset >= self.examples_per_rank:
            self.epoch, self.offset = self.epoch + 1, 0
        epoch = self.epoch
        order = self.order(epoch)[self.offset:]
        keys = [(epoch, i) for i in order] if self.pass_epoch else order
        # a generator of its own: creating the iterator must not draw from the global RNG (dropout's), or a
        # resumed run, which creates it at a different moment, would drift from an uninterrupted one
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -2))
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=keys, collate_fn=self.collate_fn,
                            num_workers=self.num_workers, generator=generator)
        for batch in loader:
            self.offset += len(batch["input_ids"])
            yield batch
        self.epoch, self.offset = epoch + 1, 0

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed,
                "num_examples": len(self.sampler.indices), "world_size": self.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        n = len(self.sampler.indices)
        if state.get("num_examples") != n or state.get("world_size") != self.world_size:
            raise UsageError(f"cannot resume the data position: the checkpoint saw {state.get('num_examples')} examples"
                             f" on {state.get('world_size')} rank(s), now there are {n} on "
                             f"{self.world_size}; resume with the same data and number of devices")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])

"""The DataModule contract every data module follows, and the samplers they share.

How the pretraining loop uses a data module::

    data.connect(tokenizer, batch_size, max_seq_length, mask_prob=..., objective=..., seed=..., rank=...,
                 world_size=...)
    if global_rank == 0:
        data.prepare_data()      # one-time work: create test.txt, tokenize a corpus into a cache
    barrier()
    data.setup()                 # every rank
    train_loader = data.train_dataloader()   # yields dicts of input_ids, labels, attention_mask (masked, padded)
    val_loader = data.val_dataloader()       # an EvalLoader: the same masks at every evaluation
    state = data.state_dict()    # plain data, save it with the checkpoint
    data.load_state_dict(state)  # after this, iterating train_loader continues exactly where `state` was taken

The train loader is iterated epoch after epoch: when an iterator is exhausted, `iter(train_loader)` starts the next
epoch, reshuffled from (seed, epoch) and re-masked. Ranks: `connect(rank=, world_size=)` gives each rank its share,
the same way for every data module: pretraining reads `EpochStream`'s micro-batches (every sequence once per epoch
across all ranks of all nodes, the same steps at any world size), validation `EvalLoader`'s, finetuning
`EpochBatches`'. Do not pass the loaders through `fabric.setup_dataloaders` (it would replace the sampler); move
batches to the device yourself. The finetuning data modules (`litgpt.data.finetuning`) follow the same contract with
their own `connect` arguments.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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


# ---- the epoch samplers ------------------------------------------------------------------------------------------
def epoch_order(indices: Sequence[int], seed: int, epoch: int) -> List[int]:
    """`indices` shuffled for `epoch`: a function of (seed, epoch) only, the same on every rank and at any world size,
    so a resumed run sees exactly the order an uninterrupted one would."""
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, -1))
    return [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]


class EpochStream:
    """Pretraining's order on any number of ranks: the epochs' shuffles one after another, cut into micro-batches
    of `batch_size` that are dealt to the ranks in turn (global micro-batch k goes to rank k % W).

    Every sequence of every epoch is read exactly once across all ranks, and no rank runs out before another: the
    stream does not end, and the micro-batch that crosses an epoch's end takes its last sequences from the next
    epoch's shuffle (which then starts after them). W ranks with accumulation A read, step after step, exactly the
    micro-batches one process with accumulation W * A reads, so the runs match. A sequence is named by
    `(epoch, index)`; micro-batch k belongs to the epoch of its first sequence.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int = 42, rank: int = 0,
                 world_size: int = 1) -> None:
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise UsageError("no training sequences; add data")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._orders: Dict[int, List[int]] = {}

    def first_batch(self, epoch: int) -> int:
        """The global micro-batch that starts `epoch`: the first whose first sequence is in it."""
        return -(-epoch * len(self.indices) // self.batch_size)

    def rank_batches(self, epoch: int) -> range:
        """This rank's global micro-batch numbers in `epoch` (none when the epoch is shorter than W micro-batches and
        the others take them all)."""
        start, end = self.first_batch(epoch), self.first_batch(epoch + 1)
        return range(start + (self.rank - start) % self.world_size, end, self.world_size)

    def batch(self, k: int) -> List[Tuple[int, int]]:
        """The `(epoch, index)` of each sequence of global micro-batch k."""
        n, out = len(self.indices), []
        for position in range(k * self.batch_size, (k + 1) * self.batch_size):
            epoch = position // n
            if epoch not in self._orders:
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}  # keep two epochs at most
                self._orders[epoch] = epoch_order(self.indices, self.seed, epoch)
            out.append((epoch, self._orders[epoch][position % n]))
        return out


class EpochBatches:
    """Finetuning's batches of example indices for one epoch, a function of (seed, epoch) only; `set_epoch(e)`
    picks the epoch, `len()` costs nothing.

    `lengths[i]` is the length of example i. Training shuffles, sorts each group of `GROUP_BATCHES` batches by
    length, cuts it into batches and shuffles the batches, so similar lengths share a batch; rank r takes batches
    r, r + W, .... Every example is read once per epoch and every rank gets the same number of batches (DDP needs
    the same number of steps everywhere): when the B batches do not split evenly, the last W + (B mod W) are
    pooled and re-cut, by length, into 2W smaller batches (`_even_rounds`). Evaluation (`shuffle=False`) is
    longest first, the ranks taking every W-th batch.
    """

    def __init__(self, indices: Union[int, Sequence[int]], batch_size: int, shuffle: bool = True, seed: int = 42,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] = ()) -> None:
        self.indices = list(range(indices)) if isinstance(indices, int) else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("EpochBatches needs at least one example")
        if shuffle and len(self.indices) < world_size:
            raise UsageError(f"{len(self.indices)} training examples cannot give each of {world_size} devices a batch")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.lengths = list(lengths)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self) -> int:
        """Batches in the epoch before they are dealt out to the ranks."""
        batches, world = -(-len(self.indices) // self.batch_size), self.world_size
        if not self.shuffle or batches % world == 0:
            return batches
        return (batches // world - (batches > world) + self._tail_rounds(batches)) * world

    def _tail_rounds(self, batches: int) -> int:
        """Rounds of W batches the pooled tail is re-cut into: two when the tail holds more than W batches (so none
        grows beyond `batch_size`), one when it is the whole epoch or the batches hold one example each."""
        return 2 if batches > self.world_size and self.batch_size > 1 else 1

    def __len__(self) -> int:
        return len(range(self.rank, self._num_batches(), self.world_size))

    def batches(self, epoch: Optional[int] = None) -> List[List[int]]:
        """This rank's batches for `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        bs, idx, world = self.batch_size, self.indices, self.world_size
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -1))
        if self.shuffle:
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
        group = bs * GROUP_BATCHES if self.shuffle else len(idx)
        batches = []
        for start in range(0, len(idx), group):
            part = sorted(idx[start : start + group], key=lambda i: -self.lengths[i])
            batches += [part[j : j + bs] for j in range(0, len(part), bs)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
            if len(batches) % world:
                batches = self._even_rounds(batches)
        return batches[self.rank :: self.world_size]

    def _even_rounds(self, batches: List[List[int]]) -> List[List[int]]:
        """The last W + (B mod W) batches (all of them when B < W) re-cut, by length, into batches of near equal
        size, W or 2W of them (`_tail_rounds`), so the ranks get the same number and no example is dropped."""
        world = self.world_size
        tail = len(batches) % world + world if len(batches) > world else len(batches)
        pool = sorted((i for b in batches[-tail:] for i in b), key=lambda i: -self.lengths[i])
        parts = world * self._tail_rounds(len(batches))
        cuts = [len(pool) * j // parts for j in range(parts + 1)]
        return batches[:-tail] + [pool[cuts[j] : cuts[j + 1]] for j in range(parts)]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches())


# ---- resumable loaders over a map-style dataset --------------------------------------------------------------------
class EpochLoader:
    """Pretraining batches of a map-style dataset from `EpochStream`, epoch after epoch, resumable mid-epoch.

    Iterating yields this rank's micro-batches of the current epoch; the next `iter()` starts the next epoch. The
    dataset is indexed with `(epoch, index)` keys when `pass_epoch=True` so a sequence's masking is derived from
    (seed, epoch, index): the same batches come out whatever `num_workers` is, and a restored loader continues
    exactly. `state_dict()` counts the batches this rank has consumed in the current epoch.
    """

    def __init__(self, dataset: Any, indices: Sequence[int], batch_size: int, collate_fn: Callable,
                 seed: int = 42, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pass_epoch: bool = True) -> None:
        self.dataset = dataset
        self.stream = EpochStream(indices, batch_size, seed, rank, world_size)
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.seed = seed
        self.world_size = world_size
        self.num_workers = num_workers
        self.pass_epoch = pass_epoch
        self.epoch = 0
        self.offset = 0

    def __len__(self) -> int:
        """This rank's micro-batches in the current epoch."""
        return len(self.stream.rank_batches(self.epoch))

    def order(self, epoch: int) -> List[Tuple[int, int]]:
        """This rank's `(epoch, index)` sequences of `epoch`'s micro-batches, in order."""
        return [key for k in self.stream.rank_batches(epoch) for key in self.stream.batch(k)]

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        from torch.utils.data import DataLoader

        while self.offset >= len(self):  # done here, or an epoch with no micro-batch starting on this rank
            self.epoch, self.offset = self.epoch + 1, 0
        epoch = self.epoch
        keys = self.order(epoch)[self.offset * self.batch_size :]
        if not self.pass_epoch:
            keys = [index for _, index in keys]
        # a generator of its own: creating the iterator must not draw from the global RNG (dropout's), or a
        # resumed run, which creates it at a different moment, would drift from an uninterrupted one
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, -2))
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=keys, collate_fn=self.collate_fn,
                            num_workers=self.num_workers, generator=generator)
        for batch in loader:
            self.offset += 1
            yield batch
        self.epoch, self.offset = epoch + 1, 0

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.offset, "seed": self.seed, "batch_size": self.batch_size,
                "num_examples": len(self.stream.indices), "world_size": self.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = (state.get("num_examples"), state.get("world_size"), state.get("batch_size"))
        now = (len(self.stream.indices), self.world_size, self.batch_size)
        if saved != now or "batches" not in state:
            raise UsageError(f"cannot resume the data position: the checkpoint saw {saved[0]} sequences on {saved[1]}"
                             f" rank(s) in batches of {saved[2]}, now there are {now[0]} on {now[1]} in batches of "
                             f"{now[2]}; resume with the same data, devices and micro-batch size")
        self.epoch, self.offset = int(state["epoch"]), int(state["batches"])


class EvalLoader:
    """An evaluation split in fixed batches, dealt to the ranks: batch b goes to rank b % W, so every batch is
    counted once and the figure is the same at any world size. Every rank yields the same number of batches,
    ceil(B / W), its own first and then, where it has fewer, repeats of others': a model sharded across the ranks
    (FSDP) needs every rank in every forward. To cover the split's first `limit` batches every rank runs `steps(limit)`,
    of which the first `counted(limit)` are its own."""

    def __init__(self, dataset: Any, batches: Sequence[Sequence[Any]], collate_fn: Callable, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, seed: int = 42) -> None:
        self.dataset, self.collate_fn, self.num_workers, self.seed = dataset, collate_fn, num_workers, seed
        self.global_batches = [list(b) for b in batches]
        self.rank, self.world_size = rank, world_size

    @property
    def num_batches(self) -> int:
        return len(self.global_batches)

    def __len__(self) -> int:
        return -(-self.num_batches // self.world_size)

    def counted(self, limit: Optional[int] = None) -> int:
        return len(range(self.rank, min(self.num_batches, limit or self.num_batches), self.world_size))

    def steps(self, limit: Optional[int] = None) -> int:
        """Batches every rank runs to cover the split's first `limit`."""
        return -(-min(self.num_batches, limit or self.num_batches) // self.world_size)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        from torch.utils.data import DataLoader

        n = self.num_batches
        mine = [self.global_batches[(self.rank + j * self.world_size) % n] for j in range(len(self))]
        # its own generator, so evaluating never draws from the global RNG (see EpochLoader)
        return iter(DataLoader(self.dataset, batch_sampler=mine, collate_fn=self.collate_fn,
                               num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed)))

"""What the finetuning tasks share: finding the starting weights (`find_weights`), fitting `--max_length` to the
model, the learning-rate schedule and the optimizer step; and for the token-level tasks (`ner.py`, `qa.py`) the
run's setup from `FinetuneArgs`, the epoch loop that evaluates on the test split after every epoch and keeps the best
epoch's weights, and the HF export:

    check_output(args)                  the output folder may be written (before the data is read)
    run = prepare(args, data, texts)    the weights found and checked against the encoder, the settings fixed
    launch(run, task_main)              Fabric -> task_main(fabric, run), which calls
        start(fabric, run, make_model)  -> model, optimizer, scheduler (folder marked, data tokenized)
        fit_epochs(...)                 -> the best epoch {"epoch", "metrics", "model", "history"}
        save(run, best, report)         the HF folder and metrics.json
"""

import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from litgpt.args import FinetuneArgs
from litgpt.checkpoint import check_state_dict, find_checkpoint
from litgpt.config import Config, name_to_config
from litgpt.export import check_output_dir, prepare_output_dir, save_hf_dir
from litgpt.model_roberta import RobertaModel, headed_names
from litgpt.run import default_precision, make_fabric, plain, unwrap
from litgpt.utils import UsageError, atomic_write_text, make_adamw


# ---- what every finetuning task shares -------------------------------------------------------------------------
def find_weights(model_name: str, from_scratch: bool, texts: List[str], texts_from: Path
                 ) -> Tuple[Config, Optional[Dict[str, torch.Tensor]], Any, str]:
    """Any finetuning task's starting point: (config, the checkpoint's state dict in headed names, or None for
    random init with a tokenizer trained on `texts`, the tokenizer, where the weights came from)."""
    known = ", ".join(sorted(name_to_config))
    if from_scratch:
        from litgpt.train_tokenizer import train_tokenizer

        if model_name not in name_to_config:
            raise UsageError(f"--from_scratch: --model_name {model_name!r} is not a registry config; known: {known}")
        config = Config.from_name(model_name)
        tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size,
                                    kind="wordpiece" if config.model_type == "bert" else "bpe")
        config = replace(config, pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id,
                         eos_token_id=tokenizer.eos_id, mask_token_id=tokenizer.mask_id)
        source = (f"random init from the {model_name} config (--from_scratch), tokenizer trained on "
                  f"{texts_from} ({tokenizer.vocab_size} tokens)")
        return config, None, tokenizer, source

    loaded = find_checkpoint(model_name, "--model_name", hint="; or add --from_scratch with a registry config such"
                                                              " as roberta-tiny")
    if loaded is None:
        if model_name in name_to_config:
            raise UsageError(f"--model_name {model_name}: a registry config without published weights; add "
                             "--from_scratch to train it from random init, or pass a checkpoint dir")
        raise UsageError(f"--model_name {model_name}: not a folder, a registry name ({known}) or a HuggingFace "
                         "repo id")
    return loaded.config, headed_names(loaded.state_dict), loaded.load_tokenizer(), loaded.source


def fit_max_length(max_length: int, config: Config) -> int:
    if max_length <= config.block_size:
        return max_length
    if max_length == FinetuneArgs.max_length:  # the default, not a request: fit it to small models (noted in main)
        return config.block_size
    raise UsageError(f"--max_length {max_length}: the model reads at most {config.block_size} tokens")


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup over `warmup_ratio` of the steps, then linear decay to 0 at the last step."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(fabric, model, optimizer, scheduler, loss: torch.Tensor, max_grad_norm: Optional[float]) -> None:
    """Backward, clipping by global norm (when `max_grad_norm`), the update, and the schedule's next step."""
    fabric.backward(loss)
    if max_grad_norm:
        fabric.clip_gradients(model, optimizer, max_norm=max_grad_norm, error_if_nonfinite=False)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


# ---- the token-level tasks' run ------------------------------------------------------------------------------
@dataclass
class Run:
    """One finetuning run of a token-level task, as `setup` prepared it."""

    args: FinetuneArgs
    data: Any
    config: Config
    tokenizer: Any
    weights: Optional[Dict[str, torch.Tensor]]  # the encoder's, or None for random init
    source: str
    max_length: int


def prepare(args: FinetuneArgs, data: Any, texts: List[str], texts_from: Path, num_labels: int = 0,
            id2label: Optional[Dict[int, str]] = None) -> Run:
    """Finds the weights (the encoder of any checkpoint, or random init with a tokenizer trained on `texts`) and
    fixes the run's settings; the output folder was checked before the data was read."""
    config, state, tokenizer, source = find_weights(args.model_name, args.from_scratch, texts, texts_from)
    weights = None
    if state is not None:  # the encoder; names and shapes are checked now, so a mismatch is one clear error
        weights = {k: v for k, v in state.items() if k.startswith("roberta.") and not k.startswith("roberta.pooler.")}
        source = f"{source}: encoder, new {args.task} head"
        with torch.device("meta"):
            encoder = RobertaModel(config, add_pooler=False)
        check_state_dict(encoder, {k[len("roberta."):]: v for k, v in weights.items()}, source)
    config = replace(config, num_labels=num_labels, id2label=id2label or {}, problem_type=None)
    args = replace(args, eval_batch_size=args.eval_batch_size or 2 * args.batch_size,
                   max_grad_norm=args.max_grad_norm or None, precision=args.precision or default_precision())
    return Run(args, data, config, tokenizer, weights, source, fit_max_length(args.max_length, config))


def launch(run: Run, main: Callable) -> None:
    fabric = make_fabric(run.args.devices, run.args.accelerator, run.args.precision)
    fabric.launch(main, run)


def start(fabric, run: Run, make_model: Callable[[], torch.nn.Module]):
    """Seeds, marks the output folder, connects the data, builds the model (after seeding, so the new head is the
    same every run) and sets up model, optimizer and schedule."""
    args = run.args
    fabric.seed_everything(args.seed, verbose=False)
    if fabric.global_rank == 0:
        prepare_output_dir(Path(args.output_dir), plain(asdict(args)), run.tokenizer, run.config, False)
    fabric.barrier()
    fabric.print(f"Weights: {run.source}")
    run.data.connect(run.tokenizer, batch_size=args.batch_size, max_seq_length=run.max_length, seed=args.seed,
                     rank=fabric.global_rank, world_size=fabric.world_size, eval_batch_size=args.eval_batch_size)
    run.data.setup()
    model = make_model()
    if run.weights is not None:  # checked in `prepare`
        model.roberta.load_state_dict({k[len("roberta."):]: v for k, v in run.weights.items()})
    optimizer = make_adamw(model, args.learning_rate, args.weight_decay, fabric.device)
    scheduler = make_scheduler(optimizer, len(run.data.train_dataloader()) * args.num_epochs, args.warmup_ratio)
    model, optimizer = fabric.setup(model, optimizer)
    return model, optimizer, scheduler


def fit_epochs(fabric, run: Run, model, optimizer, scheduler, loss_fn: Callable, evaluate: Callable,
               selected_by: str) -> Dict[str, Any]:
    """Trains `num_epochs` epochs; after each, `evaluate(model)` scores the test split and the epoch with the best
    `selected_by` (then the lowest loss) is kept: {"epoch", "metrics", "model" (CPU weights), "history"}."""
    from tqdm.auto import tqdm

    args, best, history = run.args, None, []
    loader = run.data.train_dataloader()
    for epoch in range(args.num_epochs):
        t0 = time.perf_counter()
        model.train()
        run.data.set_epoch(epoch)
        loss_sum = torch.zeros((), device=fabric.device, dtype=torch.float64)
        seen = 0
        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{args.num_epochs}", unit="step", leave=False,
                   disable=None if fabric.global_rank == 0 else True, file=sys.stderr)
        for batch in loader:
            batch = {k: v.to(fabric.device, non_blocking=True) for k, v in batch.items()}
            loss = loss_fn(model, batch)
            optimizer_step(fabric, model, optimizer, scheduler, loss, args.max_grad_norm)
            loss_sum += loss.detach().double()
            seen += 1
            bar.update(1)
        bar.close()
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=fabric.device, dtype=torch.float64)])
        if fabric.world_size > 1:
            totals = fabric.all_reduce(totals, reduce_op="sum")
        train_loss = (totals[0] / totals[1].clamp(min=1)).item()
        model.eval()
        with torch.no_grad():
            metrics = evaluate(model)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "loss": metrics["loss"],
                        selected_by: metrics[selected_by]})
        improved = best is None or (metrics[selected_by], -metrics["loss"]) > (best["metrics"][selected_by],
                                                                               -best["metrics"]["loss"])
        if improved:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
            best = {"epoch": epoch + 1, "metrics": metrics, "model": weights}
        fabric.print(f"epoch {epoch + 1}/{args.num_epochs} | train loss {train_loss:.4f} | test loss "
                     f"{metrics['loss']:.4f} | {selected_by} {metrics[selected_by]:.4f} | "
                     f"{time.perf_counter() - t0:.1f}s" + (" | best so far" if improved else ""))
    best["history"] = history
    return best


def save(run: Run, best: Dict[str, Any], report: Dict[str, Any]) -> None:
    """The best epoch's model in HuggingFace's names and `metrics.json`; the tokenizer is there already."""
    from litgpt.metrics import report_json

    out = Path(run.args.output_dir)
    save_hf_dir(best["model"], run.config, out, safetensors=False, pytorch_bin=True)
    atomic_write_text(out / "metrics.json", report_json(report))


def check_output(args: FinetuneArgs) -> None:
    check_output_dir(Path(args.output_dir), Path(args.data_dir), resume=False)

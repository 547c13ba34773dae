"""What every finetuning task settles before Fabric starts: the output folder may be written, the starting weights
(any checkpoint's encoder, and its head when it is one of the same shape; or random init), the run's settings, and
on `--resume` the saved training state, checked against this run.

    check_output(args)                              before the data is read
    run = prepare(args, data, head, texts, ...)     -> Run: config, tokenizer, weights, settings, resume state
"""

import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from litgpt.args import FinetuneArgs
from litgpt.checkpoint import check_state_dict, find_checkpoint
from litgpt.config import Config, name_to_config
from litgpt.export import STATE_FILE, check_output_dir
from litgpt.model_roberta import headed_names
from litgpt.run import default_precision, plain
from litgpt.utils import UsageError, safe_torch_load

# what must not change between a run and its `--resume`, or the result would not be the uninterrupted run's
RESUME_KEYS = ("task", "num_labels", "batch_size", "learning_rate", "max_length", "seed", "warmup_ratio",
               "weight_decay", "max_grad_norm", "precision", "use_agnews", "label_names", "lora_r", "lora_alpha",
               "lora_dropout", "lora_targets", "problem_type", "text_columns", "threshold", "glue", "val_fraction",
               "patience", "select_on", "doc_stride", "max_answer_length", "loss", "scale", "symmetric",
               "mini_batch_size", "score_range", "pooling")


@dataclass
class Run:
    """One finetuning run, as `prepare` settled it."""

    args: FinetuneArgs
    data: Any  # a `litgpt.data.finetuning.FinetuneDataModule`
    config: Config
    tokenizer: Any
    weights: Optional[Dict[str, torch.Tensor]]  # what the new model starts from (its names); None: random init
    source: str
    max_length: int
    resume_state: Optional[Dict[str, Any]] = None
    max_length_from: str = "the model's positions"  # why `max_length` may differ from --max_length


def check_output(args: FinetuneArgs) -> None:
    check_output_dir(Path(args.output_dir), Path(args.data_dir), args.resume)


def prepare(args: FinetuneArgs, data: Any, head: Callable[[Config], torch.nn.Module], texts: List[str],
            **config_fields: Any) -> Run:
    """Finds the weights (`--model_name`, or random init with a tokenizer trained on `texts`, the train split's)
    and checks them against `head(config)`, the task's model; `config_fields` (num_labels, id2label, problem_type)
    go into the saved config. With `--resume` all of it comes from the saved state instead."""
    args = replace(args, eval_batch_size=args.eval_batch_size or 2 * args.batch_size,
                   max_grad_norm=args.max_grad_norm or None)
    if args.patience and data.validation is None:
        raise UsageError(f"--patience {args.patience} stops on the validation score, and {args.data_dir} has no "
                         "validation split; add a validation file or --val_fraction")
    if args.resume:
        from litgpt.tokenizer import Tokenizer

        state = load_resume_state(args, data)
        args = replace(args, precision=state["args"]["precision"])
        config = Config(**state["model_config"])
        return Run(args, data, config, Tokenizer(args.output_dir), None, state["weights_source"],
                   fit_max_length(args.max_length, config), state)
    config, state, tokenizer, source = find_weights(args.model_name, args.from_scratch, texts, data.train.path)
    config = replace(config, **config_fields)
    weights = None
    if state is not None:
        weights, what = starting_weights(head, config, state, source)
        source = f"{source}: {what}"
    args = replace(args, precision=args.precision or default_precision())
    return Run(args, data, config, tokenizer, weights, source, fit_max_length(args.max_length, config))


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


def starting_weights(head: Callable[[Config], torch.nn.Module], config: Config, state: Dict[str, torch.Tensor],
                     source: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights the task's model starts from, and what they are: the encoder (checked: every weight there, each
    of the right shape) and the head too when the checkpoint has this head at the same shapes, as `from_pretrained`
    keeps it. A BERT pooler the checkpoint lacks (a masked LM's) starts fresh, as in HF's classifier."""
    with torch.device("meta"):
        model = head(config)
    expected = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("roberta.") and k in expected}
    fresh = [k for k in expected if k.startswith("roberta.pooler.") and k not in state]
    check_state_dict(model.roberta, {k[len("roberta."):]: v for k, v in encoder.items()}
                     | {k[len("roberta."):]: expected[k] for k in fresh}, source)
    head_keys = [k for k in expected if not k.startswith("roberta.")]
    if not head_keys:  # a model without a head (sentence embeddings)
        return encoder, "encoder"
    name = HEAD_NAMES.get(type(model).__name__, type(model).__name__)
    if head_keys and all(k in state and state[k].shape == expected[k].shape for k in head_keys):
        return {**encoder, **{k: state[k] for k in head_keys}}, f"encoder and {name} head"
    outputs = f" ({config.num_labels} labels)" if config.num_labels else ""
    return encoder, f"encoder, new {name} head{outputs}" + (", new pooler" if fresh else "")


HEAD_NAMES = {"RobertaForSequenceClassification": "classification", "RobertaForTokenClassification": "ner",
              "RobertaForQuestionAnswering": "qa"}


DEFAULT_MAX_LENGTH = 128


def fit_max_length(max_length: Optional[int], config: Config) -> int:
    if max_length is None:  # the default, not a request: fit it to small models (noted later)
        return min(DEFAULT_MAX_LENGTH, config.block_size)
    if max_length <= config.block_size:
        return max_length
    raise UsageError(f"--max_length {max_length}: the model reads at most {config.block_size} tokens")


# ---- resuming -----------------------------------------------------------------------------------------------------
def hparams(args: FinetuneArgs) -> Dict[str, Any]:
    return plain(asdict(args))


def load_resume_state(args: FinetuneArgs, data: Any) -> Dict[str, Any]:
    """`output_dir/train_state.pt`, checked: the same flags that decide the result, the same data, epochs left."""
    path = Path(args.output_dir) / STATE_FILE
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "model" not in state or "args" not in state:
        raise UsageError(f"{path}: not a finetuning training state")
    saved, now = state["args"], hparams(args)
    diffs = [f"--{k} {saved.get(k)!r} (now {now[k]!r})" for k in RESUME_KEYS
             if saved.get(k) != now[k] and not (k == "precision" and now[k] is None)]
    if diffs:
        raise UsageError(f"--resume: the saved run used {', '.join(diffs)}; resume with the same flags")
    if state["data_fingerprint"] != data.fingerprint:
        raise UsageError(f"--resume: the data in {args.data_dir} differs from the data of the saved run")
    if state.get("stopped"):
        raise UsageError(f"--resume: the saved run stopped early after epoch {state['epoch']} (--patience); there is "
                         "nothing to continue")
    if state["epoch"] >= args.num_epochs:
        raise UsageError(f"--resume: the saved run already finished {state['epoch']} epoch(s); pass a larger "
                         "--num_epochs to train further")
    if saved.get("num_epochs") != args.num_epochs:
        print(f"note: --num_epochs {args.num_epochs} differs from the saved run's {saved.get('num_epochs')}: the "
              "learning-rate schedule is re-planned, so this is not the same as one uninterrupted run", file=sys.stderr)
    return state


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup over `warmup_ratio` of the steps, then linear decay to 0 at the last step."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

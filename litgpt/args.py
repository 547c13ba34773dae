"""Training, evaluation and finetuning arguments. The `Args:` sections of the docstrings are the `--help` text."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional, Union

# RoBERTa's position table: no released RoBERTa reads more than this many tokens
MAX_POSITIONS = 512
# --dist_timeout's default (PyTorch's): long enough for rank 0 to write a checkpoint, or tokenize a corpus of some GB,
# while the other ranks wait; a lost node then costs half an hour, not forever
DIST_TIMEOUT = 1800.0


@dataclass
class TrainArgs:
    """Training hyperparameters.

    Args:
        global_batch_size: Sequences per optimizer step, summed over devices
            (= micro_batch_size x devices x accumulation)
        micro_batch_size: Sequences per forward/backward pass on one device
        max_tokens: Stop after this many real (non-pad) training tokens
        max_steps: Stop after this many optimizer steps
        max_seq_length: Longest sequence fed to the model; defaults to the model's block size
        learning_rate: Peak learning rate
        lr_warmup_steps: Optimizer steps of linear warmup from 0 to the peak learning rate
        lr_schedule: Decay after warmup: linear to min_lr (RoBERTa), cosine, or constant
        min_lr: Learning rate at the end of the decay
        weight_decay: AdamW weight decay; never applied to biases and LayerNorm weights
        beta1: AdamW beta1
        beta2: AdamW beta2 (RoBERTa uses 0.98)
        adam_eps: AdamW epsilon (RoBERTa uses 1e-6)
        max_norm: Gradient clipping by global norm; null disables it
        save_interval: Save `iter-{step}.pt` every this many optimizer steps (and at the end)
        keep_last: Keep only this many newest `iter-*.pt` (older ones are deleted after a newer one is safely
            written); null keeps all
        log_interval: Print and log progress every this many optimizer steps
        objective: mlm: masked language modelling; clm: left-to-right language modelling with the causal mode
        mask_prob: Fraction of ordinary tokens selected for the MLM loss
        mask_replace_prob: Of the selected tokens, the fraction replaced by <mask>
        random_replace_prob: Of the selected tokens, the fraction replaced by a random token (the rest stay unchanged)
    """

    global_batch_size: int = 32
    micro_batch_size: int = 4
    max_tokens: Optional[int] = None
    max_steps: Optional[int] = None
    max_seq_length: Optional[int] = None
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 2000
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"
    min_lr: float = 0.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-6
    max_norm: Optional[float] = 1.0
    save_interval: Optional[int] = 1000
    keep_last: Optional[int] = None
    log_interval: int = 1
    objective: Literal["mlm", "clm"] = "mlm"
    mask_prob: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    def validate(self) -> None:
        from litgpt.data.mlm import check_mask_probs
        from litgpt.utils import UsageError

        for name in ("global_batch_size", "micro_batch_size"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--train.{name} {getattr(self, name)}: must be a positive integer")
        if self.global_batch_size % self.micro_batch_size:
            raise UsageError(f"--train.micro_batch_size {self.micro_batch_size} does not divide "
                             f"--train.global_batch_size {self.global_batch_size}")
        if self.max_tokens is None and self.max_steps is None:
            raise UsageError("give --train.max_tokens and/or --train.max_steps, or the run never ends")
        if self.max_tokens is not None and self.max_tokens < 2 * self.global_batch_size:
            raise UsageError(f"--train.max_tokens {self.max_tokens}: smaller than one optimizer step"
                             f" ({self.global_batch_size} sequences of at least 2 tokens)")
        if self.max_steps is not None and self.max_steps <= 0:
            raise UsageError(f"--train.max_steps {self.max_steps}: must be positive")
        check_mask_probs(self.mask_prob, self.mask_replace_prob, self.random_replace_prob)
        if self.learning_rate <= 0:
            raise UsageError(f"--train.learning_rate {self.learning_rate}: must be positive")
        if self.save_interval is not None and self.save_interval <= 0:
            raise UsageError(f"--train.save_interval {self.save_interval}: must be positive")
        if self.keep_last is not None and self.keep_last <= 0:
            raise UsageError(f"--train.keep_last {self.keep_last}: must be positive (or null to keep every checkpoint)")


@dataclass
class EvalArgs:
    """Validation settings.

    Args:
        interval: Validate every this many optimizer steps (and at the end)
        max_iters: At most this many validation batches per evaluation
        initial_validation: Validate before the first step, so the log shows where the loss started
        final_validation: Validate after the last step
    """

    interval: int = 1000
    max_iters: int = 100
    initial_validation: bool = True
    final_validation: bool = True

    def validate(self) -> None:
        from litgpt.utils import UsageError

        if self.interval <= 0 or self.max_iters <= 0:
            raise UsageError("--eval.interval and --eval.max_iters must be positive")


@dataclass
class FinetuneArgs:
    """Finetune an encoder (RoBERTa, BERT) for sequence classification or regression (single texts or sentence
    pairs), token classification (NER) or extractive question answering. The best epoch is chosen on a validation
    split (a validation/dev file, or --val_fraction of train); the test split is scored once, by the chosen model.

    Args:
        task: classification (labelled texts or pairs), ner (tagged words: CoNLL files or {"tokens", "tags"} JSONL
            as train/test in data_dir), qa (SQuAD v1.1/v2.0 JSON as train.json/test.json in data_dir) or embed
            (sentence embeddings: anchor/positive pairs or scored pairs in train.*, STS and BEIR retrieval
            evaluation; the output is a sentence-transformers folder).
        data_dir: Folder with the train and test splits: train.json/test.json (a list of {"text", "label"}),
            .jsonl, or .csv/.tsv with `text` and `label` columns (required), and optionally validation (or dev) in
            the same format, which chooses the best epoch. Labels are ids or class names. With --glue: GLUE's
            folder (holding CoLA/, SST-2/, ...) or one task's folder.
        output_dir: Where the finetuned model goes: config.json, pytorch_model.bin, tokenizer files, classifier.pt,
            metrics.json (and train_state.pt for --resume). Must be new, empty or a previous finetuning output.
        model_name: Weights to start from: a litgpt checkpoint dir, a pretraining out_dir (its best.pt), a
            HuggingFace RoBERTa or BERT dir, or a name such as roberta-base (from checkpoints/ when `litgpt download`
            put it there, else from the HuggingFace Hub). With --from_scratch: a registry config name.
        num_labels: Number of classes; 1 means regression (one score per example).
        batch_size: Training batch size (per device).
        learning_rate: Peak learning rate (AdamW).
        num_epochs: Training epochs.
        max_length: Longest input in tokens; longer texts are truncated (keeping </s>). At most 512. Default: 128
            (or the model's length, if shorter); embed: the checkpoint's sentence_bert_config.json max_seq_length.
        use_agnews: The data is AG News (4 classes): the original headerless train.csv/test.csv (class index 1-4,
            title, description) or JSON/JSONL with labels 0-3, in data_dir; without those files it is fetched once
            from the HuggingFace Hub (fancyzhx/ag_news) into huggingface_hub's cache.
        seed: Random seed for the new head, shuffling and dropout.
        precision: 32-true, bf16-mixed, 16-mixed or bf16-true; defaults to bf16-mixed on GPUs that support it,
            else 32-true.
        devices: Devices (processes) per node to train on (an int, or "auto"); DDP on several.
        num_nodes: Number of nodes; several are started by torchrun, srun (SLURM) or `fabric run`, and their world
            must be --num_nodes x --devices. Each training example is read once per epoch across all ranks, and the
            evaluation counts each example once.
        dist_timeout: Seconds a rank waits in a collective for a peer before it stops with an error naming it.
        accelerator: cpu, cuda, mps or auto.
        warmup_ratio: Fraction of the training steps with a linear warmup; then the rate decays linearly to 0.
        weight_decay: AdamW weight decay; never applied to biases and LayerNorm weights.
        eval_batch_size: Evaluation batch size; defaults to twice the training batch size.
        num_workers: Data-loading worker processes.
        from_scratch: Random init from the registry config --model_name (e.g. roberta-tiny) and a tokenizer
            trained on the training texts, instead of pretrained weights.
        resume: Continue the run in output_dir from its train_state.pt (saved after every epoch); with the same
            flags, the result equals an uninterrupted run. A larger --num_epochs trains further. `auto` continues an
            unfinished run when output_dir holds one, else starts a new one (for a group torchrun or SLURM restarts).
        max_grad_norm: Gradient clipping by global norm; 0 or null disables it.
        label_names: Class names in id order, e.g. `--label_names '[negative, positive]'`; they map string labels
            in the data to ids and name the classes in config.json and metrics.json. Defaults to the names in
            `data_dir/labels.txt` (one per line, in id order) when there is one.
        lora_r: LoRA rank; 0 (the default) finetunes every weight. With a rank, only the low-rank adapters on
            --lora_targets and the task's head train (any task), and output_dir gets `lora.pt` (those tensors
            alone) and `adapter_config.json`, which `litgpt classify` / `ner` / `qa` and `litgpt.api` load on top of
            --model_name.
        lora_alpha: LoRA scaling: the update is (lora_alpha / lora_r) B A x.
        lora_dropout: Dropout on the adapters' input.
        lora_targets: Comma-separated layers of every block that get an adapter: qkv (attention in), proj
            (attention out), fc and mlp_proj (the feed-forward layers).
        merge: With LoRA, also write the model with the adapters folded into its weights: config.json and
            pytorch_model.bin, a plain HuggingFace classifier like full finetuning writes.
        problem_type: single_label (one class per example), regression (a float label; MSE loss; Pearson and
            Spearman) or multi_label (a list of classes per example; BCE loss; micro/macro F1). Default:
            regression with --num_labels 1, else single_label.
        text_columns: The column(s) holding the text, comma-separated; two name a sentence pair, e.g.
            `premise,hypothesis`. Default: `text` (or `sentence`), and a pair when the data has `text`/`text_b`,
            `sentence1`/`sentence2`, `question`/`sentence`, `premise`/`hypothesis` or `question1`/`question2`.
        threshold: Multi-label decision threshold on each label's sigmoid.
        glue: A GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) read from GLUE's TSV layout in
            --data_dir, or `all` for every task folder there; the task sets the labels and the metrics, each task
            writes output_dir/TASK, and a results table is printed (and written to output_dir/glue_results.json).
        seeds: With --glue, run each task with this many seeds (--seed, --seed + 1, ...) and report the median and
            the spread, as the RoBERTa paper reports GLUE dev results (median of 5).
        doc_stride: QA: tokens shared by consecutive windows of a context longer than --max_length; default: a
            quarter of --max_length (HF's run_qa.py: 128 of 384).
        max_answer_length: QA: the longest answer predicted, in tokens.
        val_fraction: Without a validation (or dev) file, hold out this fraction of train, in (0, 0.5], as the
            validation split: drawn with --seed, stratified by label for single-label classification, whole
            documents (NER, by -DOCSTART-) or articles (QA). Without either, nothing is chosen: the last epoch is
            the model. --glue holds out 0.1 unless given.
        patience: Stop after this many epochs without a better validation score (needs a validation split).
        select_on: With --glue: `validation` (default) chooses on the held-out share of train and reports the dev
            split once; `dev` chooses on the dev split itself, as GLUE papers do (their dev figures are therefore
            optimistic), and the table says so.
        compile: Compile the model (torch.compile, dynamic shapes) for training and evaluation: worth it on a GPU,
            where the packed path of every head runs as one graph; on a CPU it rarely pays for its compile time.
        loss: embed: mnrl (in-batch negatives; the default for pairs), cached_mnrl (the same at any batch size in
            the memory of --mini_batch_size) or cosent (scored pairs; their default).
        scale: embed: cosine similarities are multiplied by this (1 / temperature).
        symmetric: embed, mnrl: also rank each positive against every anchor, and average both directions.
        mini_batch_size: embed, cached_mnrl: texts embedded at once (the memory a step needs).
        score_range: embed: the range every score lies in, MIN,MAX (e.g. 0,5); a score outside it is an error.
        pooling: embed: mean, cls or max. Default: the checkpoint's sentence-transformers recipe, else mean.
    """

    task: str = "classification"
    data_dir: Optional[Path] = None
    output_dir: Path = Path("out/roberta_finetuned")
    model_name: str = "roberta-base"
    num_labels: int = 2
    batch_size: int = 16
    learning_rate: float = 2e-5
    num_epochs: int = 3
    max_length: Optional[int] = None
    use_agnews: bool = False
    seed: int = 42
    precision: Optional[str] = None
    devices: Union[int, str] = 1
    num_nodes: int = 1
    dist_timeout: float = DIST_TIMEOUT
    accelerator: str = "auto"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    from_scratch: bool = False
    resume: Union[bool, Literal["auto"]] = False
    max_grad_norm: Optional[float] = 1.0
    label_names: Optional[List[str]] = None
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: str = "qkv,proj,fc"
    merge: bool = False
    problem_type: Optional[str] = None
    text_columns: Optional[str] = None
    threshold: float = 0.5
    glue: Optional[str] = None
    seeds: int = 1
    doc_stride: Optional[int] = None
    max_answer_length: int = 30
    val_fraction: Optional[float] = None
    patience: Optional[int] = None
    select_on: Optional[str] = None
    compile: bool = False
    loss: Optional[str] = None
    scale: float = 20.0
    symmetric: bool = False
    mini_batch_size: int = 32
    score_range: Optional[str] = None
    pooling: Optional[str] = None


def check_finetune_args(args: FinetuneArgs) -> None:
    """Each flag's own range; what depends on the data or the model is checked where that is read. (A function, not
    a method: the CLI would make a method of `FinetuneArgs` a subcommand.)"""
    from litgpt.run import check_devices, check_precision
    from litgpt.utils import UsageError

    if args.task not in ("classification", "ner", "qa", "embed"):
        raise UsageError(f"--task {args.task!r}: expected classification, ner, qa or embed")
    embed_flags = {"--loss": args.loss is not None, "--scale": args.scale != FinetuneArgs.scale,
                   "--symmetric": args.symmetric,
                   "--mini_batch_size": args.mini_batch_size != FinetuneArgs.mini_batch_size,
                   "--score_range": args.score_range is not None, "--pooling": args.pooling is not None}
    given = [flag for flag, on in embed_flags.items() if on]
    if given and args.task != "embed":
        raise UsageError(f"{given[0]} is for --task embed; it does not go with --task {args.task}")
    if args.loss is not None and args.loss not in ("mnrl", "cached_mnrl", "cosent"):
        raise UsageError(f"--loss {args.loss!r}: expected mnrl, cached_mnrl or cosent")
    if args.pooling is not None and args.pooling not in ("mean", "cls", "max"):
        raise UsageError(f"--pooling {args.pooling!r}: expected mean, cls or max")
    if not args.scale > 0 or isinstance(args.mini_batch_size, bool) or not isinstance(args.mini_batch_size, int) \
            or args.mini_batch_size < 1:
        raise UsageError(f"--scale {args.scale} / --mini_batch_size {args.mini_batch_size}: expected a positive scale "
                         "and a positive number of texts")
    if args.task != "classification":
        flags = {"--glue": args.glue is not None, "--use_agnews": args.use_agnews,
                 "--problem_type": args.problem_type is not None,
                 "--text_columns": args.text_columns is not None, "--label_names": args.label_names is not None}
        given = [flag for flag, on in flags.items() if on]
        if given:
            raise UsageError(f"{given[0]} is for --task classification; it does not go with --task {args.task}")
    if (args.doc_stride is not None and args.doc_stride < 1) or args.max_answer_length < 1:
        raise UsageError(f"--doc_stride {args.doc_stride} / --max_answer_length {args.max_answer_length}: must be "
                         "positive")
    if args.data_dir is None:
        raise UsageError("--data_dir is required: the folder with train.json and test.json (or .jsonl/.csv/.tsv)")
    for name in ("num_labels", "batch_size", "num_epochs", "eval_batch_size"):
        value = getattr(args, name)
        if (name != "eval_batch_size" or value is not None) and (not isinstance(value, int) or value <= 0):
            raise UsageError(f"--{name} {value}: must be a positive integer")
    if args.problem_type is not None and args.problem_type not in ("single_label", "regression", "multi_label"):
        raise UsageError(f"--problem_type {args.problem_type!r}: expected single_label, regression or multi_label")
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold {args.threshold}: expected a probability in (0, 1)")
    if isinstance(args.seeds, bool) or not isinstance(args.seeds, int) or args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: must be a positive integer")
    if args.seeds > 1 and args.glue is None:
        raise UsageError("--seeds repeats GLUE tasks; it needs --glue")
    from litgpt.data.finetuning import check_val_fraction

    check_val_fraction(args.val_fraction)
    if args.patience is not None and (isinstance(args.patience, bool) or not isinstance(args.patience, int)
                                      or args.patience < 1):
        raise UsageError(f"--patience {args.patience}: must be a positive number of epochs")
    if args.select_on is not None and args.select_on not in ("validation", "dev"):
        raise UsageError(f"--select_on {args.select_on!r}: expected validation or dev")
    if args.select_on is not None and args.glue is None:
        raise UsageError("--select_on picks GLUE's selection split; it needs --glue (elsewhere a validation file "
                         "or --val_fraction chooses)")
    if args.select_on == "dev" and args.val_fraction is not None:
        raise UsageError("--select_on dev chooses on GLUE's dev split; it does not go with --val_fraction")
    if args.glue is not None and (args.resume or args.use_agnews):
        raise UsageError(f"--glue: runs each task from the start on GLUE's files; it does not go with "
                         f"{'--resume' if args.resume else '--use_agnews'}")
    if not args.learning_rate > 0:
        raise UsageError(f"--learning_rate {args.learning_rate}: must be positive")
    if not 0 <= args.warmup_ratio < 1:
        raise UsageError(f"--warmup_ratio {args.warmup_ratio}: expected a fraction in [0, 1)")
    if args.weight_decay < 0:
        raise UsageError(f"--weight_decay {args.weight_decay}: must be >= 0")
    if args.max_grad_norm is not None and args.max_grad_norm < 0:
        raise UsageError(f"--max_grad_norm {args.max_grad_norm}: must be positive (0 disables clipping)")
    if args.num_workers < 0:
        raise UsageError(f"--num_workers {args.num_workers}: must be >= 0")
    if args.max_length is not None and args.max_length < 3:
        raise UsageError(f"--max_length {args.max_length}: must be at least 3 (<s>, a token, </s>)")
    if args.max_length is not None and args.max_length > MAX_POSITIONS:
        raise UsageError(f"--max_length {args.max_length}: RoBERTa reads at most {MAX_POSITIONS} tokens")
    if isinstance(args.lora_r, bool) or not isinstance(args.lora_r, int) or args.lora_r < 0:
        raise UsageError(f"--lora_r {args.lora_r}: must be 0 (no LoRA) or a positive rank")
    if args.lora_r:
        from litgpt.model_roberta import LORA_TARGETS

        unknown = [t for t in args.lora_targets.split(",") if t.strip() not in LORA_TARGETS]
        if unknown or not args.lora_targets.strip():
            raise UsageError(f"--lora_targets {args.lora_targets!r}: expected a comma-separated list of "
                             f"{', '.join(LORA_TARGETS)}")
        if not args.lora_alpha > 0 or not 0 <= args.lora_dropout < 1:
            raise UsageError(f"--lora_alpha {args.lora_alpha} / --lora_dropout {args.lora_dropout}: expected alpha > 0"
                             " and a dropout in [0, 1)")
        if args.from_scratch:
            raise UsageError("--lora_r: LoRA adapts pretrained weights; it does not go with --from_scratch")
    elif args.merge:
        raise UsageError("--merge folds LoRA adapters into the weights; it needs --lora_r")
    check_precision(args.precision)
    check_devices(args.devices)

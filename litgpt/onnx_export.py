"""`litgpt export`: any checkpoint -> a folder that ONNX Runtime runs on a CPU, in fp32 or with int8 weights.

    litgpt export CHECKPOINT --format onnx --quantize int8 --output_dir DIR

DIR holds `onnx/model.onnx` beside the HuggingFace `config.json` and the tokenizer files (plus the
sentence-transformers recipe for an embedding model, and a QA model's `metrics.json`). Every inference command,
`litgpt serve` and `litgpt.api.<Class>.load(DIR)` run it through ONNX Runtime (`litgpt/api/onnx_runtime.py`);
`SentenceTransformer(DIR, backend="onnx")` and optimum's `ORTModelFor*` classes load it as they load their own exports.

How the graph is made:
1. The weights go into `transformers`' class for the head (through `export.save_hf_dir`, the converter every
   HuggingFace export uses), and that model is traced with dynamic batch and sequence axes. It computes what ours
   computes (`tests/test_onnx.py` checks every head to 1e-4), in the layout ONNX Runtime's transformer optimizer
   knows: our fused QKV projection and SDPA trace into a graph its attention fusion does not match, which ran
   10-20% slower on this project's CPU.
2. ONNX Runtime's transformer optimizer fuses attention, the embedding LayerNorm and GELU with its bias. Not
   LayerNorm with its residual add: ONNX Runtime's SkipLayerNormalization kernel took 19-22% of an int8 MiniLM run
   on this project's CPU (AVX-512), where the Add and LayerNormalization it replaces take 6%; the runtime keeps it
   unfused (`SKIP_AT_LOAD`). With int8, GELU is fused in its tanh approximation (FastGelu): 9% faster, inside the
   error int8 already has (`FUSIONS`).
3. `--quantize int8`: ONNX Runtime's dynamic quantizer gives the weight matrices (attention's fused projection, the
   feed-forward layers, the embedding table of the fused embedding LayerNorm) int8 values with one scale per output
   channel; activations are quantized per batch at run time (`onnxruntime.quantization`). One scale per tensor ran
   as fast but moved all-MiniLM-L6-v2's embeddings to a mean cosine of 0.964 from fp32 (per channel: 0.993).
"""

import shutil
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from litgpt.utils import UsageError, atomic_dir, check_writable_dir

FORMATS = ("onnx",)
QUANTIZE = ("none", "int8")
ONNX_FILE = Path("onnx") / "model.onnx"  # where sentence-transformers and optimum look for it
OPSET = 17
# the graph's outputs per head, in HuggingFace's names (what optimum's ORTModelFor* classes read)
OUTPUTS = {"base": ("last_hidden_state",), "classification": ("logits",), "mlm": ("logits",),
           "token_classification": ("logits",), "qa": ("start_logits", "end_logits")}
QUANTIZE_KEY = "litgpt.quantize"  # in the model file's metadata, for the runtime to say what runs
# ONNX Runtime's FusionOptions("bert") changed per precision, by measurement (see the module's docstring)
FUSIONS = {"none": {"enable_skip_layer_norm": False, "enable_bias_skip_layer_norm": False},
           "int8": {"enable_skip_layer_norm": False, "enable_bias_skip_layer_norm": False,
                    "enable_gelu_approximation": True}}
SKIP_AT_LOAD = ["SkipLayerNormFusion"]  # ONNX Runtime's own fusion at session start, which would undo the above
PER_CHANNEL = True  # see the module's docstring
DEPLOY_EXTRA = "pip install 'litgpt[deploy]'"


def main(
    checkpoint: str,
    output_dir: Optional[Path] = None,
    format: str = "onnx",
    quantize: str = "none",
    task: Optional[str] = None,
) -> None:
    """Export a checkpoint for CPU inference on ONNX Runtime (fp32, or int8 weights).

    Args:
        checkpoint: Any checkpoint: a finetuning output_dir, a pretraining out_dir or checkpoint dir, a HuggingFace or
            sentence-transformers folder.
        output_dir: The folder to write; it must not exist yet, or be empty.
        format: `onnx`.
        quantize: `none` (fp32) or `int8` (dynamic quantization: int8 weights, activations quantized per batch).
        task: The head to export: `classify`, `fill_mask`, `ner`, `qa`, or `embed` (the bare encoder of any
            checkpoint, with the sentence-transformers files). Default: the checkpoint's own head.
    """
    from litgpt.api.base import TASK_OF_HEAD, TASKS
    from litgpt.checkpoint import load_checkpoint
    from litgpt.model_roberta import model_class_for_state_dict

    if format not in FORMATS:
        raise UsageError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise UsageError(f"--quantize {quantize!r}: expected one of {', '.join(QUANTIZE)}")
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if output_dir is None:
        raise UsageError("--output_dir is required: the new folder the export goes into")
    output_dir = check_writable_dir(Path(output_dir), "--output_dir")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise UsageError(f"--output_dir {output_dir}: not empty; export into a new or empty folder (nothing is "
                         "overwritten)")
    require_deploy_extra()

    loaded = load_checkpoint(checkpoint)
    tokenizer = loaded.load_tokenizer()
    head = model_class_for_state_dict(loaded.state_dict)
    if task is not None and task != "embed" and task != TASK_OF_HEAD[head]:
        raise UsageError(f"--task {task}: {loaded.source} has no head for it (it exports {TASK_OF_HEAD[head]} or "
                         "embed)")
    if task == "embed":
        head = "base"
    state = loaded.state_dict if head != "base" else bare_encoder(loaded.state_dict)
    print(f"Exporting {loaded.source} ({TASK_OF_HEAD[head]}) to ONNX, {'int8' if quantize == 'int8' else 'fp32'}",
          file=sys.stderr)
    with atomic_dir(output_dir) as tmp:
        write_export(tmp, state, loaded.config, head, quantize, tokenizer, loaded.tokenizer_dir)
    print(f"Wrote {output_dir} ({(output_dir / ONNX_FILE).stat().st_size / 2**20:.1f} MiB model)", file=sys.stderr)


def require_deploy_extra(modules=("onnx", "onnxruntime", "transformers")) -> None:
    """One line naming the install command when the `deploy` extra is missing (export needs all three; running an
    export, ONNX Runtime alone)."""
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"ONNX export and inference need {module}: {DEPLOY_EXTRA}") from None


def bare_encoder(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A headed state dict's encoder alone (what a bare encoder's checkpoint holds)."""
    from litgpt.model_roberta import headed_names

    return {k: v for k, v in headed_names(state).items() if k.startswith("roberta.")}


def write_export(folder: Path, state: Dict[str, torch.Tensor], config, head: str, quantize: str, tokenizer,
                 source_dir: Optional[Path]) -> None:
    """Everything of an export, written into `folder`: the graph, config.json, the tokenizer, and per head the files
    its readers need."""
    import onnx

    from litgpt.api.texts import embedding_recipe, save_sentence_transformers_recipe
    from litgpt.export import save_hf_dir

    (folder / ONNX_FILE).parent.mkdir()
    raw, fused = folder / "raw.onnx", folder / "fused.onnx"
    trace_reference_model(state, config, head, folder / "reference", raw)
    fuse(raw, fused, config, quantize)
    if quantize == "int8":
        quantize_int8(fused, folder / ONNX_FILE)
    else:
        fused.replace(folder / ONNX_FILE)
    model = onnx.load(str(folder / ONNX_FILE))
    onnx.helper.set_model_props(model, {QUANTIZE_KEY: quantize})
    onnx.save(model, str(folder / ONNX_FILE))
    for name in ("raw.onnx", "fused.onnx"):
        (folder / name).unlink(missing_ok=True)

    save_hf_dir(state, config, folder, safetensors=False)  # config.json in HuggingFace's names, no weights
    tokenizer.save(folder, model_max_length=config.block_size)
    if head == "base":
        save_sentence_transformers_recipe(folder, embedding_recipe(source_dir, config.block_size), config.n_embd)
    if head == "qa" and source_dir is not None and (source_dir / "metrics.json").is_file():
        shutil.copyfile(source_dir / "metrics.json", folder / "metrics.json")  # its windows and null threshold


def graph_inputs(config) -> Tuple[str, ...]:
    """BERT reads token types (sentence A/B); RoBERTa has one type, so its graph takes none, as HF's export does."""
    return ("input_ids", "attention_mask") + (("token_type_ids",) if config.type_vocab_size > 1 else ())


def trace_reference_model(state: Dict[str, torch.Tensor], config, head: str, reference_dir: Path, path: Path) -> None:
    """Traces `transformers`' model for `head`, holding these weights, into an ONNX graph at `path`."""
    import warnings

    import transformers

    from litgpt.convert import architecture_for
    from litgpt.export import save_hf_dir

    save_hf_dir(state, config, reference_dir)
    architecture = architecture_for(state, config)
    transformers.utils.logging.disable_progress_bar()  # its bar for loading weights, in the middle of our output
    model = getattr(transformers, architecture).from_pretrained(reference_dir, attn_implementation="eager").eval()
    shutil.rmtree(reference_dir)
    inputs, outputs = graph_inputs(config), OUTPUTS[head]

    class Outputs(torch.nn.Module):
        """The model with positional inputs and a tuple of the named outputs, as the tracer wants them."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            out = self.model(**dict(zip(inputs, args)))
            return tuple(out[name] for name in outputs)

    # a batch with padding, so that nothing is traced for an unpadded batch only
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    ids = (torch.arange(16).view(2, 8) + 4).masked_fill(mask == 0, config.pad_token_id)
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
        torch.onnx.export(Outputs(), tuple(example[name] for name in inputs), str(path), dynamo=False,
                          opset_version=OPSET, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={name: axes for name in (*inputs, *outputs)}, do_constant_folding=True)


def fuse(raw: Path, out: Path, config, quantize: str) -> None:
    """ONNX Runtime's transformer optimizer: attention, embedding LayerNorm and bias-GELU fusions (`FUSIONS`)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    for name, value in FUSIONS[quantize].items():
        setattr(options, name, value)
    model = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.n_head, hidden_size=config.n_embd,
                                     optimization_options=options, opt_level=0)
    model.save_model_to_file(str(out))


def quantize_int8(fused: Path, out: Path) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights (signed, one scale per channel; the VNNI kernels' u8 x s8),
    activations quantized to uint8 per batch; only products with a weight matrix (`MatMulConstBOnly`), so attention
    scores stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL,
                     extra_options={"MatMulConstBOnly": True,
                                    # shapes of the fused contrib ops are unknown to ONNX's inference: they are fp32
                                    "DefaultTensorType": onnx.TensorProto.FLOAT})

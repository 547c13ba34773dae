"""ONNX Runtime behind `litgpt.api`: a folder written by `litgpt export` runs through the same inference classes as a
PyTorch checkpoint, with the same tokenizer, length-sorted batches and bucketed shapes, and the same answers.

`OnnxModel` answers the calls those classes make of a PyTorch model: `model(input_ids, attention_mask,
token_type_ids)` for a head's outputs, `hidden_at` for sentence pooling (an exported encoder) and `logits_at` for
fill-mask (an exported masked LM). It runs on the CPU, with as many threads as torch uses
(`torch.get_num_threads()`, which `litgpt serve` sets per model copy).
"""

from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from litgpt.config import Config
from litgpt.onnx_export import ONNX_FILE, QUANTIZE_KEY, SKIP_AT_LOAD, graph_inputs, require_deploy_extra
from litgpt.utils import UsageError


def is_export(source: Union[str, Path]) -> bool:
    """Whether `source` is a folder written by `litgpt export`."""
    return (Path(source) / ONNX_FILE).is_file()


def export_head(folder: Path) -> Tuple[str, Config]:
    """An export's head (`api.base.HEADS`' names) and config, from its HuggingFace config.json."""
    from litgpt.convert import FAMILIES, config_from_hf, read_hf_config

    hf_config = read_hf_config(folder)
    config = config_from_hf(hf_config)
    names = FAMILIES[config.model_type]["architectures"]
    architecture = (hf_config.get("architectures") or [names["model"]])[0]
    kind = next(k for k, name in names.items() if name == architecture)
    return {"model": "base", "causal": "mlm"}.get(kind, kind), config


class OnnxModel:
    """An exported graph on an ONNX Runtime CPU session, called like the PyTorch model it was exported from."""

    # `litgpt.api` rounds batch lengths up to this multiple. The graph computes every padded position, so a finer
    # step than PyTorch's 16 (where padding costs attention only) pays: on short texts 4 ran 6-12% faster than 16.
    # ONNX Runtime's memory stayed flat over 20k texts of varied lengths at every step tried (16, 8, 1).
    length_multiple = 4

    def __init__(self, folder: Path) -> None:
        require_deploy_extra(("onnxruntime",))
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1  # the graph is a chain: nothing runs beside the intra-op threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = folder / ONNX_FILE
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=SKIP_AT_LOAD)
        except Exception as ex:  # onnxruntime raises its own exception types for unreadable files
            raise UsageError(f"{path}: not a model ONNX Runtime can load ({str(ex).splitlines()[0][:200]})") from None
        self.kind, self.config = export_head(folder)
        self.quantize = self.session.get_modelmeta().custom_metadata_map.get(QUANTIZE_KEY)  # None: not ours
        self.num_labels = self.config.num_labels
        self.inputs = graph_inputs(self.config)
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def precision(self) -> str:
        return {"int8": "int8", "none": "fp32"}.get(self.quantize, "(precision unknown)")

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 token_type_ids: Optional[torch.Tensor] = None) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The head's outputs as the PyTorch model returns them: logits, or (start, end) logits for QA."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {name: np.ascontiguousarray(given[name].cpu().numpy(), dtype=np.int64) for name in self.inputs}
        out = [torch.from_numpy(x) for x in self.session.run(None, feed)]
        return out[0] if len(out) == 1 else tuple(out)

    def hidden_at(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], positions: torch.Tensor,
                  token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The last hidden states at the bool `positions`, `[M, n_embd]` in row-major order, as
        `RobertaModel.hidden_at` gives them."""
        if self.kind != "base":
            raise UsageError("this ONNX export holds a head, not the encoder's hidden states; for sentence vectors "
                             "export the checkpoint with `litgpt export ... --task embed`")
        return self(input_ids, attention_mask, token_type_ids)[positions]

    def logits_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
                  ) -> torch.Tensor:
        """The masked LM's logits at the bool `positions`, `[M, vocab]`."""
        return self(input_ids, attention_mask)[positions]

"""CUDA-only checks of the GPU training path, run by `benchmarks/gpu_check.sh` on an accelerator (skipped
elsewhere): the variable-length flash kernel against SDPA, a training step without a single host-device sync, and
bf16 logits against the fp32 CPU model."""

import pytest
import torch
from conftest import ragged_batch

import litgpt.kernels as kernels
from litgpt.config import Config
from litgpt.data.mlm import MLMCollator, MLMMasker
from litgpt.model_roberta import RobertaForMaskedLM, RobertaForSequenceClassification
from litgpt.packing import first_tokens, pack_tokens

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# bf16 keeps 8 significant bits (a relative rounding error of about 4e-3 per operation); through a few layers the
# logits stay within 2% of the fp32 values, measured as the relative L2 norm of the difference
BF16_RELATIVE = 2e-2


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


def mlm_batch(config: Config, lengths, seed: int = 0):
    """A ragged MLM batch from the pretraining collator (with its packing), as the loader workers build it."""
    ids, mask = ragged_batch(config.vocab_size, lengths, pad_id=config.pad_token_id, seed=seed)
    masker = MLMMasker(config.vocab_size - 1, config.vocab_size, [0, 1, 2])
    return MLMCollator(config.pad_token_id, masker, seed=seed)([i[m.bool()] for i, m in zip(ids, mask)])


def base_width(**overrides) -> Config:
    """roberta-base's width and heads (head size 64) at two layers."""
    return Config.from_name("roberta-base", n_layer=2, **overrides)


def test_varlen_matches_sdpa(monkeypatch):
    """On the GPU, the packed path's two attention calls agree: the variable-length kernel and SDPA on the padded
    sequences, forward (loss) and backward (gradients), in bf16-mixed."""
    torch.manual_seed(0)
    config = base_width(hidden_dropout=0.0, attention_dropout=0.0)
    model = RobertaForMaskedLM(config).cuda()
    batch = mlm_batch(config, (512, 300, 17, 128, 64, 250))
    batch = {k: v.to("cuda") for k, v in batch.items()}
    calls = []
    real_kernel = kernels.varlen_attention
    monkeypatch.setattr(kernels, "varlen_attention", lambda *a, **k: calls.append(1) or real_kernel(*a, **k))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.mlm_loss(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["packing"])[0]
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    varlen_loss, varlen_grads = loss_and_grads()
    assert calls, "the variable-length kernel did not run"
    monkeypatch.setattr(kernels, "varlen_serves", lambda *args: False)
    sdpa_loss, sdpa_grads = loss_and_grads()
    assert abs(varlen_loss.item() - sdpa_loss.item()) < BF16_RELATIVE * abs(sdpa_loss.item())
    assert relative_error(varlen_grads, sdpa_grads) < BF16_RELATIVE


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("attention_dropout", [0.0, 0.1])
def test_training_step_never_syncs(compiled, attention_dropout):
    """Forward, loss, backward and the fused AdamW step run under `set_sync_debug_mode("error")`: every size the
    step needs came with the batch. Both attention calls (the variable-length kernel without attention dropout,
    SDPA with it), eager and compiled."""
    torch.manual_seed(0)
    config = base_width(attention_dropout=attention_dropout)
    model = RobertaForMaskedLM(config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = torch.compile(model.mlm_loss, dynamic=True) if compiled else model.mlm_loss

    def step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, correct, count = loss_fn(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                           batch["packing"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    first, second = (mlm_batch(config, lengths, seed) for seed, lengths in enumerate(((96, 40, 7), (64, 80, 33, 5))))
    step({k: v.to("cuda") for k, v in first.items()})  # compiles, creates the optimizer state, loads the kernels
    batch = {k: v.to("cuda") for k, v in second.items()}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()


def test_bf16_logits_match_fp32_cpu():
    """bf16-mixed on the GPU (the variable-length kernel) against fp32 on the CPU, same weights: MLM logits at the
    labelled positions and classifier logits within `BF16_RELATIVE`."""
    torch.manual_seed(0)
    config = base_width()
    for cls, kind in ((RobertaForMaskedLM, "mlm"), (RobertaForSequenceClassification, "classify")):
        cpu = cls(config).eval()
        gpu = cls(config).cuda().eval()
        gpu.load_state_dict(cpu.state_dict())
        batch = mlm_batch(config, (200, 512, 33, 90))
        ids, mask = batch["input_ids"], batch["attention_mask"]
        packing = batch["packing"] if kind == "mlm" else pack_tokens(mask, first_tokens(ids))

        def logits(model, device):
            p = packing.to(device)
            if kind == "classify":
                return model(ids.to(device), mask.to(device), packing=p)
            return model.lm_head(model.roberta.hidden_at(ids.to(device), mask.to(device), None, packing=p),
                                 model.roberta.wte.weight)
        with torch.no_grad():
            expected = logits(cpu, "cpu")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                actual = logits(gpu, "cuda").cpu()
        assert relative_error(actual, expected) < BF16_RELATIVE, kind

"""Observing a step never changes what torch's fused fast paths compute under autocast (#28.1).

In eval mode ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` call one fused op whose inner linears CPU
autocast casts to bfloat16. A dispatch mode (the FLOP counter watching a real step) runs below autocast: unless the
counter gives the fused op its call's autocast state back, the layer computes in float32, or fails with ``expected
m1 and m2 to have the same dtype`` when its input is bfloat16. Here: outputs, weights and validation metrics are
bit-identical with and without the counter/callback, and the counts are the hand counts of the fp32 step.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

B, L, D_IN, E, F = 4, 5, 8, 16, 32  # batch, sequence length, input features, model width, feed-forward width


def _encoder_layer_flops(tokens: int, lengths: list[int]) -> int:
    """The E-wide, 2-head encoder layer (F-wide feed-forward) by hand: 2·M·N·K per matmul, bias adds not counted."""
    projections = 2 * tokens * (3 * E * E + E * E)  # q, k, v and the output projection
    attention = sum(4 * n * n * E for n in lengths)  # scores and context, over all heads
    ffn = 2 * tokens * (E * F + F * E)
    return projections + attention + ffn


def _no_global_hooks_left() -> bool:
    from torch.nn.modules import module

    return not (module._global_forward_pre_hooks or module._global_forward_hooks)


class _Net(nn.Module):
    """Linear(D_IN -> E), one encoder layer, Linear(E -> 1), mean over tokens: in autocast the layer's input is
    bfloat16 already (the output of an autocast linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(D_IN, E)
        self.enc = nn.TransformerEncoderLayer(E, 2, F, dropout=0.0, batch_first=True)
        self.head = nn.Linear(E, 1)

    def forward(self, x):
        return self.head(self.enc(self.inp(x))).mean(dim=(1, 2))


def _mse_in_float32(out, y):
    """The loss of the Lightning and the HF model: mean squared error of the output in float32."""
    return nn.functional.mse_loss(out.float(), y)


PER_SAMPLE_EVAL = 2 * L * D_IN * E + _encoder_layer_flops(L, [L]) + 2 * L * E
"""Forward of :class:`_Net` per sample: 1280 + 22080 + 160 = 23520."""
PER_SAMPLE_TRAIN = PER_SAMPLE_EVAL + 2 * L * D_IN * E + 2 * (PER_SAMPLE_EVAL - 2 * L * D_IN * E)
"""Forward, then backward: 2x forward except the first linear (no gradient into the data): 69280."""


# ------------------------------------------------------------------------------------------------ the engine
def _observed(run):
    """``run()`` inside a counter watching it, as the tracker watches a real step; (output, FLOPs, by op)."""
    from green_callbacks.core.flops import TorchFlopCounter

    engine = TorchFlopCounter()
    handle = engine.start_observing()
    try:
        out = run()
    finally:
        flops = engine.stop_observing(handle, "eval")
    return out, flops.flops, dict(flops.by_op)


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.inference_mode])
def test_fused_layers_observed_under_cpu_autocast_compute_bit_identical_outputs(grad_mode):
    torch.manual_seed(0)
    proj = nn.Linear(D_IN, E)
    layer = nn.TransformerEncoderLayer(E, 2, F, dropout=0.0, batch_first=True).eval()
    mha = nn.MultiheadAttention(E, 2, batch_first=True).eval()
    # (with a padding mask the stack fails under CPU autocast without any counter: torch's own limit)
    stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, 2, F, dropout=0.0, batch_first=True), 2,
                                  enable_nested_tensor=False).eval()
    x, h = torch.randn(B, L, D_IN), torch.randn(B, L, E)
    cases = {
        "layer, bfloat16 input": (lambda: layer(proj(x)), _encoder_layer_flops(B * L, [L] * B) + 2 * B * L * D_IN * E),
        "layer, float32 input": (lambda: layer(h), _encoder_layer_flops(B * L, [L] * B)),
        "attention": (lambda: mha(h, h, h, need_weights=False)[0], 2 * B * L * 4 * E * E + B * 4 * L * L * E),
        "stack": (lambda: stack(proj(x)), 2 * _encoder_layer_flops(B * L, [L] * B) + 2 * B * L * D_IN * E),
    }
    with grad_mode():
        for name, (run, hand_count) in cases.items():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain = run()
                observed, flops, by_op = _observed(run)
            assert plain.dtype == observed.dtype == torch.bfloat16, name
            assert torch.equal(plain, observed), name
            assert flops == hand_count, (name, by_op)
            _, fp32_flops, _ = _observed(run)  # the same step without autocast: the same count
            assert fp32_flops == hand_count, name
    assert _no_global_hooks_left()


def test_frozen_encoder_layer_in_an_observed_training_step_under_cpu_autocast():
    """A training step can take the fast path too: a frozen layer in eval mode on inputs that need no gradient."""
    from green_callbacks.core.flops import TorchFlopCounter

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, 2, F, dropout=0.0, batch_first=True).eval().requires_grad_(False)
    head = nn.Linear(E, 1)
    h = torch.randn(B, L, E)

    def step():
        head.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(layer(h))
        loss = out.float().square().mean()
        loss.backward()
        return out, head.weight.grad.clone()

    plain_out, plain_grad = step()
    engine = TorchFlopCounter()
    handle = engine.start_observing()
    try:
        observed_out, observed_grad = step()
    finally:
        flops = engine.stop_observing(handle, "train")
    assert observed_out.dtype == torch.bfloat16
    assert torch.equal(plain_out, observed_out) and torch.equal(plain_grad, observed_grad)
    # the layer's forward, the head's forward and its weight gradient (nothing flows into the frozen layer)
    assert flops.flops == _encoder_layer_flops(B * L, [L] * B) + 2 * (2 * B * L * E)
    assert _no_global_hooks_left()


def test_the_hooks_are_installed_only_while_observing_a_model_with_a_fused_path_layer():
    """Global module hooks send every module call down nn.Module's slower path: only where they are needed."""
    from torch.nn.modules import module

    from green_callbacks.core.flops import TorchFlopCounter

    engine = TorchFlopCounter()
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    for model, hooked in ((mlp, False), (_Net(), True)):
        handle = engine.start_observing(model)
        during = bool(module._global_forward_pre_hooks) and bool(module._global_forward_hooks)
        engine.stop_observing(handle, "eval")
        assert during is hooked
        assert _no_global_hooks_left()


def test_fused_layer_without_the_fast_dispatch_mode_runs_under_a_restoring_mode_below(monkeypatch):
    """A torch without ``flop_counter._FlopCounterMode``: torch's own counter mode, with one more mode below it."""
    from green_callbacks.core.flops import torch_engine

    monkeypatch.setattr(torch_engine, "_fast_mode_class", lambda: None)
    counter_class = torch_engine._counter_class.__wrapped__()
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(B, L, D_IN)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = net(x)
        with counter_class() as counter:
            observed = net(x)
    assert torch.equal(plain, observed)
    assert counter.get_total_flops() == B * PER_SAMPLE_EVAL
    assert _no_global_hooks_left()


# ------------------------------------------------------------------------------------------------ Lightning
@pytest.mark.slow
def test_lightning_bf16_mixed_encoder_layer_trains_and_validates_as_without_the_callback(tmp_path):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.core.record import read_record
    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.lightning import GreenCallback
    from tests.models import lightning_module

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, L, D_IN, generator=g), torch.randn(12, generator=g)

    def fit(callbacks):
        torch.manual_seed(0)
        module = lightning_module(_Net(), loss=_mse_in_float32, keep_val_losses=True)
        trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_epochs=2, logger=False,
                             callbacks=callbacks, default_root_dir=str(tmp_path), enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, DataLoader(TensorDataset(x[:8], y[:8]), batch_size=4),
                        DataLoader(TensorDataset(x[8:], y[8:]), batch_size=4))
        return module

    plain = fit([])
    callback = GreenCallback(carbon_intensity=100.0, sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    measured = fit([callback])  # the unfixed counter: "expected m1 and m2 to have the same dtype" at validation
    for a, b in zip(plain.parameters(), measured.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(measured.val_losses) == len(plain.val_losses) == 3  # 1 sanity + 2 epochs x 1 batch
    for a, b in zip(plain.val_losses, measured.val_losses, strict=True):
        assert torch.equal(a, b)
    assert callback.last_metrics["green/epoch_train_flops"] == 8 * PER_SAMPLE_TRAIN
    assert callback.last_metrics["green/epoch_eval_flops"] == 4 * PER_SAMPLE_EVAL
    info = read_record(callback.record_path)["flops"]
    assert info["lower_bound"] is False and info["epoch_methods"] == ["counted", "counted"]
    assert _no_global_hooks_left()


# ------------------------------------------------------------------------------------------------ transformers
def _sequences(n: int, seed: int):
    """``n`` samples ``{"x": (L, D_IN), "labels": a number}`` from ``seed``."""
    from tests.models import Samples

    g = torch.Generator().manual_seed(seed)
    return Samples(torch.randn(n, L, D_IN, generator=g), torch.randn(n, generator=g))


def test_transformers_bf16_cpu_encoder_layer_trains_and_evaluates_as_without_the_callback(tmp_path):
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainingArguments

    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.transformers import GreenCallback
    from tests.models import HFModel

    def train(callbacks):
        torch.manual_seed(0)
        model = HFModel(_Net(), loss=_mse_in_float32)
        args = TrainingArguments(str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4,
                                 per_device_eval_batch_size=4, eval_strategy="epoch", save_strategy="no",
                                 logging_strategy="epoch", report_to="none", use_cpu=True, bf16=True,
                                 disable_tqdm=True, seed=0, data_seed=0, learning_rate=0.1)
        trainer = Trainer(model=model, args=args, train_dataset=_sequences(8, 1), eval_dataset=_sequences(4, 2),
                          callbacks=callbacks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        return model, [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]

    plain, plain_losses = train([])
    callback = GreenCallback(carbon_intensity=100.0, sensors=[StepEnergySensor("cpu", 1.0, scope="node")])
    measured, measured_losses = train([callback])  # the unfixed counter: the evaluation's first batch raised
    for a, b in zip(plain.parameters(), measured.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(plain_losses) == 2 and measured_losses == plain_losses
    assert callback.last_metrics["green/epoch_train_flops"] == 8 * PER_SAMPLE_TRAIN
    assert callback.last_metrics["green/epoch_eval_flops"] == 4 * PER_SAMPLE_EVAL
    assert _no_global_hooks_left()

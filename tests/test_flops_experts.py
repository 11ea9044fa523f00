"""Grouped experts and fused recurrent layers: the same model FLOPs on the observed real step and on a meta copy.

Truth in each test is a hand count, or the same model counted through plain matmuls (transformers' "eager" experts,
autograd's own per-step LSTM backward on a meta copy).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from green_callbacks.core.flops import FlopTracker, TorchFlopCounter  # noqa: E402
from green_callbacks.core.flops.formulas import grouped_mm_flops, rnn_backward_flops  # noqa: E402


def _observed(model, batch, loss):
    """One real training step watched by the tracker (nothing re-run): its FLOPs."""
    tracker = FlopTracker(interpolate=False)
    tracker.begin("train", model, batch)
    loss(model, batch).backward()
    tracker.end()
    epoch = tracker.take_epoch()
    return int(epoch.train_flops), tracker


def _meta(model, batch, loss):
    return TorchFlopCounter(fallback_to_real_step=False).count_train_step(model, loss, batch)


def test_grouped_mm_formula_by_layout_by_hand():
    assert grouped_mm_flops((32, 16), (4, 16, 24), rows=30) == 2 * 30 * 16 * 24  # experts' forward, dX
    assert grouped_mm_flops((16, 32), (32, 24), rows=30) == 2 * 16 * 24 * 30  # dW over the tokens each expert got
    assert grouped_mm_flops((4, 8, 16), (4, 16, 24)) == 2 * 4 * 8 * 16 * 24  # batched
    assert grouped_mm_flops((32, 16), (4, 16, 24)) == 2 * 32 * 16 * 24  # no offs: every row


def test_grouped_mm_op_counts_exactly_on_cpu_forward_and_backward():
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("this torch has no _grouped_mm")
    torch.manual_seed(0)
    x = torch.randn(10, 16, requires_grad=True)
    w = torch.randn(3, 16, 24, requires_grad=True)
    offs = torch.tensor([3, 7, 10], dtype=torch.int32)

    class Experts(nn.Module):
        def forward(self, b):
            return torch._grouped_mm(b[0], b[1], offs=offs)

    flops, tracker = _observed(Experts(), (x, w), lambda m, b: (m(b) ** 2).sum())  # a dense gradient
    # forward 2·10·16·24; backward dX (same) and dW (2D x 2D over the 10 rows)
    assert flops == 3 * 2 * 10 * 16 * 24
    assert tracker.info()["uncounted_ops"] == []


def _moe_config(name):
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, attn_implementation="eager")
    if name == "mixtral":
        return transformers.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common), \
            transformers.MixtralForCausalLM
    return transformers.Qwen2MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40,
                                       shared_expert_intermediate_size=56, **common), transformers.Qwen2MoeForCausalLM


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_moe_with_transformers_default_experts_counts_exactly(name):
    config, cls = _moe_config(name)
    torch.manual_seed(0)
    model = cls(config)
    assert model.config._experts_implementation == "grouped_mm"  # transformers' default on this torch
    batch = {"input_ids": torch.randint(0, 64, (2, 8))}
    batch["labels"] = batch["input_ids"]

    def loss(m, b):
        return m(**b).loss

    observed, tracker = _observed(model, batch, loss)
    assert tracker.info()["uncounted_ops"] == []
    meta = _meta(model, batch, loss)
    assert meta.by_op.get("aten._grouped_mm", 0) > 0
    # truth: the same weights through transformers' eager experts (one nn.functional.linear per expert hit)
    eager_config = copy.deepcopy(config)
    eager_config._experts_implementation = "eager"
    eager = cls(eager_config)
    eager.load_state_dict(model.state_dict())
    assert eager.config._experts_implementation == "eager"
    truth, _ = _observed(eager, batch, loss)
    assert observed == truth == meta.flops
    # the experts by hand: 2 layers, 16 tokens × top-2 = 32 rows; gate_up [32, 2·I], down [I, 32]; fwd + dX + dW
    inter = 48 if name == "mixtral" else 40
    experts = 2 * 3 * (2 * 32 * 32 * 2 * inter + 2 * 32 * inter * 32)
    assert observed_experts(model, batch, loss) == experts == meta.by_op["aten._grouped_mm"]


def observed_experts(model, batch, loss):
    tracker = TorchFlopCounter()
    handle = tracker.start_observing(model)
    loss(model, batch).backward()
    return tracker.stop_observing(handle, "train").by_op["aten._grouped_mm"]


class _LSTM(nn.Module):
    def __init__(self, layers=1, bidirectional=False):
        super().__init__()
        self.rnn = nn.LSTM(8, 16, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(32 if bidirectional else 16, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("layers,bidirectional,input_grad", [(1, False, False), (2, False, False), (2, True, False),
                                                              (1, False, True)])
def test_lstm_counts_the_same_on_a_meta_copy_and_on_the_observed_step(layers, bidirectional, input_grad):
    torch.manual_seed(0)
    model = _LSTM(layers, bidirectional)
    x = torch.randn(4, 5, 8, requires_grad=input_grad)

    def loss(m, b):
        return m(b[0]).sum()

    observed, _ = _observed(model, (x,), loss)
    assert observed == _meta(model, (x,), loss).flops  # autograd's own per-step backward on meta


def test_lstm_backward_by_hand_excludes_the_input_and_initial_state_gradients_nothing_needs():
    torch.manual_seed(0)
    model = _LSTM(1)
    x = torch.randn(4, 5, 8)
    observed, _ = _observed(model, (x,), lambda m, b: m(b[0]).sum())
    tokens, ih, hh = 4 * 5, 64 * 8, 64 * 16
    forward = 2 * tokens * (ih + hh) + 2 * 4 * 16 * 3
    lstm_backward = 2 * tokens * ih + 2 * tokens * hh + 2 * (tokens - 4) * hh  # dW_ih, dW_hh, dh (no dX, no dh0)
    assert observed == forward + lstm_backward + 2 * (2 * 4 * 16 * 3) == 156800  # + the head's dW and dX
    assert rnn_backward_flops(tokens, 4, ih, hh, grad_input=False, grad_h0=False, grad_ih=True, grad_hh=True) == \
        lstm_backward


def test_cudnn_rnn_backward_formula_follows_the_same_rules_as_the_cpu_kernel():
    """The cuDNN backward (all layers in one op, a GPU op: its formula is called here with the shapes the aten op
    passes) counts what a meta count does: layer 1 without dX (mask[0] off), no dh0 (mask[1] off), dW (mask[3])."""
    from green_callbacks.core.flops.formulas import custom_flop_mapping

    formula = custom_flop_mapping().get(torch.ops.aten._cudnn_rnn_backward)
    if formula is None:
        pytest.skip("this torch has no _cudnn_rnn_backward")
    t, b, i, h, layers = 5, 4, 8, 16, 2
    weights = [(4 * h, i), (4 * h, h), (4 * h,), (4 * h,), (4 * h, h), (4 * h, h), (4 * h,), (4 * h,)]
    args = ((t, b, i), weights, 4, (1,), (layers, b, h), (layers, b, h), (t, b, h), (t, b, h), None, None,
            2, h, 0, layers, False, 0.0, True, False, [], None, (1,), [False, False, False, True])
    got = formula(*args)
    tokens = t * b
    layer1 = rnn_backward_flops(tokens, b, 4 * h * i, 4 * h * h, grad_input=False, grad_h0=False, grad_ih=True,
                                grad_hh=True)
    layer2 = rnn_backward_flops(tokens, b, 4 * h * h, 4 * h * h, grad_input=True, grad_h0=False, grad_ih=True,
                                grad_hh=True)
    assert got == layer1 + layer2
    # the CPU kernel's count of the same stack, observed (its backward follows the same rules)
    model = nn.LSTM(i, h, num_layers=layers)
    x = torch.randn(t, b, i)
    counter = TorchFlopCounter()
    handle = counter.start_observing(model)
    model(x)[0].pow(2).sum().backward()
    assert counter.stop_observing(handle, "train").by_op["aten.mkldnn_rnn_layer_backward"] == got

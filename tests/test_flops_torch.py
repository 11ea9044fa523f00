"""The torch FLOP engine against hand-written arithmetic (2 FLOPs per multiply-accumulate, matmul-class ops only)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from green_callbacks.core.flops import (  # noqa: E402
    FlopCountingError,
    FlopCountWarning,
    StepFlops,
    TorchFlopCounter,
    count_eval_step,
    count_train_step,
    formulas,
)


def call(m, b):
    return m(b)


def ce(m, b):
    return nn.functional.cross_entropy(m(b[0]), b[1])


# -- MLP ----------------------------------------------------------------------------------------------------------


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def mlp_batch(b=5):
    return torch.randn(b, 20), torch.randint(0, 4, (b,))


def test_mlp_forward_and_training_step_match_hand_arithmetic():
    b = 5
    layer1, layer2, layer3 = 2 * b * 20 * 16, 2 * b * 16 * 8, 2 * b * 8 * 4
    forward = layer1 + layer2 + layer3
    # backward: dW for every layer, dX for every layer except the first (its input needs no gradient)
    backward = (layer1 + layer2 + layer3) + (layer2 + layer3)
    counter = TorchFlopCounter()
    model, batch = make_mlp(), mlp_batch(b)

    train = counter.count_train_step(model, ce, batch)
    evaluation = counter.count_eval_step(model, ce, batch)

    assert isinstance(train, StepFlops)
    assert (train.kind, train.method, train.complete) == ("train", "meta", True)
    assert train.flops == forward + backward == 3 * forward - layer1
    assert evaluation.flops == forward
    assert evaluation.kind == "eval"
    assert sum(train.by_op.values()) == train.flops
    assert train.by_op["aten.addmm"] == forward  # forward linears (with bias) are addmm, backward ones mm


def test_input_that_requires_grad_gets_its_dx_counted():
    x, y = mlp_batch(5)
    forward = 2 * 5 * (20 * 16 + 16 * 8 + 8 * 4)
    assert count_train_step(make_mlp(), ce, (x.requires_grad_(True), y)).flops == 3 * forward


def test_frozen_first_layer_drops_its_weight_gradient_exactly():
    b = 5
    layer1, layer2, layer3 = 2 * b * 20 * 16, 2 * b * 16 * 8, 2 * b * 8 * 4
    model = make_mlp()
    model[0].requires_grad_(False)
    counter = TorchFlopCounter()
    # layer 1: no dW, no dX; layer 2: dW only (its input comes from a frozen layer); layer 3: dW + dX
    expected = (layer1 + layer2 + layer3) + layer2 + 2 * layer3
    assert counter.count_train_step(model, ce, mlp_batch(b)).flops == expected
    model[0].requires_grad_(True)  # unfreezing is a new signature, counted again
    assert counter.count_train_step(model, ce, mlp_batch(b)).flops == 3 * (layer1 + layer2 + layer3) - layer1


def test_cache_counts_each_signature_once_and_partial_batch_exactly():
    calls = []

    def forward(m, b):
        calls.append(b[0].shape[0])
        return ce(m, b)

    model, counter = make_mlp(), TorchFlopCounter()
    full = [counter.count_train_step(model, forward, mlp_batch(5)) for _ in range(4)]
    partial = counter.count_train_step(model, forward, mlp_batch(3))  # the short last batch

    per_sample = 3 * 2 * (20 * 16 + 16 * 8 + 8 * 4) - 2 * 20 * 16
    assert calls == [5, 3]
    assert all(r is full[0] for r in full)
    assert full[0].flops == 5 * per_sample
    assert partial.flops == 3 * per_sample
    stats = counter.stats
    assert (stats.calls, stats.cache_hits, stats.counts, stats.meta_counts) == (5, 3, 2, 2)
    # evaluation and training of the same batch are different signatures; train/eval module flags too
    counter.count_eval_step(model, forward, mlp_batch(5))
    model.eval()
    counter.count_eval_step(model, forward, mlp_batch(5))
    assert calls == [5, 3, 5, 5]


def test_counting_changes_no_parameter_gradient_or_buffer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2))
    batch = (torch.randn(8, 6), torch.randint(0, 2, (8,)))
    ce(model, batch).backward()  # the user's accumulated gradients
    before_params = [p.detach().clone() for p in model.parameters()]
    before_grads = [p.grad for p in model.parameters()]
    before_grad_values = [g.clone() for g in before_grads]
    before_buffers = [b.clone() for b in model.buffers()]
    before_rng = torch.get_rng_state()

    for method in ("meta", "real-step"):
        TorchFlopCounter(method=method).count_train_step(model, ce, batch)
        TorchFlopCounter(method=method).count_eval_step(model, ce, batch)

    assert all(torch.equal(a, p) for a, p in zip(before_params, model.parameters(), strict=True))
    assert all(g is p.grad for g, p in zip(before_grads, model.parameters(), strict=True))
    assert all(torch.equal(a, p.grad) for a, p in zip(before_grad_values, model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before_buffers, model.buffers(), strict=True))
    assert torch.equal(before_rng, torch.get_rng_state())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_inference_mode_eval_and_train_counts():
    model = make_mlp()
    forward = 2 * 5 * (20 * 16 + 16 * 8 + 8 * 4)
    with torch.inference_mode():
        batch = mlp_batch(5)
        for method in ("meta", "real-step"):
            counter = TorchFlopCounter(method=method)
            assert counter.count_eval_step(model, ce, batch).flops == forward
            assert counter.count_train_step(model, ce, batch).flops == 3 * forward - 2 * 5 * 20 * 16


def test_meta_copy_does_not_hold_the_real_weights():
    model = make_mlp()
    counter = TorchFlopCounter()
    counter.count_train_step(model, ce, mlp_batch())
    (meta_copy, _), = counter._meta_copies.values()
    assert all(p.is_meta for p in meta_copy.parameters())
    assert not any(p.is_meta for p in model.parameters())


# -- CNN ----------------------------------------------------------------------------------------------------------


def test_cnn_with_stride_and_groups():
    b = 2
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 16x16 -> 8x8
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, groups=4),  # 8x8 -> 6x6, 8/4 = 2 input channels per group
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    x = torch.randn(b, 3, 16, 16)
    # 2 · B · C_out · (C_in/groups) · k_h · k_w · H_out · W_out
    conv1 = 2 * b * 8 * 3 * 3 * 3 * 8 * 8
    conv2 = 2 * b * 16 * (8 // 4) * 3 * 3 * 6 * 6
    linear = 2 * b * 16 * 10
    counter = TorchFlopCounter()
    assert counter.count_eval_step(model, lambda m, x: m(x), x).flops == conv1 + conv2 + linear
    train = counter.count_train_step(model, lambda m, x: m(x).sum(), x)
    # conv1 has no dX (raw input); conv2 and the linear layer have dX and dW, each the size of their forward
    assert train.flops == (conv1 + conv2 + linear) + conv1 + 2 * conv2 + 2 * linear
    assert train.by_op["aten.convolution_backward"] == conv1 + 2 * conv2


def test_transposed_grouped_convolution():
    b = 2
    model = nn.ConvTranspose2d(8, 4, 3, stride=2, groups=2)
    x = torch.randn(b, 8, 5, 5, requires_grad=True)
    # transposed: each *input* position is scattered through the kernel: 2 · B · C_in · (C_out/g) · k² · H_in · W_in
    forward = 2 * b * 8 * (4 // 2) * 3 * 3 * 5 * 5
    assert count_train_step(model, call, x).flops == 3 * forward


# -- tiny BERT ------------------------------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")

H, LAYERS, HEADS, INTER, VOCAB, LABELS = 32, 2, 2, 64, 100, 3


def bert_config(attn="sdpa", attention_dropout=0.1):
    return transformers.BertConfig(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
        vocab_size=VOCAB, max_position_embeddings=64, num_labels=LABELS, attn_implementation=attn,
        attention_probs_dropout_prob=attention_dropout,
    )


def bert_batch(b, s, labels="cls"):
    ids = torch.randint(0, VOCAB, (b, s))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, s // 2:] = 0  # dynamic padding: the first sequence is half padding
    lab = torch.randint(0, LABELS, (b,)) if labels == "cls" else torch.randint(0, VOCAB, (b, s))
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def encoder_layer_forward(b, s):
    qkv = 3 * 2 * b * s * H * H
    out_proj = 2 * b * s * H * H
    scores = 2 * b * HEADS * s * s * (H // HEADS)  # Q·Kᵀ per head
    context = 2 * b * HEADS * s * s * (H // HEADS)  # P·V per head
    ffn = 2 * b * s * H * INTER + 2 * b * s * INTER * H
    return {"qkv": qkv, "out": out_proj, "attn": scores + context, "ffn": ffn}


def hf_forward(m, b):
    return m(**b)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("seq", [8, 16])
def test_bert_sequence_classification(attn, seq):
    b = 4
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config(attn))
    layer = sum(encoder_layer_forward(b, seq).values())
    pooler = 2 * b * H * H  # on the [CLS] token only
    classifier = 2 * b * H * LABELS
    forward = LAYERS * layer + pooler + classifier
    counter = TorchFlopCounter()

    train = counter.count_train_step(model, hf_forward, bert_batch(b, seq))
    model.eval()
    evaluation = counter.count_eval_step(model, hf_forward, bert_batch(b, seq))

    assert evaluation.flops == forward
    # every matmul's input requires grad (embeddings are trainable): backward = dX + dW = 2 × forward,
    # attention included (no recompute)
    assert train.flops == 3 * forward
    assert train.method == evaluation.method == "meta"
    assert train.uncounted_ops == evaluation.uncounted_ops == ()


def test_bert_masked_lm_head():
    b, s = 2, 8
    model = transformers.BertForMaskedLM(bert_config())
    layer = sum(encoder_layer_forward(b, s).values())
    head = 2 * b * s * H * H + 2 * b * s * H * VOCAB  # transform dense + decoder (tied to the embeddings)
    forward = LAYERS * layer + head
    counter = TorchFlopCounter()
    assert counter.count_eval_step(model, hf_forward, bert_batch(b, s, "mlm")).flops == forward
    assert counter.count_train_step(model, hf_forward, bert_batch(b, s, "mlm")).flops == 3 * forward


def test_bert_frozen_embeddings_and_first_layer():
    b, s = 4, 8
    model = transformers.BertForSequenceClassification(bert_config())
    model.bert.embeddings.requires_grad_(False)
    model.bert.encoder.layer[0].requires_grad_(False)
    parts = encoder_layer_forward(b, s)
    pooler, classifier = 2 * b * H * H, 2 * b * H * LABELS
    forward = LAYERS * sum(parts.values()) + pooler + classifier
    backward = (
        0  # layer 0: frozen weights, inputs need no gradient
        + parts["qkv"]  # layer 1 Q/K/V projections: dW only (their input comes from the frozen layer)
        + 2 * (parts["attn"] + parts["out"] + parts["ffn"])
        + 2 * (pooler + classifier)
    )
    assert count_train_step(model, hf_forward, bert_batch(b, s)).flops == forward + backward


def test_bert_real_step_on_cpu_fused_attention_matches_meta():
    """On CPU, SDPA runs ``_scaled_dot_product_flash_attention_for_cpu`` (0 in torch 2.13): our formula counts it."""
    b, s = 2, 8
    # without attention dropout, CPU SDPA takes the fused kernel in training too (with it: the math path)
    model = transformers.BertForSequenceClassification(bert_config("sdpa", attention_dropout=0.0))
    forward = LAYERS * sum(encoder_layer_forward(b, s).values()) + 2 * b * H * H + 2 * b * H * LABELS
    real = TorchFlopCounter(method="real-step").count_train_step(model, hf_forward, bert_batch(b, s))
    assert real.method == "real-step"
    assert real.flops == 3 * forward
    attention = LAYERS * encoder_layer_forward(b, s)["attn"]
    assert real.by_op["aten._scaled_dot_product_flash_attention_for_cpu"] == attention
    assert real.by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 2 * attention


# -- torch fast paths, recurrent layers ------------------------------------------------------------------------------


def test_transformer_encoder_and_mha_inference_fast_paths():
    b, s, e, f = 3, 8, 32, 64
    layer = nn.TransformerEncoderLayer(e, 2, f, batch_first=True, dropout=0.0).eval()
    mha = nn.MultiheadAttention(e, 2, batch_first=True).eval()
    x = torch.randn(b, s, e)
    attention = 2 * 2 * b * s * s * e  # scores + context over all heads
    projections = 2 * b * s * (3 * e * e + e * e)
    ffn = 2 * 2 * b * s * e * f
    counter = TorchFlopCounter(method="real-step")
    enc = counter.count_eval_step(layer, call, x)
    assert dict(enc.by_op) == {"aten._transformer_encoder_layer_fwd": projections + attention + ffn}
    att = counter.count_eval_step(mha, lambda m, x: m(x, x, x, need_weights=False)[0], x)
    assert dict(att.by_op) == {"aten._native_multi_head_attention": projections + attention}
    # the meta path decomposes the same layers into matmuls and gets the same totals
    assert TorchFlopCounter().count_eval_step(layer, call, x).flops == projections + attention + ffn


def test_lstm_counted_by_formula_on_meta_and_on_the_fused_cpu_kernel():
    b, t, i, h = 4, 5, 8, 16
    model = nn.LSTM(i, h, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(b, t, i)
    gates = 4
    # per time step, per sample, per direction: gates · 2 · (in·h + h·h)
    layer1 = 2 * b * t * gates * 2 * (i * h + h * h)  # 2 directions
    layer2 = 2 * b * t * gates * 2 * (2 * h * h + h * h)  # input = both directions' outputs (2h)
    forward = layer1 + layer2
    meta = TorchFlopCounter()
    assert meta.count_eval_step(model, lambda m, x: m(x)[0], x).flops == forward
    # meta (unfused math) backward: 2 × forward, less layer 1's input dX and the zero initial state's dh
    first_input_dx = 2 * b * t * gates * 2 * i * h
    initial_state_dh = LAYERS_LSTM * 2 * (2 * b * gates * h * h)
    train = 3 * forward - first_input_dx - initial_state_dh
    assert meta.count_train_step(model, lambda m, x: m(x)[0], x).flops == train
    # the fused oneDNN kernel (real CPU step) also computes dX of the raw input and dh0, which nothing needs: the
    # model FLOPs are the same as on meta (the docs' convention)
    real = TorchFlopCounter(method="real-step")
    assert real.count_eval_step(model, lambda m, x: m(x)[0], x).by_op == {"aten.mkldnn_rnn_layer": forward}
    assert real.count_train_step(model, lambda m, x: m(x)[0], x).flops == train


LAYERS_LSTM = 2


def test_gru_meta_count():
    b, t, i, h = 3, 4, 6, 10
    model = nn.GRU(i, h, batch_first=True)
    forward = 2 * b * t * 3 * (i * h + h * h)
    assert count_eval_step(model, lambda m, x: m(x)[0], torch.randn(b, t, i)).flops == forward


def test_matrix_vector_product_has_a_formula():
    class MatVec(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 7))

        def forward(self, v):
            return self.w @ v  # aten.mv: no formula in torch 2.13

    assert count_eval_step(MatVec(), call, torch.randn(7)).by_op == {"aten.mv": 2 * 5 * 7}


# -- incomplete counts, fallback, errors ----------------------------------------------------------------------------


class Distances(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cdist(self.proj(x), x)


def test_compute_op_without_formula_is_named_not_silently_zero():
    counter = TorchFlopCounter()
    with pytest.warns(FlopCountWarning, match=r"aten\._cdist_forward .*no FLOP formula"):
        result = counter.count_eval_step(Distances(), call, torch.randn(2, 6, 4))
    assert result.uncounted_ops == ("aten._cdist_forward",)
    assert not result.complete
    assert result.flops == 2 * 2 * 6 * 4 * 4  # the projection only: a lower bound
    assert counter.uncounted_ops == ("aten._cdist_forward",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per op and counter, not per step
        counter.count_eval_step(Distances(), call, torch.randn(3, 6, 4))


def test_unknown_custom_op_is_reported():
    @torch.library.custom_op("green_callbacks_test::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @mystery.register_fake
    def _(x):
        return torch.empty_like(x)

    class UsesMystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return mystery(self.lin(x))

    with pytest.warns(FlopCountWarning, match="green_callbacks_test.mystery .*not a known compute-free op"):
        result = count_eval_step(UsesMystery(), call, torch.randn(2, 3))
    assert result.uncounted_ops == ("green_callbacks_test.mystery",)


class DataDependent(nn.Module):
    """Keeps only the rows whose first projection sums positive: a data-dependent shape (``nonzero``)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        with torch.no_grad():
            self.first.weight.copy_(torch.eye(4))
            self.first.bias.zero_()

    def forward(self, x):
        h = self.first(x)
        return self.second(h[h.sum(-1) > 0])


def test_fallback_to_a_real_step_on_data_dependent_op():
    x = torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1], [2, 0, 0, 0], [-3, 0, 0, 0], [-1, 0, 0, 0], [0, 0, 0, -1]])
    kept = 2  # rows 0 and 2 sum positive
    first, second = 2 * 6 * 4 * 4, 2 * kept * 4 * 4
    counter = TorchFlopCounter()
    with pytest.warns(FlopCountWarning, match="meta-device copy of DataDependent failed.*real step"):
        evaluation = counter.count_eval_step(DataDependent(), call, x)
    assert evaluation.method == "real-step"
    assert evaluation.flops == first + second
    train = counter.count_train_step(DataDependent(), lambda m, x: m(x).sum(), x)
    # second: fwd + dW + dX; first: fwd + dW (raw input)
    assert train.flops == first + second + 2 * second + first
    strict = TorchFlopCounter(fallback_to_real_step=False)
    with pytest.raises(FlopCountingError, match="fallback_to_real_step=False"):
        strict.count_eval_step(DataDependent(), call, x)


def test_integer_inputs_keep_their_values_on_the_meta_path():
    class MaskCheck(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.lin = nn.Linear(4, 4)

        def forward(self, ids, mask):
            h = self.emb(ids)
            if not bool(mask.to(h.device).all()):  # HF-style data-dependent check on the mask
                h = h * mask[..., None]
            return self.lin(h)

    ids, mask = torch.randint(0, 10, (2, 3)), torch.tensor([[1, 1, 0], [1, 1, 1]])
    result = count_eval_step(MaskCheck(), lambda m, b: m(*b), (ids, mask))
    assert (result.method, result.flops) == ("meta", 2 * 2 * 3 * 4 * 4)


def test_forward_contract_errors_are_clear():
    counter = TorchFlopCounter()
    with pytest.raises(ValueError, match="not a loss"):
        counter.count_train_step(make_mlp(), lambda m, b: None, mlp_batch())
    with pytest.raises(ValueError, match="without a 'loss' key"):
        counter.count_train_step(make_mlp(), lambda m, b: {"logits": m(b[0])}, mlp_batch())
    with pytest.raises(ValueError, match=r"torch\.nn\.Module"):
        counter.count_train_step(object(), ce, mlp_batch())
    with pytest.raises(ValueError, match="method="):
        TorchFlopCounter(method="guess")


def test_loss_shapes_accepted():
    model, batch = make_mlp(), mlp_batch()
    expected = count_train_step(model, ce, batch).flops
    assert count_train_step(model, lambda m, b: {"loss": ce(m, b)}, batch).flops == expected
    assert count_train_step(model, lambda m, b: (ce(m, b), "aux"), batch).flops == expected
    # a non-scalar output is summed before backward (the sum itself is elementwise: 0 FLOPs)
    assert count_train_step(model, lambda m, b: m(b[0]), batch).flops == expected


# -- formulas as pure functions ------------------------------------------------------------------------------------


def test_pure_formulas():
    # grouped-query attention: 8 query heads share 2 K/V heads; Q·Kᵀ and P·V each 2 · B · H_q · S² · D
    q, kv = (2, 8, 16, 4), (2, 2, 16, 4)
    assert formulas.attention_forward_flops(q, kv, kv) == 2 * (2 * 2 * 8 * 16 * 16 * 4)
    assert formulas.attention_backward_flops(q, kv, kv) == 4 * (2 * 2 * 8 * 16 * 16 * 4)
    assert formulas.rnn_flops(tokens=12, matrix_numels=[64 * 8, 64 * 16]) == 2 * 12 * (64 * 8 + 64 * 16)
    # cuDNN backward (one layer, hx [1, 4, 16]): with every gradient asked (input, h0, weights) 2x forward; without
    # the weight gradient, the data gradients alone (dX, dh over the steps, dh0)
    weights = [(64, 8), (64, 16), (64,), (64,)]
    data = 2 * 20 * (64 * 8 + 64 * 16)
    args = (None, None, (1, 4, 16), *([None] * 8), 1, *([None] * 7))
    assert formulas._cudnn_rnn_backward_flop((5, 4, 8), weights, *args, [True, True, True, True]) == 2 * data
    assert formulas._cudnn_rnn_backward_flop((5, 4, 8), weights, *args, [True, True, True, False]) == data
    # nested sequences of lengths 3 and 5: per token 2·Σ numel(W), per sequence 4·L²·E
    assert formulas.encoder_layer_flops([3, 5], 8, [192, 64, 128, 128]) == 2 * 512 * 8 + 4 * (9 + 25) * 8
    assert formulas.conv_backward_flops((1, 4, 6, 6), (4, 1, 3, 3), (1, 4, 4, 4), False, False, True) == (
        2 * 1 * 4 * 1 * 9 * 16
    )


def test_importing_the_package_does_not_import_torch():
    code = "import sys, green_callbacks.core.flops as f; f.peak_flops_per_s('NVIDIA A100-SXM4-80GB', 'bf16'); " \
           "import green_callbacks.core.flops.torch_engine; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- counting cost: memoised meta kernels, one-walk cache key, exact counts for every length --------------------------


def test_bert_counted_exactly_at_every_length_with_one_counter():
    """One counter (memo and cache shared across counts), many padded lengths, odd ones too: each is exact."""
    b = 3
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config())
    counter = TorchFlopCounter()
    for s in (8, 13, 16, 24, 5, 31, 40, 9, 64, 17):
        forward = LAYERS * sum(encoder_layer_forward(b, s).values()) + 2 * b * H * H + 2 * b * H * LABELS
        train = counter.count_train_step(model, hf_forward, bert_batch(b, s))
        assert (train.flops, train.method, train.complete) == (3 * forward, "meta", True), s
    model.eval()
    for s in (13, 40):
        forward = LAYERS * sum(encoder_layer_forward(b, s).values()) + 2 * b * H * H + 2 * b * H * LABELS
        assert counter.count_eval_step(model, hf_forward, bert_batch(b, s)).flops == forward
    assert counter.stats.meta_counts == 12
    assert counter._meta_memo  # the memo was used
    counter.clear_cache()
    assert not counter._meta_memo


def test_memo_changes_no_count(monkeypatch):
    """Every result (total, per op, uncounted ops) is the same with the kernel memo switched off."""
    import contextlib

    from green_callbacks.core.flops import torch_engine

    def steps(counter):
        torch.manual_seed(0)
        bert = transformers.BertForSequenceClassification(bert_config())
        lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        out = []
        for s in (8, 11, 8, 20):
            out.append(counter.count_train_step(bert, hf_forward, bert_batch(2, s)))
            out.append(counter.count_train_step(lstm, lambda m, x: m(x)[0], torch.randn(2, s, 8)))
        with pytest.warns(FlopCountWarning):
            out.append(counter.count_eval_step(Distances(), call, torch.randn(2, 6, 4)))
        out.append(counter.count_train_step(make_mlp(), ce, mlp_batch(7)))
        return [(r.flops, dict(r.by_op), r.uncounted_ops, r.method) for r in out]

    memoised = steps(TorchFlopCounter())
    monkeypatch.setattr(torch_engine, "memo_mode", lambda table: contextlib.nullcontext())
    plain_counter = TorchFlopCounter()
    assert memoised == steps(plain_counter)
    assert not plain_counter._meta_memo
    assert memoised[-2][2] == ("aten._cdist_forward",)  # an op without formula is still reported


def test_memo_answers_repeated_functional_meta_ops_and_leaves_the_rest_alone():
    from green_callbacks.core.flops.meta_memo import memo_mode

    a, b = torch.empty(4, 6, device="meta"), torch.empty(6, device="meta")
    transposed = torch.empty(6, 4, device="meta").t()
    x, y = torch.randn(3), torch.randn(3)
    table = {}
    with memo_mode(table):
        first = a + b
        second = a + b
        assert second is not first
        assert (second.shape, second.stride(), second.dtype, second.is_meta) == ((4, 6), (6, 1), torch.float32, True)
        assert len(table) == 1
        third = transposed + b  # a non-contiguous input is another key; the output follows its layout
        assert third.stride() == (1, 4) and len(table) == 2
        assert (transposed + b).stride() == (1, 4) and len(table) == 2
        double = a.to(torch.float64)  # _to_copy: functional, memoised with its dtype argument
        assert double.dtype == torch.float64 and len(table) == 3
        a.add_(b)  # in place: never memoised
        view = a.view(24)  # a view must stay a view of its base
        assert view._base is a
        assert torch.equal(x + y, x.clone() + y)  # real tensors run for real
        assert len(table) == 3


def test_memo_table_is_bounded(monkeypatch):
    from green_callbacks.core.flops import meta_memo

    monkeypatch.setattr(meta_memo, "MAX_ENTRIES", 2)
    inputs = [torch.empty(n, device="meta") for n in (1, 2, 3)]
    table = {}
    with meta_memo.memo_mode(table):
        for t in inputs:
            t * 2.0
    assert len(table) == 1  # emptied when full, then the third call remembered


def test_one_walk_finds_the_modules_and_parameters_of_module_parameters():
    from green_callbacks.core.flops.torch_engine import _modules_and_parameters

    shared = nn.Linear(3, 3)
    first, tied = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)
    tied.weight = first.weight
    model = nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared, first), tied)
    model.register_module("absent", None)
    tied.register_parameter("unused", None)
    modules, params = _modules_and_parameters(model)
    assert modules == list(model.modules())
    assert len(modules) == 6  # the Sequential, shared, ReLU, the inner Sequential, first, tied (shared once)
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]
    assert len(params) == 2 + 1  # shared (weight, bias) once, the tied weight once


def test_flops_that_are_not_a_polynomial_in_length_are_still_exact():
    """Counts are never interpolated between lengths: a cubic op and a strided conv (floor) are exact."""

    class Cubic(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):  # x: (L, 4)
            h = self.proj(x)
            square = h @ h.T  # L×L
            return square @ square  # (L×L)·(L×L): 2·L³

    counter = TorchFlopCounter()
    for length in (2, 3, 5, 8, 13, 4, 7):
        expected = 2 * length * 4 * 4 + 2 * length * length * 4 + 2 * length**3
        assert counter.count_eval_step(Cubic(), call, torch.randn(length, 4)).flops == expected, length

    conv = nn.Conv1d(2, 3, kernel_size=1, stride=2)
    for length in (8, 16, 24, 32, 17, 9, 33):
        out_length = (length - 1) // 2 + 1  # floor((L - k) / s) + 1 with k = 1, s = 2
        assert counter.count_eval_step(conv, call, torch.randn(1, 2, length)).flops == 2 * 3 * 2 * out_length

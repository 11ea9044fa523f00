"""FLOP formulas for the aten ops that torch's ``FlopCounterMode`` counts as 0, and the op classification lists.

Every formula is a pure function of shapes (tuples of ints) or, for the ``*_raw`` ones, of tensors' metadata,
so it can be checked against hand arithmetic without running a model. ``custom_flop_mapping()`` (which imports
torch) maps aten ops to these functions for ``FlopCounterMode(custom_mapping=...)``.

Convention (the one ``FlopCounterMode`` uses for matmuls, see docs/flops.md): 2 FLOPs per multiply-accumulate;
bias adds, activations and other elementwise work are not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import Any

__all__ = [
    "COMPUTE_OPS_WITHOUT_FORMULA",
    "NO_COMPUTE_OPS",
    "attention_backward_flops",
    "attention_forward_flops",
    "conv_backward_flops",
    "conv_flops",
    "custom_flop_mapping",
    "encoder_layer_flops",
    "grouped_mm_flops",
    "multi_head_attention_flops",
    "rnn_backward_flops",
    "rnn_flops",
]

Shape = Sequence[int]


# ---------------------------------------------------------------------------------------------------------------
# Pure formulas
# ---------------------------------------------------------------------------------------------------------------


def attention_forward_flops(query: Shape, key: Shape, value: Shape) -> int:
    """Scaled dot-product attention forward: ``Q·Kᵀ`` plus ``P·V``.

    Shapes ``[..., H_q, S_q, D]``, ``[..., H_kv, S_k, D]``, ``[..., H_kv, S_k, D_v]``; grouped-query attention
    (``H_q`` a multiple of ``H_kv``) broadcasts K/V to ``H_q`` heads. FLOPs: ``2·N·S_q·S_k·D + 2·N·S_q·S_k·D_v``
    with ``N`` = batch × query heads. A causal mask is not discounted (it is an upper bound, as in torch).
    """
    *lead_q, s_q, d_q = query
    s_k, d_k = key[-2], key[-1]
    d_v = value[-1]
    if d_q != d_k or value[-2] != s_k:
        raise ValueError(f"attention shapes do not fit: query={tuple(query)}, key={tuple(key)}, value={tuple(value)}")
    n = prod(lead_q)
    return 2 * n * s_q * s_k * d_q + 2 * n * s_q * s_k * d_v


def attention_backward_flops(query: Shape, key: Shape, value: Shape) -> int:
    """Attention backward without recompute: ``dV = Pᵀ·dO``, ``dP = dO·Vᵀ``, ``dQ = dS·K``, ``dK = dSᵀ·Q``.

    That is exactly 2× :func:`attention_forward_flops` and what the math (unfused) path executes, so a meta
    count and a real fused-kernel count agree. torch's own formula for the fused kernels adds the ``Q·Kᵀ``
    recompute of flash attention (2.5× for ``D == D_v``): that is hardware FLOPs, not model FLOPs.
    """
    return 2 * attention_forward_flops(query, key, value)


def conv_flops(x_shape: Shape, w_shape: Shape, out_shape: Shape, transposed: bool = False) -> int:
    """Convolution forward: ``2 · B · C_out · (C_in/groups) · ∏kernel · ∏out_spatial``.

    ``w_shape`` is the weight's shape, which already holds the per-group channel count
    (``[C_out, C_in/g, k...]``, or ``[C_in, C_out/g, k...]`` transposed). A transposed convolution scatters every
    *input* position through the kernel, so its spatial factor is the input's.
    """
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return 2 * x_shape[0] * prod(w_shape) * prod(spatial)


def conv_backward_flops(x_shape: Shape, w_shape: Shape, out_shape: Shape, transposed: bool,
                        grad_input: bool, grad_weight: bool) -> int:
    """Convolution backward: the input gradient and the weight gradient each cost one forward.

    Every multiply-accumulate of the forward has exactly one counterpart in each gradient. (torch 2.13's own
    formula forgets ``groups`` in the weight gradient and over-counts it ``groups``-fold, e.g. 96x for a
    depthwise convolution over 96 channels; see pytorch/pytorch PR #183405.)
    """
    forward = conv_flops(x_shape, w_shape, out_shape, transposed)
    return forward * (int(bool(grad_input)) + int(bool(grad_weight)))


def _per_sequence_lengths(src: Any) -> list[int]:
    """Sequence lengths of a ``[B, S, E]`` tensor or of a nested tensor of ``[L_i, E]`` sequences."""
    if getattr(src, "is_nested", False):
        return [int(size[0]) for size in src._nested_tensor_size().tolist()]
    batch, seq = int(src.shape[0]), int(src.shape[1])
    return [seq] * batch


def encoder_layer_flops(lengths: Sequence[int], embed_dim: int, weight_numels: Sequence[int]) -> int:
    """One transformer encoder layer (self-attention + feed-forward) over sequences of the given lengths.

    Per token ``2·Σ numel(W)`` for the linear maps (QKV, output projection, both FFN layers), per sequence of
    length ``L`` ``4·L²·E`` for the attention scores and the weighted sum (independent of the head count).
    """
    linear = 2 * sum(weight_numels)
    return sum(linear * length + 4 * length * length * embed_dim for length in lengths)


def multi_head_attention_flops(
    query_lengths: Sequence[int], key_lengths: Sequence[int], embed_dim: int
) -> int:
    """``nn.MultiheadAttention`` (in-projection, attention, out-projection), per sequence pair.

    Q and output projections ``2·L_q·E²`` each, K and V projections ``2·L_k·E²`` each, attention ``4·L_q·L_k·E``.
    """
    e = embed_dim
    pairs = zip(query_lengths, key_lengths, strict=True)
    return sum(4 * lq * e * e + 4 * lk * e * e + 4 * lq * lk * e for lq, lk in pairs)


def rnn_flops(tokens: int, matrix_numels: Sequence[int]) -> int:
    """Forward of a fused recurrent layer stack: ``2 · tokens · Σ numel(weight matrices)``.

    For an LSTM/GRU/RNN layer with ``G`` gates (4, 3, 1), input size ``I`` and hidden size ``H`` the matrices
    are ``W_ih [G·H, I]`` and ``W_hh [G·H, H]``: ``2·G·(I·H + H·H)`` per time step per sample per direction,
    the gate matmuls of the standard formulation; every layer and direction sees all ``tokens`` (time steps
    × batch, or the packed length). Bias vectors carry no matmul and are not counted.
    """
    return 2 * int(tokens) * sum(int(n) for n in matrix_numels)


def rnn_backward_flops(tokens: int, batch: int, ih_numel: int, hh_numel: int, *, grad_input: bool,
                       grad_h0: bool, grad_ih: bool, grad_hh: bool) -> int:
    """Backward of one fused recurrent layer (one direction), as the docs' convention counts it.

    The gate matmuls ``W_ih·x_t`` and ``W_hh·h_(t-1)`` over ``tokens`` (time steps × batch) have these gradients:
    ``dW_ih`` and ``dW_hh`` (``2·tokens·numel`` each, when the weight needs a gradient), the recurrence ``dh_(t-1) =
    W_hhᵀ·dgates_t`` for every step but the first (``2·(tokens − batch)·numel(W_hh)``), the first step's ``dh0`` only
    when the initial state needs a gradient, and ``dX`` only when the input needs one (the first layer fed raw data
    does not) — what autograd computes for the same layer written with ``nn.Linear`` (a meta count). The fused CPU
    kernel computes ``dX`` and ``dh0`` always; that extra work is not model work and is not counted.
    """
    tokens, batch = int(tokens), int(batch)
    total = 2 * max(tokens - batch, 0) * hh_numel
    if grad_h0:
        total += 2 * batch * hh_numel
    if grad_input:
        total += 2 * tokens * ih_numel
    if grad_ih:
        total += 2 * tokens * ih_numel
    if grad_hh:
        total += 2 * tokens * hh_numel
    return total


def grouped_mm_flops(a_shape: Shape, b_shape: Shape, rows: int | None = None) -> int:
    """``torch._grouped_mm(a, b, offs)``: one matmul per group (an MoE's experts), ``2·M·K·N`` summed over groups.

    ``rows`` is ``offs[-1]``, the number of rows (or, for 2D × 2D, of the shared dimension) the groups cover;
    ``None`` without ``offs`` (or when its values cannot be read: a meta run), then the whole dimension is taken,
    an upper bound. The grouped dimension by layout:

    * 2D × 3D ``[S, K] · [G, K, N]`` (the experts' forward and ``dX``): ``2·rows·K·N``;
    * 2D × 2D ``[K, S] · [S, N]`` → ``[G, K, N]`` (``dW``): ``2·K·N·rows``;
    * 3D × 2D ``[G, M, K] · [K, N_total]``: ``2·M·K·rows``;
    * 3D × 3D ``[G, M, K] · [G, K, N]`` (batched): ``2·G·M·K·N``.
    """
    if len(a_shape) == 2 and len(b_shape) == 3:
        return 2 * (a_shape[0] if rows is None else rows) * a_shape[1] * b_shape[2]
    if len(a_shape) == 2 and len(b_shape) == 2:
        return 2 * a_shape[0] * b_shape[1] * (a_shape[1] if rows is None else rows)
    if len(a_shape) == 3 and len(b_shape) == 2:
        return 2 * a_shape[1] * a_shape[2] * (b_shape[1] if rows is None else rows)
    if len(a_shape) == 3 and len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]
    raise ValueError(f"grouped_mm shapes not supported: {tuple(a_shape)} x {tuple(b_shape)}")


# ---------------------------------------------------------------------------------------------------------------
# Adapters from aten schemas to the pure formulas (shape-level: FlopCounterMode passes torch.Size for tensors)
# ---------------------------------------------------------------------------------------------------------------


def _mv_flop(mat: Shape, vec: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]


def _addmv_flop(self_shape: Shape, mat: Shape, vec: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * mat[0] * mat[1]


def _dot_flop(a: Shape, b: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a[0]


def _addbmm_flop(self_shape: Shape, b1: Shape, b2: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    batch, n, k = b1
    return 2 * batch * n * k * b2[2]


def _addmm_like_flop(self_shape: Shape, a: Shape, b: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a[0] * a[1] * b[1]


def _mm_like_flop(a: Shape, b: Shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * a[0] * a[1] * b[1]


def _conv_backward_flop(grad_out: Shape, x: Shape, w: Shape, bias_sizes: Any, stride: Any, padding: Any,
                        dilation: Any, transposed: bool, output_padding: Any, groups: int, output_mask: Sequence[bool],
                        *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return conv_backward_flops(x, w, grad_out, transposed, output_mask[0], output_mask[1])


def _sdpa_forward_flop(query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return attention_forward_flops(query, key, value)


def _sdpa_backward_flop(
    grad_out: Shape, query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    return attention_backward_flops(query, key, value)


def _tokens(input_shape: Shape) -> int:
    """Time steps × batch of an RNN input ``[T, B, I]``/``[B, T, I]``, or the packed length of ``[N, I]``."""
    return prod(input_shape[:-1])


def _mkldnn_rnn_layer_flop(inp: Shape, w_ih: Shape, w_hh: Shape, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return rnn_flops(_tokens(inp), [prod(w_ih), prod(w_hh)])


def _mkldnn_rnn_layer_backward_raw(inp: Any, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any, hx: Any, *args: Any,
                                   out_val: Any = None, **kw: Any) -> int:
    # the saved input, weights and initial state keep their requires_grad: what the model needs is known here
    return rnn_backward_flops(_tokens(inp.shape), hx.shape[0], w_ih.numel(), w_hh.numel(),
                              grad_input=inp.requires_grad, grad_h0=hx.requires_grad,
                              grad_ih=w_ih.requires_grad, grad_hh=w_hh.requires_grad)


def _offs_rows(offs: Any) -> int | None:
    """``offs[-1]`` (the rows the groups cover), or None when there is no ``offs`` or its values cannot be read."""
    if offs is None or getattr(offs, "is_meta", False) or offs.numel() == 0:
        return None
    return int(offs[-1].item())


def _grouped_mm_raw(a: Any, b: Any, offs: Any = None, *args: Any, out_val: Any = None, **kw: Any) -> int:
    if offs is None:
        offs = kw.get("offs")
    return grouped_mm_flops(tuple(a.shape), tuple(b.shape), _offs_rows(offs))


def _scaled_grouped_mm_raw(a: Any, b: Any, scale_a: Any, scale_b: Any, offs: Any = None, *args: Any,
                           out_val: Any = None, **kw: Any) -> int:
    if offs is None:
        offs = kw.get("offs")
    return grouped_mm_flops(tuple(a.shape), tuple(b.shape), _offs_rows(offs))


def _matrices(weights: Sequence[Shape]) -> list[int]:
    return [prod(w) for w in weights if len(w) == 2]


def _cudnn_rnn_flop(inp: Shape, weights: Sequence[Shape], *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return rnn_flops(_tokens(inp), _matrices(weights))


def _cudnn_rnn_backward_flop(inp: Shape, weights: Sequence[Shape], weight_stride0: int, weight_buf: Any,
                             hx: Shape, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    output_mask = kw.get("output_mask", args[-1] if args else (True, True, True, True))
    # the stack's gate matrices, (W_ih, W_hh) per layer and direction in order (projections: not counted)
    pairs = [w for w in weights if len(w) == 2]
    layers = kw.get("num_layers", args[8] if len(args) > 8 else 1)
    per_layer = max(len(pairs) // 2 // max(int(layers or 1), 1), 1)  # directions
    tokens, batch = _tokens(inp), hx[1]
    total = 0
    for i in range(0, len(pairs) - 1, 2):
        layer = i // 2 // per_layer
        total += rnn_backward_flops(tokens, batch, prod(pairs[i]), prod(pairs[i + 1]),
                                    grad_input=layer > 0 or bool(output_mask[0]), grad_h0=bool(output_mask[1]),
                                    grad_ih=bool(output_mask[3]), grad_hh=bool(output_mask[3]))
    return total


def _encoder_layer_fwd_raw(src: Any, embed_dim: int, num_heads: int, qkv_weight: Any, qkv_bias: Any,
                           proj_weight: Any, proj_bias: Any, use_gelu: bool, norm_first: bool, eps: float,
                           norm_weight_1: Any, norm_bias_1: Any, norm_weight_2: Any, norm_bias_2: Any,
                           ffn_weight_1: Any, ffn_bias_1: Any, ffn_weight_2: Any, ffn_bias_2: Any,
                           *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    numels = [w.numel() for w in (qkv_weight, proj_weight, ffn_weight_1, ffn_weight_2)]
    return encoder_layer_flops(_per_sequence_lengths(src), int(embed_dim), numels)


def _native_mha_raw(query: Any, key: Any, value: Any, embed_dim: int, *args: Any, out_val: Any = None,
                    **kwargs: Any) -> int:
    return multi_head_attention_flops(_per_sequence_lengths(query), _per_sequence_lengths(key), int(embed_dim))


_encoder_layer_fwd_raw._get_raw = True  # type: ignore[attr-defined]
_native_mha_raw._get_raw = True  # type: ignore[attr-defined]
_mkldnn_rnn_layer_backward_raw._get_raw = True  # type: ignore[attr-defined]
_grouped_mm_raw._get_raw = True  # type: ignore[attr-defined]
_scaled_grouped_mm_raw._get_raw = True  # type: ignore[attr-defined]

_FORMULAS: Mapping[str, Callable[..., int]] = {
    # replaces torch's convolution_backward formula (weight gradient of grouped convolutions over-counted)
    "convolution_backward": _conv_backward_flop,
    # matrix-vector / dot products (torch has no formula for these; ``A @ v`` dispatches to ``aten.mv``)
    "mv": _mv_flop,
    "addmv": _addmv_flop,
    "dot": _dot_flop,
    "vdot": _dot_flop,
    "addbmm": _addbmm_flop,
    "_addmm_activation": _addmm_like_flop,
    "_int_mm": _mm_like_flop,
    # CPU fused attention (the kernel F.scaled_dot_product_attention runs on CPU) and its backward
    "_scaled_dot_product_flash_attention_for_cpu": _sdpa_forward_flop,
    "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward_flop,
    # torch's fused-attention backward formulas count the flash recompute (2.5x); model FLOPs are 2x forward
    "_scaled_dot_product_flash_attention_backward": _sdpa_backward_flop,
    "_scaled_dot_product_efficient_attention_backward": _sdpa_backward_flop,
    "_scaled_dot_product_cudnn_attention_backward": _sdpa_backward_flop,
    # nn.TransformerEncoderLayer / nn.MultiheadAttention inference fast paths
    "_transformer_encoder_layer_fwd": _encoder_layer_fwd_raw,
    "_native_multi_head_attention": _native_mha_raw,
    # fused recurrent kernels: oneDNN (CPU), cuDNN and MIOpen (GPU)
    "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
    "mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward_raw,
    "_cudnn_rnn": _cudnn_rnn_flop,
    "_cudnn_rnn_backward": _cudnn_rnn_backward_flop,
    "miopen_rnn": _cudnn_rnn_flop,
    # grouped matmuls: mixture-of-experts layers (transformers' default "grouped_mm" experts)
    "_grouped_mm": _grouped_mm_raw,
    "_scaled_grouped_mm": _scaled_grouped_mm_raw,
}


def custom_flop_mapping() -> dict[Any, Callable[..., int]]:
    """``{aten op packet: formula}`` for ``FlopCounterMode(custom_mapping=...)``; ops this torch lacks are skipped."""
    import torch

    mapping: dict[Any, Callable[..., int]] = {}
    for name, formula in _FORMULAS.items():
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            mapping[packet] = formula
    return mapping


# ---------------------------------------------------------------------------------------------------------------
# Classification of ops that ran without a formula
# ---------------------------------------------------------------------------------------------------------------

COMPUTE_OPS_WITHOUT_FORMULA: frozenset[str] = frozenset(
    "aten." + name
    for name in (
        # distances, linear algebra, spectral: real compute, no FLOP formula in torch or here
        "_cdist_forward", "_cdist_backward", "_euclidean_dist", "cdist",
        "linalg_inv_ex", "linalg_solve_ex", "_linalg_solve_ex", "linalg_cholesky_ex", "cholesky_solve",
        "cholesky_inverse", "linalg_lu_factor_ex", "linalg_lu", "linalg_lu_solve", "lu_unpack",
        "linalg_solve_triangular", "triangular_solve", "linalg_qr", "geqrf", "orgqr", "ormqr",
        "_linalg_svd", "_linalg_eigh", "linalg_eig", "_linalg_det", "_linalg_slogdet", "linalg_householder_product",
        "linalg_matrix_exp", "linalg_ldl_factor_ex", "linalg_ldl_solve", "linalg_lstsq", "_linalg_eigvals",
        "_fft_r2c", "_fft_c2r", "_fft_c2c", "stft", "istft",
        "_embedding_bag", "_embedding_bag_forward_only", "_embedding_bag_backward",
        "_embedding_bag_dense_backward", "_embedding_bag_per_sample_weights_backward",
        "tensordot", "_trilinear", "bilinear", "kron", "chain_matmul", "linalg_multi_dot",
        "_convolution_double_backward", "conv_tbc", "conv_tbc_backward",
        "_nnpack_spatial_convolution", "mkldnn_convolution", "mkldnn_linear", "mkldnn_rnn",
        "mkldnn_rnn_backward", "miopen_rnn_backward", "_fused_rms_norm",
        "_weight_int4pack_mm", "_weight_int8pack_mm", "_sparse_mm", "_sparse_addmm", "sspaddmm",
        "_sparse_semi_structured_linear", "_sparse_semi_structured_mm",
        "_fused_moving_avg_obs_fq_helper",
    )
)
"""Ops known to carry matmul-class compute that no formula covers: reported by name, never silently zero."""

NO_COMPUTE_OPS: frozenset[str] = frozenset(
    "aten." + name
    for name in (
        # creation, copies, device/dtype moves, metadata
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
        "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "scalar_tensor",
        "arange", "linspace", "logspace", "eye", "tril_indices", "triu_indices", "lift_fresh", "lift_fresh_copy",
        "clone", "copy", "copy_", "_to_copy", "to", "_copy_from", "_copy_from_and_resize", "detach", "detach_",
        "fill", "fill_", "zero_", "resize_", "set_", "contiguous", "alias", "_local_scalar_dense",
        "_assert_async", "_assert_scalar", "_functional_assert_async", "_linalg_check_errors",
        "_has_compatible_shallow_copy_type", "is_same_size", "_assert_tensor_metadata", "record_stream",
        "_nested_tensor_from_mask", "_nested_tensor_from_mask_left_aligned", "_nested_tensor_size",
        "_nested_tensor_strides", "_nested_tensor_storage_offsets", "_nested_from_padded",
        "_nested_from_padded_and_nested_example", "_nested_view_from_buffer", "to_padded_tensor",
        "_nested_tensor_softmax_with_shape", "_transform_bias_rescale_qkv", "_masked_softmax",
        "_masked_softmax_backward", "_fused_sdp_choice",
        # shape manipulation (views and their copying variants)
        "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "expand_as", "permute", "t", "transpose",
        "transpose_", "unsqueeze", "unsqueeze_", "squeeze", "squeeze_", "flatten", "unflatten", "select",
        "slice", "narrow", "split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
        "unbind", "unfold", "as_strided", "as_strided_", "movedim", "diagonal", "view_as_real",
        "view_as_complex", "cat", "stack", "hstack", "vstack", "flip", "roll", "repeat", "repeat_interleave",
        "tile", "tril", "triu", "tril_", "triu_", "pad", "constant_pad_nd", "reflection_pad1d",
        "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
        "reflection_pad1d_backward", "reflection_pad2d_backward", "replication_pad2d_backward",
        "slice_backward", "select_backward", "unfold_backward", "diagonal_backward", "slice_scatter",
        "select_scatter", "diagonal_scatter", "as_strided_scatter", "im2col", "col2im", "pixel_shuffle",
        "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
        # indexing and gathers
        "index", "index_put", "index_put_", "_index_put_impl_", "index_select", "index_add", "index_add_",
        "index_copy", "index_copy_", "index_fill", "index_fill_", "gather", "scatter", "scatter_",
        "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_", "masked_fill", "masked_fill_",
        "masked_scatter", "masked_scatter_", "masked_select", "take", "put_", "nonzero", "nonzero_static",
        "argwhere", "where", "embedding", "embedding_dense_backward", "embedding_backward",
        "_embedding_bag_sparse_backward", "one_hot", "bucketize", "searchsorted", "unique", "_unique",
        "_unique2", "unique_consecutive", "unique_dim", "bincount", "histc", "sort", "argsort", "topk",
        "kthvalue", "median", "nanmedian", "mode", "max", "min", "cummax", "cummin", "_cummax_helper",
        "_cummin_helper", "searchsorted",
        # normalisation, softmax, losses (elementwise + reductions by convention)
        "native_layer_norm", "native_layer_norm_backward", "layer_norm", "native_batch_norm",
        "native_batch_norm_backward", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
        "_native_batch_norm_legit_no_training", "batch_norm_backward", "_batch_norm_with_update",
        "_batch_norm_with_update_functional", "_batch_norm_no_update", "batch_norm_stats",
        "batch_norm_elemt", "batch_norm_gather_stats", "batch_norm_gather_stats_with_counts",
        "batch_norm_backward_reduce", "batch_norm_backward_elemt", "cudnn_batch_norm",
        "cudnn_batch_norm_backward", "miopen_batch_norm", "miopen_batch_norm_backward", "native_group_norm",
        "native_group_norm_backward", "_fused_rms_norm_backward", "rms_norm", "_softmax", "_log_softmax",
        "_softmax_backward_data", "_log_softmax_backward_data", "_safe_softmax", "softmax", "log_softmax",
        "nll_loss_forward", "nll_loss_backward", "nll_loss2d_forward", "nll_loss2d_backward", "nll_loss_nd",
        "cross_entropy_loss", "mse_loss", "mse_loss_backward", "l1_loss", "smooth_l1_loss",
        "smooth_l1_loss_backward", "huber_loss", "huber_loss_backward", "binary_cross_entropy",
        "binary_cross_entropy_backward", "binary_cross_entropy_with_logits", "kl_div", "soft_margin_loss",
        "multilabel_margin_loss_forward", "multi_margin_loss", "_ctc_loss", "_ctc_loss_backward",
        # dropout and random
        "native_dropout", "native_dropout_backward", "dropout", "bernoulli", "bernoulli_", "rand", "rand_like",
        "randn", "randn_like", "randint", "randint_like", "randperm", "normal", "normal_", "uniform",
        "uniform_", "exponential_", "multinomial", "random_", "_fused_dropout", "_masked_scale",
        # pooling and resampling
        "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
        "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "avg_pool1d", "avg_pool2d",
        "avg_pool3d", "avg_pool2d_backward", "avg_pool3d_backward", "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
        "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool2d_backward",
        "adaptive_max_pool3d_backward", "mkldnn_max_pool2d", "_upsample_nearest_exact2d", "upsample_nearest1d",
        "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d",
        "upsample_linear1d", "upsample_trilinear3d", "_upsample_bilinear2d_aa", "upsample_nearest2d_backward",
        "upsample_bilinear2d_backward", "grid_sampler_2d", "grid_sampler_2d_backward", "affine_grid_generator",
        "max_unpool2d", "fractional_max_pool2d",
        # reductions and scans (also covered by the `reduction` tag where torch sets it)
        "sum", "mean", "prod", "amax", "amin", "aminmax", "argmax", "argmin", "var", "var_mean", "std",
        "std_mean", "norm", "linalg_vector_norm", "logsumexp", "cumsum", "cumsum_", "cumprod", "logcumsumexp",
        "_cumsum", "all", "any", "count_nonzero", "nansum", "_foreach_norm",
        # integer and comparison arithmetic torch does not tag pointwise (token and expert index maths)
        "floor_divide", "floor_divide_", "isin", "isnan", "isinf", "isfinite",
        # fused elementwise kernels (activation/cell math on precomputed gate matmuls, optimizer updates)
        "_thnn_fused_lstm_cell", "_thnn_fused_lstm_cell_backward_impl", "_thnn_fused_gru_cell",
        "_thnn_fused_gru_cell_backward", "_fused_adam", "_fused_adam_", "_fused_adamw", "_fused_adamw_",
        "_fused_sgd", "_fused_sgd_", "_amp_foreach_non_finite_check_and_unscale_", "_amp_update_scale_",
        "glu", "glu_backward", "gelu", "gelu_backward", "silu", "silu_backward", "hardswish",
        "hardswish_backward", "hardsigmoid", "hardsigmoid_backward", "elu", "elu_backward", "leaky_relu",
        "leaky_relu_backward", "softplus", "softplus_backward", "threshold_backward", "prelu",
        "_prelu_kernel", "_prelu_kernel_backward", "mish", "mish_backward", "rrelu_with_noise", "log_sigmoid_forward",
        "log_sigmoid_backward", "clamp", "clamp_", "clamp_min", "clamp_max", "_weight_norm_interface",
        "_weight_norm_interface_backward", "lerp", "lerp_", "addcmul", "addcmul_", "addcdiv", "addcdiv_",
        "_to_sparse", "_dimI", "_dimV", "_values", "_indices", "coalesce", "_coalesced_", "is_coalesced",
    )
)
"""Ops known to carry no matmul-class compute (creation, views, indexing, norms, softmax, losses, pooling, ...)."""

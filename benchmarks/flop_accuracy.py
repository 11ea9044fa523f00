"""FLOPs of one step counted by green_callbacks, by hand, and by the other counters people use.

Six small models, built from configs (no downloads), random inputs:

- ``mlp``     784-512-256-10, batch 32, cross-entropy;
- ``cnn``     conv(1→16, 3×3) / pool / conv(16→32, 3×3) / pool / linear(1568→10), 28×28 inputs, batch 32;
- ``bert``    BertForSequenceClassification, 2 layers, hidden 128, 2 heads, intermediate 512, vocabulary 1000,
              batch 4 × 64 tokens (transformers' default attention: SDPA);
- ``gpt2``    GPT2LMHeadModel with tied embeddings, 2 layers, width 128, 2 heads, vocabulary 50257, batch 2 × 128;
- ``vit``     ViTForImageClassification, 224², patch 16, width 192, 2 layers, 3 heads, 10 labels, batch 2;
- ``frozen``  the ``bert`` model with the encoder and embeddings frozen (only pooler and classifier train).

For each: the hand count (matmul/conv/attention FLOPs, 2 per multiply-accumulate, backward as executed — the
convention of docs/flops.md), green_callbacks' ``TorchFlopCounter`` (training step = forward + backward, and the
forward alone), fvcore ``FlopCountAnalysis``, thop ``profile``, ptflops ``get_model_complexity_info`` (both
backends), calflops ``calculate_flops`` (forward, and its training estimate ``include_backPropagation=True``) and
HF Trainer's ``total_flos`` increment for the step (``6 × numel(main input) × non-embedding parameters``).
fvcore, thop and ptflops report multiply-accumulates (MACs); the table shows them ×2 (FLOPs), and says so.

    python benchmarks/flop_accuracy.py [--models mlp,cnn,bert,gpt2,vit,frozen] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Case:
    """One model and batch: how to call it, and its hand-computed FLOPs."""

    name: str
    model: nn.Module
    inputs: dict[str, torch.Tensor]  # the keyword arguments of the forward (labels not included)
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    logits: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    hand_fwd: int
    hand_train: int
    hand_note: str
    hf_main_input: str | None = None


# ------------------------------------------------------------------------------------------------ cases


def mlp_case() -> Case:
    b = 32
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    x, y = torch.randn(b, 784), torch.randint(0, 10, (b,))
    fwd = 2 * b * (784 * 512 + 512 * 256 + 256 * 10)
    first_dx = 2 * b * 784 * 512  # the first layer's input needs no gradient: no dX
    return Case("mlp", model, {"x": x}, lambda m, i: nn.functional.cross_entropy(m(i["x"]), y),
                lambda m, i: m(i["x"]), fwd, 3 * fwd - first_dx, "3·fwd − first layer's dX")


def cnn_case() -> Case:
    b = 32
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )
    x, y = torch.randn(b, 1, 28, 28), torch.randint(0, 10, (b,))
    conv1 = 2 * b * 16 * 1 * 9 * 28 * 28
    conv2 = 2 * b * 32 * 16 * 9 * 14 * 14
    fc = 2 * b * 1568 * 10
    fwd = conv1 + conv2 + fc
    return Case("cnn", model, {"x": x}, lambda m, i: nn.functional.cross_entropy(m(i["x"]), y),
                lambda m, i: m(i["x"]), fwd, 3 * fwd - conv1, "3·fwd − first conv's dX")


def _bert(frozen: bool) -> Case:
    import transformers

    b, s, h, inter, layers = 4, 64, 128, 512, 2
    config = transformers.BertConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=inter, vocab_size=1000, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    inputs = {"input_ids": torch.randint(0, 1000, (b, s)), "attention_mask": torch.ones(b, s, dtype=torch.long)}
    labels = torch.randint(0, 2, (b,))
    t = b * s
    per_layer = 4 * 2 * t * h * h + 2 * 2 * t * h * inter + 2 * 2 * b * s * s * h  # q,k,v,o; ffn; QKᵀ and A·V
    pooler, classifier = 2 * b * h * h, 2 * b * h * 2
    fwd = layers * per_layer + pooler + classifier
    if frozen:
        for p in model.bert.parameters():
            p.requires_grad_(False)
        for p in model.bert.pooler.parameters():
            p.requires_grad_(True)
        # backward: classifier dW + dX (the pooler trains), pooler dW only (its input is frozen)
        train, note = fwd + 2 * classifier + pooler, "fwd + classifier dW,dX + pooler dW"
    else:
        train, note = 3 * fwd, "3·fwd (embeddings train, so every layer needs dX)"
    return Case("frozen" if frozen else "bert", model, inputs,
                lambda m, i: m(**i, labels=labels).loss, lambda m, i: m(**i).logits, fwd, train, note, "input_ids")


def bert_case() -> Case:
    return _bert(frozen=False)


def frozen_case() -> Case:
    return _bert(frozen=True)


def gpt2_case() -> Case:
    import transformers

    b, s, h, layers, v = 2, 128, 128, 2, 50257
    config = transformers.GPT2Config(n_embd=h, n_layer=layers, n_head=2, vocab_size=v, n_positions=256,
                                     tie_word_embeddings=True)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight, "expected tied embeddings"
    inputs = {"input_ids": torch.randint(0, v, (b, s))}
    t = b * s
    per_layer = 2 * t * h * 3 * h + 2 * t * h * h + 2 * t * h * 4 * h * 2 + 2 * 2 * b * s * s * h
    fwd = layers * per_layer + 2 * t * h * v  # + the LM head
    return Case("gpt2", model, inputs, lambda m, i: m(**i, labels=i["input_ids"]).loss,
                lambda m, i: m(**i).logits, fwd, 3 * fwd, "3·fwd; causal mask not discounted", "input_ids")


def vit_case() -> Case:
    import transformers

    b, img, patch, h, layers = 2, 224, 16, 192, 2
    config = transformers.ViTConfig(image_size=img, patch_size=patch, hidden_size=h, num_hidden_layers=layers,
                                    num_attention_heads=3, intermediate_size=4 * h, num_labels=10)
    model = transformers.ViTForImageClassification(config)
    inputs = {"pixel_values": torch.randn(b, 3, img, img)}
    labels = torch.randint(0, 10, (b,))
    n = (img // patch) ** 2
    s = n + 1  # + the CLS token
    t = b * s
    patch_conv = 2 * b * h * 3 * patch * patch * n
    per_layer = 4 * 2 * t * h * h + 2 * 2 * t * h * 4 * h + 2 * 2 * b * s * s * h
    fwd = patch_conv + layers * per_layer + 2 * b * h * 10
    return Case("vit", model, inputs, lambda m, i: m(**i, labels=labels).loss, lambda m, i: m(**i).logits,
                fwd, 3 * fwd - patch_conv, "3·fwd − patch conv's dX", "pixel_values")


CASES = {"mlp": mlp_case, "cnn": cnn_case, "bert": bert_case, "gpt2": gpt2_case, "vit": vit_case,
         "frozen": frozen_case}


# ------------------------------------------------------------------------------------------------ counters


class _Logits(nn.Module):
    """Positional-argument wrapper returning logits (what hook- and trace-based tools expect)."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.inner = case.model
        self._names = list(case.inputs)
        self._logits = case.logits

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self._names, args, strict=False))
        named.update(kwargs)
        return self._logits(self.inner, named)


def _fresh(case: Case) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    wrapped = _Logits(case)
    wrapped = copy.deepcopy(wrapped).eval()  # peers add hooks/buffers: never touch the original
    return wrapped, tuple(case.inputs.values())


def ours(case: Case) -> dict[str, Any]:
    from green_callbacks.core.flops import TorchFlopCounter

    counter = TorchFlopCounter()
    case.model.train()
    train = counter.count_train_step(case.model, case.loss, case.inputs)
    case.model.eval()
    fwd = counter.count_eval_step(case.model, case.logits, case.inputs)
    case.model.train()
    return {"fwd": fwd.flops, "train": train.flops, "method": train.method,
            "uncounted": list(train.uncounted_ops), "by_op": dict(train.by_op)}


def fvcore_count(case: Case) -> dict[str, Any]:
    from fvcore.nn import FlopCountAnalysis

    model, args = _fresh(case)
    analysis = FlopCountAnalysis(model, args)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return {"fwd_macs": int(analysis.total()), "unsupported": dict(analysis.unsupported_ops())}


def thop_count(case: Case) -> dict[str, Any]:
    from thop import profile

    model, args = _fresh(case)
    macs, _ = profile(model, inputs=args, verbose=False)
    return {"fwd_macs": int(macs)}


def ptflops_count(case: Case, backend: str) -> dict[str, Any]:
    from ptflops import get_model_complexity_info

    model, _ = _fresh(case)
    names = list(case.inputs)
    macs, _ = get_model_complexity_info(model, (1,), as_strings=False, print_per_layer_stat=False,
                                        input_constructor=lambda _res: {n: case.inputs[n] for n in names},
                                        backend=backend, ost=io.StringIO())
    return {"fwd_macs": None if macs is None else int(macs)}


def calflops_count(case: Case) -> dict[str, Any]:
    from calflops import calculate_flops

    out = {}
    for train in (False, True):
        model, args = _fresh(case)
        flops, macs, _ = calculate_flops(model, args=list(args), include_backPropagation=train,
                                         print_results=False, print_detailed=False, output_as_string=False)
        out["train" if train else "fwd"] = int(flops)
        if not train:
            out["fwd_macs"] = int(macs)
    return out


def hf_total_flos(case: Case) -> dict[str, Any]:
    """The increment ``Trainer.floating_point_ops`` adds to ``state.total_flos`` for this batch (transformers 5.x)."""
    if case.hf_main_input is None:
        return {"train": None, "note": "not a transformers model"}
    import transformers

    trainer_like = type("T", (), {"model": case.model})()
    return {"train": int(transformers.Trainer.floating_point_ops(trainer_like, case.inputs)),
            "non_embedding_params": case.model.num_parameters(exclude_embeddings=True),
            "main_input_numel": case.inputs[case.hf_main_input].numel()}


TOOLS: dict[str, Callable[[Case], dict[str, Any]]] = {
    "green_callbacks": ours,
    "fvcore": fvcore_count,
    "thop": thop_count,
    "ptflops-pytorch": lambda c: ptflops_count(c, "pytorch"),
    "ptflops-aten": lambda c: ptflops_count(c, "aten"),
    "calflops": calflops_count,
    "hf-6NT": hf_total_flos,
}


def run_tool(tool: str, case: Case) -> dict[str, Any]:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return TOOLS[tool](case)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}


# ------------------------------------------------------------------------------------------------ report


def _ratio(value: float | None, ref: int) -> str:
    if value is None:
        return "-"
    return f"{value / ref:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--json", help="write every count to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    results: dict[str, dict[str, Any]] = {}
    for name in args.models.split(","):
        case = CASES[name]()
        row: dict[str, Any] = {"hand_fwd": case.hand_fwd, "hand_train": case.hand_train, "hand_note": case.hand_note}
        for tool in TOOLS:
            row[tool] = run_tool(tool, case)
        results[name] = row
        print(f"{name}: " + json.dumps({k: v for k, v in row.items()}, default=str)[:1500], flush=True)

    print("\nForward pass (FLOPs; MAC-reporting tools ×2), ratio to the hand count in brackets:\n")
    fwd_tools = ["green_callbacks", "fvcore", "thop", "ptflops-pytorch", "ptflops-aten", "calflops"]
    print("| model | hand | " + " | ".join(f"{t}{' (MAC×2)' if t not in ('green_callbacks', 'calflops') else ''}"
                                           for t in fwd_tools) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in fwd_tools) + " |")
    for name, row in results.items():
        cells = []
        for tool in fwd_tools:
            r = row[tool]
            if "error" in r:
                cells.append(f"error ({r['error'][:60]})")
                continue
            value = r.get("fwd") if tool in ("green_callbacks", "calflops") else 2 * r["fwd_macs"]
            cells.append(f"{value:,} ({_ratio(value, row['hand_fwd'])})")
        print(f"| {name} | {row['hand_fwd']:,} | " + " | ".join(cells) + " |")

    print("\nTraining step, forward + backward (FLOPs), ratio to the hand count in brackets:\n")
    print("| model | hand | hand rule | green_callbacks | calflops (fwd×3) | fwd×3 of fvcore MAC×2 | HF 6·N·T |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for name, row in results.items():
        def cell(value: Any, ref: int = row["hand_train"]) -> str:
            return "-" if value is None else f"{value:,} ({_ratio(value, ref)})"

        fv = row["fvcore"]
        fv3 = None if "error" in fv else 6 * fv["fwd_macs"]
        print(f"| {name} | {row['hand_train']:,} | {row['hand_note']} | {cell(row['green_callbacks'].get('train'))} "
              f"| {cell(row['calflops'].get('train'))} | {cell(fv3)} | {cell(row['hf-6NT'].get('train'))} |")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()

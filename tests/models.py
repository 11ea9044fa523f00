"""The small models and datasets the tests share: one definition each, the tests' differences as parameters.

Importable only where torch is: a test file imports it after ``pytest.importorskip("torch")``, so that without torch
the file skips instead of failing collection. Lightning, Keras and transformers are imported by the factory that needs
them. Every factory builds exactly what the tests' own copies built, in the same order (the same draws from torch's
default generator, so the same initial weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Transform = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``transform(model, x)``: what the model's forward does to its input first (a noise term, a probe)."""


# ------------------------------------------------------------------------------------------------ torch networks
class Branch(nn.Module):
    """A branch on a data value: a second matmul only where the batch sums above zero (same shapes always)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        if x.sum() > 0:
            h = self.b(h)
        return h


class CappedLength(nn.Module):
    """Quadratic in the sequence length up to ``cap``, then constant (the length is cut to ``cap``): FLOPs that are not
    one polynomial in the length, so predictions past the cap are wrong."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.cap = cap

    def forward(self, x):
        x = x[:, : self.cap]
        return self.lin(x @ x.transpose(1, 2) @ x)


class Blocks(nn.Module):
    """Two MLP blocks, each checkpointed (``reentrant``: True / False, torch's ``use_reentrant``) or not (``None``)."""

    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)) for _ in range(2))
        self.head = nn.Linear(16, 1)
        self.reentrant = reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        h = self.embed(x)
        for block in self.blocks:
            h = block(h) if self.reentrant is None else checkpoint(block, h, use_reentrant=self.reentrant)
        return self.head(h)


def mlp(n_in: int = 4, n_hidden: int = 8, n_out: int = 2, *, seed: int | None = None) -> nn.Sequential:
    """Linear(n_in → n_hidden) – ReLU – Linear(n_hidden → n_out); ``seed``: torch's default generator is seeded
    first, so every call starts from the same weights."""
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def linear(n_in: int = 4, n_out: int = 2, *, seed: int | None = None) -> nn.Linear:
    """One Linear(n_in → n_out); ``seed`` as in :func:`mlp`."""
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Linear(n_in, n_out)


def tiny_bert(*, vocab: int = 100, hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int = 64,
              labels: int = 2, max_positions: int = 32) -> Any:
    """A tiny ``BertForSequenceClassification`` from a config (no weights downloaded), seeded with 0, with eager
    attention: plain matmuls that torch's ``FlopCounterMode`` counts on CPU (CPU SDPA counts 0)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max_positions, num_labels=labels)
    config._attn_implementation = "eager"
    return BertForSequenceClassification(config)


# ------------------------------------------------------------------------------------------------ Lightning
def lightning_module(
    net: nn.Module,
    *,
    pl: Any = None,
    steps: Sequence[str] = ("training", "validation"),
    loss: Loss = nn.functional.cross_entropy,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.SGD,
    lr: float = 0.1,
    hparams: dict[str, Any] | None = None,
    transform: Transform | None = None,
    generator: bool = False,
    before_training_step: Callable[[int, int], None] | None = None,
    log_train_loss: bool = False,
    keep_val_losses: bool = False,
    predict: Callable[[torch.Tensor], Any] | None = None,
    tick: Callable[[float], None] | None = None,
    ticks: dict[str, float] | None = None,
) -> Any:
    """A LightningModule around ``net``, with only the ``steps`` asked for (of "training", "validation", "test",
    "predict"): a step computes ``loss(self(x), y)`` on the ``(x, y)`` batch, the training step returns it, the
    evaluation steps log it as ``val_loss`` / ``test_loss``; ``predict_step`` returns ``predict(self(x))``
    (``self(x)`` without ``predict``). The optimizer is ``optimizer(self.parameters(), lr=lr)``.

    - ``pl``: ``lightning.pytorch`` (the default) or ``pytorch_lightning``;
    - ``hparams``: saved with ``save_hyperparameters`` (they reach the run record);
    - ``transform(module, x)``: applied to the input in ``forward`` (a noise term); ``generator``: the module holds
      a dedicated ``torch.Generator`` as ``self.generator`` (for ``transform`` to draw from);
    - ``before_training_step(epoch, batch_idx)``: called first in each training step (a fault: it may raise);
    - ``log_train_loss``: the training loss is logged as ``train_loss`` per epoch;
    - ``keep_val_losses``: each validation loss is kept (detached copy) in ``self.val_losses``;
    - ``tick(seconds)`` with ``ticks`` = {hook: seconds}: the fake clock moves at the start of each batch, in the
      module's own batch hooks ("train", "validation", "test", "predict"; "validate": the validation batches of a
      ``trainer.validate`` outside ``fit``, when they take another time than those of ``fit``).

    ``self.calls`` lists the steps run ("train", "val"). The options stay in the class's closure, as in a module
    written by hand: a deep copy of the module copies none of them.
    """
    if pl is None:
        import lightning.pytorch as pl
    steps, ticks = set(steps), dict(ticks or {})
    unknown = steps - {"training", "validation", "test", "predict"}
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            if hparams is not None:
                self.save_hyperparameters(hparams)
            self.net = net
            if generator:
                self.generator = torch.Generator()
            self.calls: list[str] = []
            self.val_losses: list[torch.Tensor] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x if transform is None else transform(self, x))

        if "training" in steps:

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                if before_training_step is not None:
                    before_training_step(self.current_epoch, batch_idx)
                self.calls.append("train")
                x, y = batch
                value = loss(self(x), y)
                if log_train_loss:
                    self.log("train_loss", value, on_epoch=True, on_step=False)
                return value

        if "validation" in steps:

            def validation_step(self, batch: Any, batch_idx: int) -> None:
                self.calls.append("val")
                x, y = batch
                value = loss(self(x), y)
                if keep_val_losses:
                    self.val_losses.append(value.detach().clone())
                self.log("val_loss", value)

        if "test" in steps:

            def test_step(self, batch: Any, batch_idx: int) -> None:
                x, y = batch
                self.log("test_loss", loss(self(x), y))

        if "predict" in steps:

            def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
                out = self(batch[0])
                return out if predict is None else predict(out)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer(self.parameters(), lr=lr)

        # The clock moves in the batch hooks, not in the steps: a step may be replayed on a meta copy.
        if tick is not None and "train" in ticks:

            def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
                tick(ticks["train"])

        if tick is not None and "validation" in ticks:

            def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                outside_fit = "validate" in ticks and self.trainer.state.fn != "fit"
                tick(ticks["validate"] if outside_fit else ticks["validation"])

        if tick is not None and "test" in ticks:

            def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                tick(ticks["test"])

        if tick is not None and "predict" in ticks:

            def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
                tick(ticks["predict"])

    return Module()


# ------------------------------------------------------------------------------------------------ transformers
class HFModel(nn.Module):
    """``net`` as a model the HF Trainer trains: ``forward(x, labels)`` returns ``{"logits"}``, and ``"loss"``
    (``loss(logits, labels)``) when there are labels. ``transform(model, x)`` is applied to the input first;
    ``generator``: the model holds a dedicated ``torch.Generator`` as ``self.generator``; ``calls`` counts the
    forwards."""

    def __init__(self, net: nn.Module, *, loss: Loss = nn.functional.cross_entropy,
                 transform: Transform | None = None, generator: bool = False) -> None:
        super().__init__()
        self.net = net
        self.loss_of = loss
        self.transform = transform
        if generator:
            self.generator = torch.Generator()
        self.calls = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        logits = self.net(x if self.transform is None else self.transform(self, x))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = self.loss_of(logits, labels)
        return out


# ------------------------------------------------------------------------------------------------ datasets
class Samples(torch.utils.data.Dataset):
    """``(x, y)`` as the dicts the HF Trainer takes: ``{"x": x[i], "labels": y[i]}``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Tokens(torch.utils.data.Dataset):
    """Random token sequences of the given ``lengths`` (no padding) with random labels, from ``seed``: per sample
    ``randint(1, vocab, (length,))``, then ``randint(0, labels, (n,))``; ``attention_mask``: each item carries an
    all-ones mask."""

    def __init__(self, lengths: Sequence[int], *, vocab: int, labels: int = 2, seed: int = 0,
                 attention_mask: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.lengths = list(lengths)
        self.x = [torch.randint(1, vocab, (k,), generator=g) for k in self.lengths]
        self.y = torch.randint(0, labels, (len(self.lengths),), generator=g)
        self.attention_mask = attention_mask

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.attention_mask:
            return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.y[i]}
        return {"input_ids": self.x[i], "labels": self.y[i]}


# ------------------------------------------------------------------------------------------------ Keras
def keras_mlp(n_in: int = 4, n_hidden: int | None = 8, n_out: int = 2, *, first: Sequence[Any] = (),
              seed: int | None = None) -> Any:
    """``keras.Sequential``: Input(n_in), the ``first`` layers, Dense(n_hidden, relu) (none when ``n_hidden`` is
    None), Dense(n_out); uncompiled. ``seed``: ``keras.utils.set_random_seed`` first."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    hidden = [] if n_hidden is None else [keras.layers.Dense(n_hidden, activation="relu")]
    return keras.Sequential([keras.Input((n_in,)), *first, *hidden, keras.layers.Dense(n_out)])

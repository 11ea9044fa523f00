"""The smallest real adapter: a toy training framework with callbacks, and its ``GreenCallback`` (docs/adapters.md).

    python examples/minimal_adapter.py [--epochs 2] [--output-dir green_runs]

``ToyTrainer`` stands for a fifth framework: it trains a torch model and calls its callbacks' hooks by name
(``on_fit_start``, ``on_epoch_start``, ``on_train_batch_start``, ``on_before_optimizer_step``,
``on_train_batch_end``, ``on_validation_start``/``_batch_start``/``_batch_end``/``_end``, ``on_epoch_end``,
``on_fit_end``, ``on_exception``). ``GreenCallback`` below is all an adapter consists of: the shared constructor
(:class:`~green_callbacks._adapter.GreenCallbackBase`), one engine call per hook, and the framework state those
calls need (the output folder, the device, the planned epochs, the logs dict). Every number comes from the engine.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from green_callbacks._adapter import GreenCallbackBase
from green_callbacks.core.devices import torch_devices
from green_callbacks.core.flops import FlopTracker


class GreenCallback(GreenCallbackBase):
    """Energy, emissions and FLOPs of a ``ToyTrainer`` fit, in ``logs`` every epoch and in the run record."""

    framework = "toy"

    def on_fit_start(self, trainer: ToyTrainer) -> None:
        self._engine.begin_fit()
        self._engine.flops.use(FlopTracker())  # one per fit: FLOPs observed on the first step of each batch shape
        self._engine.start(output_dir=trainer.output_dir, planned_epochs=trainer.max_epochs,
                           **torch_devices(trainer.device).start_kwargs())

    def on_epoch_start(self, trainer: ToyTrainer, epoch: int) -> None:
        self._engine.epoch_start(epoch, trainer.model)

    def on_train_batch_start(self, trainer: ToyTrainer, batch: Any) -> None:
        if self._engine.flops.begin("train", trainer.model, batch, counted=batch):  # a new shape: watched
            self._watch_backward("on_before_optimizer_step")  # its count stops before the optimizer runs

    def on_train_batch_end(self, trainer: ToyTrainer, batch: Any) -> None:
        self._engine.flops.end()

    def on_validation_start(self, trainer: ToyTrainer) -> None:
        self._engine.eval_start()

    def on_validation_batch_start(self, trainer: ToyTrainer, batch: Any) -> None:
        self._engine.flops.begin("eval", trainer.model, batch)

    def on_validation_batch_end(self, trainer: ToyTrainer, batch: Any) -> None:
        self._engine.flops.end()

    def on_validation_end(self, trainer: ToyTrainer) -> None:
        self._engine.eval_end()

    def on_epoch_end(self, trainer: ToyTrainer, logs: dict[str, float]) -> None:
        metrics = self._engine.epoch_end(logs)
        if metrics is not None:
            logs.update(metrics)  # the framework's loggers see the green/ keys
        if self._engine.should_stop:  # a budget would be exceeded (budget_action="stop")
            trainer.should_stop = True

    def on_fit_end(self, trainer: ToyTrainer) -> None:
        self._engine.finish("completed")

    def on_exception(self, trainer: ToyTrainer, error: BaseException) -> None:
        self._engine.fail(error)


class ToyTrainer:
    """A toy framework: epochs of SGD steps and a validation pass, hooks looked up by name on every call."""

    def __init__(self, model: nn.Module, *, max_epochs: int, callbacks: Iterable[Any] = (), output_dir: str = ".",
                 device: Any = "cpu") -> None:
        self.model, self.max_epochs, self.callbacks = model, max_epochs, list(callbacks)
        self.output_dir, self.device = output_dir, torch.device(device)
        self.should_stop = False
        self.history: list[dict[str, float]] = []

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, hook, None)
            if fn is not None:
                fn(self, *args)

    def fit(self, train: list[tuple[torch.Tensor, torch.Tensor]], val: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self._call("on_fit_start")
        try:
            for epoch in range(self.max_epochs):
                self._call("on_epoch_start", epoch)
                self.model.train()
                for batch in train:
                    self._call("on_train_batch_start", batch)
                    x, y = batch
                    nn.functional.cross_entropy(self.model(x), y).backward()
                    self._call("on_before_optimizer_step")
                    optimizer.step()
                    optimizer.zero_grad()
                    self._call("on_train_batch_end", batch)
                self.model.eval()
                self._call("on_validation_start")
                val_loss = 0.0
                with torch.no_grad():
                    for batch in val:
                        self._call("on_validation_batch_start", batch)
                        x, y = batch
                        val_loss += float(nn.functional.cross_entropy(self.model(x), y)) / len(val)
                        self._call("on_validation_batch_end", batch)
                self._call("on_validation_end")
                logs = {"val_loss": val_loss}
                self._call("on_epoch_end", logs)
                self.history.append(logs)
                if self.should_stop:
                    break
        except BaseException as err:
            self._call("on_exception", err)
            raise
        self._call("on_fit_end")


def data(n: int, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def main(argv: list[str] | None = None, **callback_kwargs: Any) -> GreenCallback:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output-dir", default="green_runs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    callback = GreenCallback(output_dir=args.output_dir, **(callback_kwargs or {"country": "FR"}))
    trainer = ToyTrainer(model, max_epochs=args.epochs, callbacks=[callback], output_dir=args.output_dir)
    trainer.fit(data(12, 4, seed=0), data(8, 4, seed=1))
    print(f"run record: {callback.record_path}")
    for epoch, logs in enumerate(trainer.history):
        print(epoch, {k: v for k, v in logs.items() if k in ("green/epoch_energy_kwh", "green/epoch_train_flops")})
    return callback


if __name__ == "__main__":
    main()

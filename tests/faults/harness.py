"""One tiny real training per adapter (Lightning, Keras on torch, HF Trainer), with faults injected at chosen steps.

Every adapter trains the same MLP 4 → 8 → 1 (mean squared error) on 16 synthetic samples in batches of 4, so an
epoch is :data:`STEPS_PER_EPOCH` = 4 training steps, followed by a validation pass over 8 samples. The first layer
of the model is a probe: on every *real* training forward (not a FLOP-counting replay on meta tensors, not
validation) it calls the current :class:`StepProbe` with ``(epoch, step)``, and the probe calls the test's action.
An action can raise (an exception in the training step, a ``KeyboardInterrupt``) or change the fake hardware (a
GPU lost, a RAPL zone gone) at an exact point of the run, in the same way for the three frameworks.

:func:`train` runs one ``fit`` and returns a :class:`Run`: the callback, what escaped ``fit`` (if anything), every
warning raised meanwhile, and the run record read back from disk.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from green_callbacks.core.record import read_record
from tests.models import HFModel, Samples, keras_mlp, lightning_module

ADAPTERS = ("lightning", "keras", "transformers")
N_IN, N_HIDDEN = 4, 8
N_TRAIN, N_VAL, BATCH = 16, 8, 4
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 4
EPOCHS = 3

Action = Callable[[int, int], None]
"""``action(epoch, step)``: called before the forward of training step ``step`` (0-based) of ``epoch``."""


class StepProbe:
    """Counts the real training forwards and calls ``action(epoch, step)`` before each one."""

    def __init__(self, action: Action | None = None) -> None:
        self.action = action
        self.steps = 0

    def __call__(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or x.is_meta:
            return  # Keras' symbolic build, or green_callbacks counting FLOPs on a meta copy (a real step observed
            # by the FLOP counter is a real step: it counts)
        epoch, step = divmod(self.steps, STEPS_PER_EPOCH)
        self.steps += 1
        if self.action is not None:
            self.action(epoch, step)

    @property
    def epochs_started(self) -> int:
        return -(-self.steps // STEPS_PER_EPOCH)


_PROBE = StepProbe()


def _probe(x: Any) -> None:
    _PROBE(x)


class _ProbeModule(nn.Module):
    """Identity layer that reports real training forwards to the current probe (looked up at call time, so a
    deep copy of the model made for FLOP counting never copies the probe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            _probe(x)
        return x


def torch_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_ProbeModule(), nn.Linear(N_IN, N_HIDDEN), nn.ReLU(), nn.Linear(N_HIDDEN, 1))


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, N_IN, generator=g)
    return x, x.sum(dim=1, keepdim=True)


def pairs(n: int, seed: int, *, as_dict: bool = False) -> Dataset:
    """``(x, y)`` pairs of :func:`data`; ``as_dict`` gives HF-style ``{"x": ..., "labels": ...}`` items."""
    return Samples(*data(n, seed)) if as_dict else TensorDataset(*data(n, seed))


@dataclass
class Run:
    """What one ``fit`` left behind."""

    adapter: str
    callback: Any
    probe: StepProbe
    error: BaseException | None
    caught: list[warnings.WarningMessage]
    root: Path
    framework_object: Any = None  # the Trainer / the Keras model / the HF Trainer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        return read_record(self.callback.record_path)

    def green_warnings(self) -> list[str]:
        """The text of every warning green_callbacks raised during the run."""
        return [str(w.message) for w in self.caught if _is_ours(w)]


def _is_ours(w: warnings.WarningMessage) -> bool:
    text = str(w.message)
    return "green_callbacks" in text or "GPU energy" in text


VALIDATION_LOSS = {"lightning": "val_loss", "keras": "val_loss", "transformers": "eval_loss"}


def make_callback(adapter: str, **kwargs: Any) -> Any:
    kwargs.setdefault("carbon_intensity", 100.0)
    # named, as a user who wants convergence does: the notice that the validation loss was chosen by default
    # (tests/test_usability.py) is not one of the faults these tests count warnings of
    kwargs.setdefault("monitor", VALIDATION_LOSS[adapter])
    if adapter == "lightning":
        from green_callbacks.lightning import GreenCallback
    elif adapter == "keras":
        from green_callbacks.keras import GreenCallback
    elif adapter == "transformers":
        from green_callbacks.transformers import GreenCallback
    else:
        raise ValueError(f"adapter must be one of {ADAPTERS}, got {adapter!r}")
    return GreenCallback(**kwargs)


def train(
    adapter: str,
    root: Path,
    *,
    callback: Any = None,
    action: Action | None = None,
    epochs: int = EPOCHS,
    num_workers: int = 0,
    resume: Any = None,
    checkpoint: bool = False,
    with_callback: bool = True,
    **callback_kwargs: Any,
) -> Run:
    """Train ``adapter`` for ``epochs`` epochs in ``root``, with ``action`` injected at each training step.

    ``callback``: a GreenCallback to reuse (else one is made from ``callback_kwargs``); ``with_callback=False``
    trains without one (the baseline a fault must not change). ``checkpoint=True`` saves a checkpoint every epoch
    (Lightning ``ModelCheckpoint``, HF ``save_strategy="epoch"``); ``resume`` is what each framework resumes from.
    The exception that escaped ``fit`` (``KeyboardInterrupt`` and ``SystemExit`` too) is returned, not raised.
    """
    global _PROBE
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    probe = _PROBE = StepProbe(action)
    runner = {"lightning": _lightning, "keras": _keras, "transformers": _transformers}[adapter]
    sigint = signal.getsignal(signal.SIGINT)
    error: BaseException | None = None
    extra: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if with_callback and callback is None:  # inside: what the constructor warns (e.g. a live look-up) counts
            callback = make_callback(adapter, **callback_kwargs)
        try:
            runner(root, [callback] if with_callback else [], epochs, num_workers, resume, checkpoint, extra)
        except BaseException as err:
            error = err
        finally:
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a KeyboardInterrupt
            _PROBE = StepProbe()
    return Run(adapter, callback, probe, error, list(caught), root, extra.get("object"), extra)


# ----------------------------------------------------------------------------------------------- Lightning


def _lightning(root: Path, callbacks: list[Any], epochs: int, num_workers: int, resume: Any, checkpoint: bool,
               extra: dict[str, Any]) -> None:
    import lightning.pytorch as pl

    more: list[Any] = []
    if checkpoint:
        more.append(pl.callbacks.ModelCheckpoint(dirpath=str(root / "ckpt"), save_top_k=-1, every_n_epochs=1))
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(str(root), name="logs"),
        callbacks=[*callbacks, *more], default_root_dir=str(root), enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=checkpoint,
    )
    extra["object"] = trainer
    kwargs = {"num_workers": num_workers, "persistent_workers": num_workers > 0}
    trainer.fit(
        lightning_module(torch_net(), loss=nn.functional.mse_loss, log_train_loss=True),
        DataLoader(pairs(N_TRAIN, 0), batch_size=BATCH, **kwargs),
        DataLoader(pairs(N_VAL, 1), batch_size=BATCH, **kwargs),
        ckpt_path=resume,
    )


# ----------------------------------------------------------------------------------------------- Keras


_KERAS_PROBE: Any = None


def _keras_probe_layer() -> Any:
    """The Keras twin of ``_ProbeModule``, registered so that Keras can deep-copy the model (FLOP counting)."""
    global _KERAS_PROBE
    if _KERAS_PROBE is None:
        import keras

        @keras.saving.register_keras_serializable(package="green_faults")
        class ProbeLayer(keras.layers.Layer):
            def call(self, x: Any, training: Any = None) -> Any:
                if training:
                    _probe(x)
                return x

        _KERAS_PROBE = ProbeLayer
    return _KERAS_PROBE()


def keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras_mlp(N_IN, N_HIDDEN, 1, first=[_keras_probe_layer()])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _keras(root: Path, callbacks: list[Any], epochs: int, num_workers: int, resume: Any, checkpoint: bool,
           extra: dict[str, Any]) -> None:
    """``resume``: a ``keras.callbacks.BackupAndRestore`` folder (the Keras way to resume a crashed fit)."""
    import keras

    model = resume if isinstance(resume, keras.Model) else keras_model()
    extra["object"] = model
    more = [keras.callbacks.BackupAndRestore(str(root / "backup"))] if checkpoint else []
    if num_workers:
        train_data: Any = DataLoader(pairs(N_TRAIN, 0), batch_size=BATCH, num_workers=num_workers,
                                     persistent_workers=True)
        val: Any = DataLoader(pairs(N_VAL, 1), batch_size=BATCH, num_workers=num_workers,
                              persistent_workers=True)
        model.fit(train_data, validation_data=val, epochs=epochs, verbose=0, callbacks=[*callbacks, *more])
        return
    x, y = (t.numpy() for t in data(N_TRAIN, 0))
    xv, yv = (t.numpy() for t in data(N_VAL, 1))
    model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=BATCH, verbose=0, shuffle=False,
              callbacks=[*callbacks, *more])


# ----------------------------------------------------------------------------------------------- transformers


def _transformers(root: Path, callbacks: list[Any], epochs: int, num_workers: int, resume: Any, checkpoint: bool,
                  extra: dict[str, Any]) -> None:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args = TrainingArguments(
        str(root / "hf"), num_train_epochs=epochs, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="epoch" if checkpoint else "no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=0.1, optim="sgd",
        dataloader_num_workers=num_workers, dataloader_persistent_workers=num_workers > 0,
    )
    trainer = Trainer(model=HFModel(torch_net(), loss=nn.functional.mse_loss), args=args,
                      train_dataset=pairs(N_TRAIN, 0, as_dict=True), eval_dataset=pairs(N_VAL, 1, as_dict=True),
                      callbacks=callbacks)
    extra["object"] = trainer
    trainer.train(resume_from_checkpoint=resume)


def epochs_of(record: dict[str, Any]) -> list[int]:
    return [row["epoch"] for row in record["epochs"]]


def gpu_energy_j(record: dict[str, Any]) -> list[float | None]:
    return [row["component_energy_j"].get("gpu") for row in record["epochs"]]


def only(messages: Sequence[str], pattern: str) -> str:
    """The one message containing ``pattern`` (the test fails if there are none or several)."""
    found = [m for m in messages if pattern in m]
    assert len(found) == 1, f"expected one message containing {pattern!r}, got {len(found)}: {messages}"
    return found[0]

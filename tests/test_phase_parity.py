"""A phase with the callback computes what it computes without it, in all three front ends.

Each phase (Lightning ``validate`` / ``test`` / ``predict``, HF ``evaluate`` / ``predict``, Keras ``evaluate`` /
``predict`` on the torch backend) runs once without and once with ``GreenCallback``, on a model whose forward draws
from every generator a user can see: torch's default one, a dedicated ``torch.Generator`` held by the model, NumPy's
and Python's. Compared exactly: how often the user's forward ran, every generator's state after the phase, what the
phase returned, and the weights of a ``fit`` that follows it (bit-identical). The callback's phase FLOPs are checked
by hand too (they are observed on the real batches, not re-run): a Linear 4 -> 2 is 2·4·2 = 16 FLOPs per sample.

Data: 10 samples in batches of 4, 4, 2.
"""

from __future__ import annotations

import functools
import os
import random
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402  (numpy comes with torch)

from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402
from tests.models import HFModel, Samples, keras_mlp, lightning_module  # noqa: E402

N, BATCH, D_IN, D_OUT = 10, 4, 4, 2
FLOPS_PER_SAMPLE = 2 * D_IN * D_OUT  # 16


def sensors() -> list[Any]:
    return [ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node")]


def seed_all(generator: Any) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    generator.manual_seed(0)


CALLS = [0]  # forwards run, copies of the model included (a counter on the model would not see a copy's calls)


def noisy(x: Any, generator: Any) -> Any:
    """``x`` plus a little noise from each generator: torch's default and a dedicated one, NumPy, Python."""
    CALLS[0] += 1
    noise = torch.randn(x.shape, generator=generator) + torch.rand(x.shape)
    return x + 1e-2 * (noise + float(np.random.rand()) + random.random())


def noisy_forward(model: Any, x: Any) -> Any:
    """The Lightning and HF models' input: :func:`noisy` from the generator the model holds."""
    return noisy(x, model.generator)


def states(generator: Any) -> tuple[Any, ...]:
    numpy_state = np.random.get_state()
    return (torch.get_rng_state().tolist(), generator.get_state().tolist(), numpy_state[0], numpy_state[1].tolist(),
            numpy_state[2:], random.getstate())


def data() -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D_IN, generator=g)
    return x, (x[:, 0] > 0).long()


def samples() -> Samples:
    """:func:`data` as the HF Trainer's dict samples."""
    return Samples(*data())


def assert_same(without: dict[str, Any], with_: dict[str, Any]) -> None:
    assert with_["calls"] == without["calls"], "the user's forward ran a different number of times"
    assert with_["states"] == without["states"], "a random generator moved"
    assert with_["returned"] == without["returned"], "the phase returned something else"
    for a, b in zip(without["weights"], with_["weights"], strict=True):
        assert torch.equal(a, b), "the following fit computed other weights"


# ------------------------------------------------------------------------------------------------ Lightning
def lightning_run(kind: str, tmp_path: Any, with_callback: bool) -> dict[str, Any]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    def trainer(callbacks: list[Any], folder: str) -> Any:
        return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                          default_root_dir=str(tmp_path / folder))

    torch.manual_seed(0)
    CALLS[0] = 0
    module = lightning_module(torch.nn.Linear(D_IN, D_OUT), steps=("training", "validation", "test", "predict"),
                              lr=0.5, generator=True, transform=noisy_forward)
    seed_all(module.generator)
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    callbacks = [GreenCallback(sensors=sensors(), carbon_intensity=400.0, output_dir=str(tmp_path))] \
        if with_callback else []
    returned = getattr(trainer(callbacks, f"phase-{with_callback}"), kind)(module, loader)
    if kind == "predict":
        returned = [t.tolist() for t in returned]
    calls, after = CALLS[0], states(module.generator)
    trainer([], f"fit-{with_callback}").fit(module, loader)
    flops = callbacks[0].last_phase_metrics[f"green/{kind}_flops"] if callbacks else None
    return {"calls": calls, "states": after, "returned": returned, "flops": flops,
            "weights": [p.detach().clone() for p in module.parameters()]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["validate", "test", "predict"])
def test_lightning_phase_changes_nothing(kind: str, tmp_path: Any) -> None:
    without = lightning_run(kind, tmp_path, with_callback=False)
    with_ = lightning_run(kind, tmp_path, with_callback=True)
    assert without["calls"] == 3  # one forward per batch
    assert_same(without, with_)
    assert with_["flops"] == FLOPS_PER_SAMPLE * N


# ------------------------------------------------------------------------------------------------ transformers
def transformers_run(kind: str, tmp_path: Any, with_callback: bool) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.transformers import GreenCallback

    hf_logging.set_verbosity_error()

    torch.manual_seed(0)
    CALLS[0] = 0
    model = HFModel(torch.nn.Linear(D_IN, D_OUT), generator=True, transform=noisy_forward)
    seed_all(model.generator)
    args = TrainingArguments(str(tmp_path / f"hf-{with_callback}"), per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=BATCH, num_train_epochs=1, report_to="none", use_cpu=True,
                             disable_tqdm=True, save_strategy="no", learning_rate=0.5)
    callbacks = [GreenCallback(sensors=sensors(), carbon_intensity=400.0, output_dir=str(tmp_path))] \
        if with_callback else []
    trainer = Trainer(model=model, args=args, train_dataset=samples(), callbacks=callbacks)
    if kind == "evaluate":
        output = trainer.evaluate(samples())
        returned = sorted(k for k in output if k not in ("eval_runtime", "eval_samples_per_second",
                                                          "eval_steps_per_second"))
        returned += [output["eval_loss"]]
    else:
        output = trainer.predict(samples())
        returned = [output.predictions.tolist(), sorted(output.metrics)]
    calls, after = CALLS[0], states(model.generator)
    trainer.train()
    flops = callbacks[0].last_phase_metrics[f"green/{kind}_flops"] if callbacks else None
    return {"calls": calls, "states": after, "returned": returned, "flops": flops,
            "weights": [p.detach().clone() for p in model.parameters()]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evaluate", "predict"])
def test_transformers_phase_changes_nothing(kind: str, tmp_path: Any) -> None:
    without = transformers_run(kind, tmp_path, with_callback=False)
    with_ = transformers_run(kind, tmp_path, with_callback=True)
    assert without["calls"] == 3
    assert_same(without, with_)
    assert with_["flops"] == FLOPS_PER_SAMPLE * N


# ------------------------------------------------------------------------------------------------ Keras (torch)
KERAS_STATE: list[Any] = []  # the running test's generator


@functools.cache
def noisy_layer(keras: Any) -> Any:
    """A Keras layer adding :func:`noisy`'s noise (registered: a copy of the model can be rebuilt from its config)."""

    @keras.saving.register_keras_serializable(package="green_phase_parity")
    class Noisy(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return noisy(x, KERAS_STATE[0])

    return Noisy


def keras_run(kind: str, tmp_path: Any, with_callback: bool) -> dict[str, Any]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("the torch backend: its generators are the ones compared here")
    from green_callbacks.keras import GreenCallback

    generator = torch.Generator()
    CALLS[0] = 0
    KERAS_STATE[:] = [generator]
    keras.utils.set_random_seed(0)
    model = keras_mlp(D_IN, None, D_OUT, first=[noisy_layer(keras)()])
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seed_all(generator)
    x, y = (t.numpy() for t in data())
    callbacks = [GreenCallback(sensors=sensors(), carbon_intensity=400.0, output_dir=str(tmp_path))] \
        if with_callback else []
    if kind == "evaluate":
        output = model.evaluate(x, y, batch_size=BATCH, callbacks=callbacks, verbose=0, return_dict=True)
        returned = sorted(output.items())
    else:
        returned = model.predict(x, batch_size=BATCH, callbacks=callbacks, verbose=0).tolist()
    seen, after = CALLS[0], states(generator)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    flops = callbacks[0].last_phase_metrics[f"green/{kind}_flops"] if callbacks else None
    return {"calls": seen, "states": after, "returned": returned, "flops": flops,
            "weights": [torch.as_tensor(keras.ops.convert_to_numpy(w)) for w in model.weights]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evaluate", "predict"])
def test_keras_phase_changes_nothing(kind: str, tmp_path: Any) -> None:
    without = keras_run(kind, tmp_path, with_callback=False)
    with_ = keras_run(kind, tmp_path, with_callback=True)
    assert_same(without, with_)
    assert with_["flops"] == FLOPS_PER_SAMPLE * N

"""The HF transformers adapter, driven by a real ``Trainer`` on a tiny BERT and synthetic data.

Energy comes from ``StepEnergySensor``s (hardware boundary), so every number is computable by hand: each sensor read
adds a fixed number of joules, and the meter reads at every window boundary (epoch begin/end, eval begin/end).
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import (  # noqa: E402
    BertForSequenceClassification,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from green_callbacks.transformers import HF_TOTAL_FLOS_KEY, METRIC_KEYS, GreenCallback  # noqa: E402
from tests import models  # noqa: E402

hf_logging.set_verbosity_error()

# The tiny BERT: H hidden, L layers, NH heads, FF intermediate, C labels, V vocabulary; S tokens per sample.
H, L, NH, FF, C, V, S = 32, 2, 2, 64, 2, 100, 8
N_TRAIN, N_EVAL, BATCH = 16, 8, 4
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 4
# Joules added per sensor read.
GPU_J, CPU_J, RAM_J = 1.0, 2.0, 0.5
PER_READ_J = GPU_J + CPU_J + RAM_J  # 3.5
J_PER_KWH = 3.6e6
KEYS = (*METRIC_KEYS, HF_TOTAL_FLOS_KEY)


def synthetic(n: int, lengths: list[int] | None = None, seed: int = 0) -> models.Tokens:
    """``n`` random token sequences with random binary labels; ``lengths`` makes them ragged (no padding here)."""
    return models.Tokens(lengths or [S] * n, vocab=V, labels=C, seed=seed)


def tiny_bert() -> BertForSequenceClassification:
    return models.tiny_bert(vocab=V, hidden=H, layers=L, heads=NH, intermediate=FF, labels=C)


def fake_sensors() -> list[StepEnergySensor]:
    return [StepEnergySensor("gpu", GPU_J), StepEnergySensor("cpu", CPU_J, scope="node"),
            StepEnergySensor("ram", RAM_J, scope="node")]


def green(**kwargs) -> GreenCallback:
    return GreenCallback(carbon_intensity=100.0, sensors=fake_sensors(), **kwargs)


def make_trainer(tmp_path: Path, callbacks: list, *, train=None, eval_ds=None, **overrides) -> Trainer:
    settings = dict(num_train_epochs=2, per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
                    logging_strategy="epoch", eval_strategy="no", save_strategy="no", report_to="none",
                    use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    settings.update(overrides)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp_path / "tb")
    args = TrainingArguments(str(tmp_path / "out"), **settings)
    return Trainer(model=tiny_bert(), args=args, train_dataset=train or synthetic(N_TRAIN),
                   eval_dataset=eval_ds, callbacks=callbacks)


def green_entries(trainer: Trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "green/epoch_energy_kwh" in h]


def tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted({os.path.dirname(p) for p in glob.glob(str(logdir / "**" / "events.out.tfevents*"),
                                                                 recursive=True)}):
        acc = EventAccumulator(folder)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)


# ---------------------------------------------------------------------------------------------------- hand FLOPs
def forward_flops(batch: int, seq: int) -> int:
    """2·M·N·K per matmul of the tiny BERT's forward (embeddings, norms, softmax: no matmul, no FLOPs)."""
    tokens = batch * seq
    qkv_out = 4 * 2 * tokens * H * H  # Q, K, V and the attention output projection
    scores = 2 * 2 * batch * NH * seq * seq * (H // NH)  # Q·Kᵀ and softmax·V, per head
    ffn = 2 * 2 * tokens * H * FF  # up and down projections
    pooler = 2 * batch * H * H  # the [CLS] token only
    classifier = 2 * batch * H * C
    return L * (qkv_out + scores + ffn) + pooler + classifier


def train_step_flops(batch: int, seq: int) -> int:
    # Backward = 2x forward here: every matmul's input needs a gradient (the embeddings are trainable).
    return 3 * forward_flops(batch, seq)


def real_step_flops(model, batch: dict) -> int:
    """Independent count: FlopCounterMode around one real forward + backward on the real model."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).loss.backward()
    model.zero_grad()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------------------ tests
def test_every_key_every_epoch_reaches_tensorboard_and_log_history(tmp_path):
    """1.5 epochs with evaluation each epoch: both epochs (the last one fractional) carry every key everywhere."""
    callback = green()
    trainer = make_trainer(tmp_path, [callback], eval_ds=synthetic(N_EVAL, seed=1), num_train_epochs=1.5,
                           eval_strategy="epoch", report_to=["tensorboard"])
    trainer.train()

    entries = green_entries(trainer)
    assert [(e["epoch"], e["step"]) for e in entries] == [(1.0, 4), (1.5, 6)]
    for entry in entries:
        assert set(KEYS) <= set(entry)
        assert all(isinstance(entry[k], float) for k in KEYS)

    # The Trainer's own entries are intact: loss at each epoch end, evaluation, the final summary.
    history = trainer.state.log_history
    assert [(h["epoch"], h["step"]) for h in history if "loss" in h] == [(1.0, 4), (1.5, 6)]
    assert [h["step"] for h in history if "eval_loss" in h] == [4, 6]
    assert "total_flos" in history[-1] and "train_runtime" in history[-1]

    # Energy by hand: each epoch window reads at begin, eval begin, eval end, end -> 3 reads of 3.5 J each;
    # its evaluation window 1 read. The fractional epoch costs the same reads as a whole one.
    for entry in entries:
        assert entry["green/epoch_energy_kwh"] == pytest.approx(3 * PER_READ_J / J_PER_KWH)
        assert entry["green/epoch_gpu_energy_kwh"] == pytest.approx(3 * GPU_J / J_PER_KWH)
        assert entry["green/epoch_eval_energy_kwh"] == pytest.approx(PER_READ_J / J_PER_KWH)
        assert entry["green/epoch_emissions_gco2e"] == pytest.approx(3 * PER_READ_J / J_PER_KWH * 100.0)
    assert entries[1]["green/total_energy_kwh"] == pytest.approx(6 * PER_READ_J / J_PER_KWH)

    # TensorBoard (HF's TensorBoardCallback writes "train/<key>" at global_step): every key, every epoch, same value.
    scalars = tb_scalars(tmp_path / "tb")
    for key in KEYS:
        points = scalars[f"train/{key}"]
        assert [step for step, _ in points] == [4, 6], key
        for (_, value), entry in zip(points, entries, strict=True):
            assert same(value, float(torch.tensor(entry[key], dtype=torch.float32))), key
    assert [s for s, _ in scalars["train/loss"]] == [4, 6]
    assert [s for s, _ in scalars["eval/loss"]] == [4, 6]
    assert "train/total_flos" in scalars

    record = read_record(callback.record_path)
    assert record["status"] == "completed"
    assert Path(callback.record_path).parent == tmp_path / "out"
    assert [row["metrics"]["epoch"] for row in record["epochs"]] == [1.0, 1.5]


def test_flops_per_epoch_match_an_independent_count(tmp_path):
    callback = green()
    trainer = make_trainer(tmp_path, [callback], eval_ds=synthetic(N_EVAL, seed=1), eval_strategy="epoch")
    trainer.train()

    batch = {k: torch.stack([synthetic(N_TRAIN)[i][k] for i in range(BATCH)]) for k in ("input_ids", "labels")}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    measured = real_step_flops(tiny_bert(), batch)
    assert measured == train_step_flops(BATCH, S)  # the hand rule and FlopCounterMode agree: 3,368,448
    assert train_step_flops(BATCH, S) == 3 * (L * (4 * 2 * 32 * 32 * 32 + 4 * 4 * 2 * 8 * 8 * 16 + 4 * 32 * 32 * 64)
                                              + 2 * 4 * 32 * 32 + 2 * 4 * 32 * 2)

    entries = green_entries(trainer)
    assert len(entries) == 2
    for n, entry in enumerate(entries, start=1):
        assert entry["green/epoch_train_flops"] == measured * STEPS_PER_EPOCH
        assert entry["green/epoch_eval_flops"] == forward_flops(BATCH, S) * (N_EVAL // BATCH)
        assert entry["green/total_train_flops"] == measured * STEPS_PER_EPOCH * n
        # train FLOPs per joule: epoch energy minus its evaluation part (3 reads - 1 read = 2 reads of 3.5 J)
        assert entry["green/train_flops_per_joule"] == pytest.approx(measured * STEPS_PER_EPOCH / (2 * PER_READ_J))
        # HF's own estimate: 6 x non-embedding parameters x input numel, cumulative
        non_embedding = trainer.model.num_parameters(exclude_embeddings=True)
        assert entry[HF_TOTAL_FLOS_KEY] == 6 * non_embedding * BATCH * S * STEPS_PER_EPOCH * n
    assert entries[-1][HF_TOTAL_FLOS_KEY] == trainer.state.total_flos


def test_dynamic_padding_counts_each_padded_length(tmp_path):
    """Ragged batches padded to their own longest sample: every padded length is its own signature."""
    shapes: list[tuple[int, int]] = []

    def pad(features):
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), longest, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, f in enumerate(features):
            ids[row, : len(f["input_ids"])] = f["input_ids"]
            mask[row, : len(f["input_ids"])] = 1
        shapes.append(tuple(ids.shape))
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([f["labels"] for f in features])}

    lengths = [3, 5, 8, 4, 6, 7, 2, 8, 5, 5, 3, 6]  # 12 samples -> 3 batches of 4 per epoch, shuffled
    callback = green()
    trainer = make_trainer(tmp_path, [callback], train=synthetic(12, lengths), num_train_epochs=2)
    trainer.data_collator = pad
    trainer.train()

    assert len(shapes) == 6 and len({s for _, s in shapes}) > 1
    entries = green_entries(trainer)
    per_epoch = [sum(train_step_flops(b, s) for b, s in shapes[i * 3:(i + 1) * 3]) for i in range(2)]
    assert [e["green/epoch_train_flops"] for e in entries] == per_epoch
    # throughput counts from the same batches: 12 samples per epoch, tokens = input_ids elements (padding included)
    rows = read_record(callback.record_path)["epochs"]
    assert [row["samples"] for row in rows] == [12, 12]
    assert [row["tokens"] for row in rows] == [sum(b * s for b, s in shapes[i * 3:(i + 1) * 3]) for i in range(2)]
    assert all(e["green/tokens_per_s"] > 0 for e in entries)


@pytest.mark.slow
def test_convergence_follows_metric_for_best_model_and_early_stopping(tmp_path):
    callback = green()
    trainer = make_trainer(tmp_path, [callback, EarlyStoppingCallback(early_stopping_patience=1)],
                           eval_ds=synthetic(N_EVAL, seed=1), num_train_epochs=4, eval_strategy="epoch",
                           save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="loss",
                           learning_rate=5e-2)
    trainer.train()

    record = read_record(callback.record_path)
    assert record["convergence"]["monitor"] == "eval_loss" and record["convergence"]["mode"] == "min"
    losses = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    best = losses.index(min(losses))  # earliest best epoch, 0-based
    last = green_entries(trainer)[-1]
    assert last["green/epochs_to_convergence"] == best + 1
    assert last["green/flops_to_convergence"] == train_step_flops(BATCH, S) * STEPS_PER_EPOCH * (best + 1)
    assert last["green/energy_to_convergence_kwh"] == pytest.approx((best + 1) * 3 * PER_READ_J / J_PER_KWH)
    assert trainer.state.best_metric == pytest.approx(min(losses))


def test_explicit_monitor_wins_over_metric_for_best_model(tmp_path):
    callback = green(monitor="loss", mode="min")  # the training loss of the epoch-end log
    trainer = make_trainer(tmp_path, [callback], eval_ds=synthetic(N_EVAL, seed=1), num_train_epochs=3,
                           eval_strategy="epoch", metric_for_best_model="eval_loss")
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert read_record(callback.record_path)["convergence"]["monitor"] == "loss"
    assert green_entries(trainer)[-1]["green/epochs_to_convergence"] == losses.index(min(losses)) + 1


@pytest.mark.slow
def test_order_of_callbacks_does_not_matter(tmp_path):
    """Explicit TensorBoardCallback instances before or after ours: the green keys reach it either way."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    for name in ("before", "after"):
        folder = tmp_path / name
        board = TensorBoardCallback(SummaryWriter(str(folder / "tb")))
        trainer = make_trainer(folder, [board, green()] if name == "before" else [green(), board])
        trainer.train()
        scalars = tb_scalars(folder / "tb")
        assert [s for s, _ in scalars["train/green/epoch_energy_kwh"]] == [4, 8], name
        assert [s for s, _ in scalars["train/loss"]] == [4, 8], name


def test_logging_every_few_steps_keeps_the_loss_cadence(tmp_path):
    """logging_strategy='steps': our epoch log must neither add nor drop any of the Trainer's loss logs."""
    callback = green()
    trainer = make_trainer(tmp_path, [callback], num_train_epochs=2, logging_strategy="steps", logging_steps=3)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [3, 6]
    assert [(e["epoch"], e["step"]) for e in green_entries(trainer)] == [(1.0, 4), (2.0, 8)]
    # no eval: each epoch window is one read per sensor
    assert all(e["green/epoch_energy_kwh"] == pytest.approx(PER_READ_J / J_PER_KWH) for e in green_entries(trainer))


def test_logging_through_the_trainer_keeps_should_log(tmp_path):
    """The nested Trainer.log resets control.should_log (CallbackHandler.on_log); the callback restores it, so a
    loss log the Trainer is about to emit is never swallowed, whenever the epoch closes."""
    callback = green()
    trainer = make_trainer(tmp_path, [callback])
    assert callback.trainer is trainer  # found on the call stack of on_init_end
    trainer.control.should_log = True
    callback._log(trainer.state, trainer.control, {"green/epoch_energy_kwh": 1.0})
    assert trainer.control.should_log is True
    assert trainer.state.log_history[-1]["green/epoch_energy_kwh"] == 1.0


def test_evaluation_every_few_steps_is_measured_inside_the_epoch(tmp_path):
    callback = green()
    trainer = make_trainer(tmp_path, [callback], eval_ds=synthetic(N_EVAL, seed=1), num_train_epochs=1,
                           eval_strategy="steps", eval_steps=2)
    trainer.train()
    (entry,) = green_entries(trainer)
    # evaluations at steps 2 and 4: two eval windows (2 reads each) + the epoch end read = 5 reads
    assert entry["green/epoch_energy_kwh"] == pytest.approx(5 * PER_READ_J / J_PER_KWH)
    assert entry["green/epoch_eval_energy_kwh"] == pytest.approx(2 * PER_READ_J / J_PER_KWH)
    assert entry["green/epoch_eval_flops"] == 2 * forward_flops(BATCH, S) * (N_EVAL // BATCH)


@pytest.mark.slow
def test_resume_continues_totals_and_record(tmp_path):
    first = green()
    trainer = make_trainer(tmp_path, [first], num_train_epochs=2, save_strategy="epoch")
    trainer.train()
    full = green_entries(trainer)

    second = green()
    resumed = make_trainer(tmp_path, [second], num_train_epochs=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))

    entry = green_entries(resumed)[-1]  # the one epoch run after resuming
    assert entry["step"] == 8
    assert entry["green/total_train_flops"] == full[-1]["green/total_train_flops"] == 2 * full[0][
        "green/epoch_train_flops"]
    assert entry["green/total_energy_kwh"] == pytest.approx(2 * PER_READ_J / J_PER_KWH)
    assert second.record_path == first.record_path  # the same run record goes on
    record = read_record(second.record_path)
    assert record["resumed_from"]["epochs"] == 1
    assert [row["epoch"] for row in record["epochs"]] == [0, 1]


@pytest.mark.slow
def test_resume_with_hf_restoring_callback_state(tmp_path):
    """restore_callback_states_from_checkpoint=True makes HF rebuild the callback: the user's instance stays live."""
    trainer = make_trainer(tmp_path, [green()], num_train_epochs=2, save_strategy="epoch")
    trainer.train()
    mine = green()
    resumed = make_trainer(tmp_path, [mine], num_train_epochs=2, restore_callback_states_from_checkpoint=True)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    assert mine not in resumed.callback_handler.callbacks  # HF replaced it ...
    assert mine.last_metrics["green/total_train_flops"] == 2 * train_step_flops(BATCH, S) * STEPS_PER_EPOCH
    assert mine.session.status == "completed"  # ... but the user's reference still sees the run
    assert read_record(mine.record_path)["epochs"][-1]["epoch"] == 1


class Boom(TrainerCallback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 5:
            raise self.error


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "failed"),
                                                (KeyboardInterrupt(), "interrupted")])
def test_an_exception_in_training_ends_the_record(tmp_path, error, status):
    callback = green()
    trainer = make_trainer(tmp_path, [callback, Boom(error)], num_train_epochs=2)
    with pytest.raises(type(error)):
        trainer.train()
    record = read_record(callback.record_path)
    assert record["status"] == status
    assert len(record["epochs"]) == 1  # the complete first epoch stays
    assert record["partial_epoch"]["epoch"] == 1
    assert not trainer.model._forward_pre_hooks  # the FLOP hook is gone


@pytest.mark.slow
def test_callback_added_after_init_and_a_second_fit(tmp_path):
    trainer = make_trainer(tmp_path, [])
    callback = green()
    trainer.add_callback(callback)  # no on_init_end for it: the Trainer is found at on_train_begin
    trainer.train()
    first_record = callback.record_path
    trainer.train()  # a second fit is a second run
    assert callback.trainer is trainer
    assert callback.record_path != first_record
    assert read_record(first_record)["status"] == read_record(callback.record_path)["status"] == "completed"
    assert len(green_entries(trainer)) == 2  # log_history restarts with each train()


def test_budget_stops_the_training(tmp_path):
    callback = green(budget_kwh=1.5 * PER_READ_J / J_PER_KWH)  # the second epoch would exceed it
    trainer = make_trainer(tmp_path, [callback], num_train_epochs=5)
    trainer.train()
    assert trainer.state.global_step < 5 * STEPS_PER_EPOCH
    assert read_record(callback.record_path)["stop_reason"].startswith("budget")


@pytest.mark.slow
def test_mlflow_receives_every_key_every_epoch(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "green")
    trainer = make_trainer(tmp_path, [green()], num_train_epochs=1.5, report_to=["mlflow"])
    trainer.train()
    entries = green_entries(trainer)
    (run,) = [p for p in (tmp_path / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    for key in KEYS:
        lines = (run / "metrics" / key).read_text().split("\n")
        points = [(int(step), float(value)) for _, value, step in (line.split() for line in lines if line)]
        assert [step for step, _ in points] == [4, 6], key
        assert all(same(v, e[key]) for (_, v), e in zip(points, entries, strict=True)), key
    assert (run / "metrics" / "loss").is_file()


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / "transformers_quickstart.py"
    spec = importlib.util.spec_from_file_location("transformers_quickstart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--epochs", "1", "--output-dir", str(tmp_path), "--carbon-intensity", "100"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "train FLOPs" in out and "HF's own estimate" in out
    assert len(list(tmp_path.glob("green-run-*.json"))) == 1

"""HF ``trainer.evaluate()`` / ``trainer.predict()`` outside ``train``: a real Trainer on a tiny BERT, synthetic data.

Energy: fake sensors of known power (GPU 100 W + CPU 20 W + RAM 5 W = 125 W) on the fake clock. A callback listed
before ours advances the clock in ``on_prediction_step`` (0.25 s: inside the batch, which our callback opens at the
model's forward and closes in its own ``on_prediction_step``) and in ``on_step_end`` during training (1 s).

The phase data: 10 sequences of 8 tokens, the odd ones with 2 padding positions (attention_mask 0), in batches of 4,
4 and 2. By hand: warm-up = batches 1 and 3 (the first of each shape), 0.5 s; the steady batch 2: 0.25 s = 31.25 J
for 4 samples = 7.8125 J per sample, and 8 + 6 + 8 + 6 = 28 real tokens -> 31.25 / 28 J per token; all 10 samples:
5 × 8 + 5 × 6 = 70 real tokens. The phase: 0.75 s = 93.75 J. The training before it: 4 steps × 1 s = 500 J, so the
break-even is 500 / 7.8125 = 64 predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from green_callbacks.core.phase import phase_metric_keys  # noqa: E402
from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402
from green_callbacks.transformers import GreenCallback  # noqa: E402
from tests.models import tiny_bert  # noqa: E402

hf_logging.set_verbosity_error()

H, L, NH, FF, C, V, S = 32, 2, 2, 64, 2, 100, 8
J_PER_KWH = 3.6e6
POWER_W = 125.0
BATCH_S = 0.25
PHASE_S = 3 * BATCH_S
J_PER_SAMPLE = POWER_W * BATCH_S / 4
FIT_J = POWER_W * 4 * 1.0


def forward_flops(batch: int, seq: int) -> int:
    """2·M·N·K per matmul of the tiny BERT's forward (embeddings, norms, softmax, loss: no matmul)."""
    tokens = batch * seq
    qkv_out = 4 * 2 * tokens * H * H
    scores = 2 * 2 * batch * NH * seq * seq * (H // NH)
    ffn = 2 * 2 * tokens * H * FF
    pooler = 2 * batch * H * H
    classifier = 2 * batch * H * C
    return L * (qkv_out + scores + ffn) + pooler + classifier


PHASE_FLOPS = 2 * forward_flops(4, S) + forward_flops(2, S)


class Padded(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, V, (n, S), generator=g)
        self.y = torch.randint(0, C, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.ones(S, dtype=torch.long)
        if i % 2:
            mask[-2:] = 0
        return {"input_ids": self.x[i], "attention_mask": mask, "labels": self.y[i]}


class Ticker(TrainerCallback):
    def __init__(self, tick) -> None:
        self.tick = tick

    def on_step_end(self, args, state, control, **kwargs):
        self.tick(1.0)

    def on_prediction_step(self, args, state, control, **kwargs):
        self.tick(BATCH_S)


def make(tmp_path: Path, tick) -> tuple[Trainer, GreenCallback]:
    callback = GreenCallback(sensors=[ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
                                      ConstantPowerSensor("ram", 5.0, scope="process")], carbon_intensity=400.0)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tmp_path / "tb")
    args = TrainingArguments(str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, logging_strategy="epoch", eval_strategy="no",
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
    model = tiny_bert(vocab=V, hidden=H, layers=L, heads=NH, intermediate=FF, labels=C)
    trainer = Trainer(model=model, args=args, train_dataset=Padded(16, seed=1), eval_dataset=Padded(10),
                      callbacks=[Ticker(tick), callback])
    return trainer, callback


def expected(kind: str) -> dict[str, float]:
    k = f"green/{kind}_"
    return {
        k + "energy_kwh": POWER_W * PHASE_S / J_PER_KWH,
        k + "cpu_energy_kwh": 20.0 * PHASE_S / J_PER_KWH,
        k + "emissions_gco2e": POWER_W * PHASE_S / J_PER_KWH * 400.0,
        k + "time_s": PHASE_S,
        k + "batches": 3.0,
        k + "samples": 10.0,
        k + "flops": float(PHASE_FLOPS),
        k + "energy_per_sample_j": J_PER_SAMPLE,
        k + "samples_per_joule": 1.0 / J_PER_SAMPLE,
        k + "flops_per_sample": PHASE_FLOPS / 10.0,
        k + "mean_power_w": POWER_W,
        k + "latency_p50_s": BATCH_S,
        k + "latency_p95_s": BATCH_S,
        k + "tokens_in": 70.0,
        k + "energy_per_token_in_j": POWER_W * BATCH_S / 28.0,
        k + "warmup_batches": 2.0,
        k + "warmup_time_s": 2 * BATCH_S,
    }


def test_evaluate_after_train_logs_and_returns_exact_figures(tmp_path, fake_clock):
    trainer, callback = make(tmp_path, fake_clock.advance)
    trainer.train()
    fit_record = callback.record_path
    assert callback.session.totals.energy_j == pytest.approx(FIT_J)

    returned = trainer.evaluate()
    assert "eval_loss" in returned and not [k for k in returned if k.startswith("green/")]  # the Trainer's own dict
    metrics = callback.last_phase_metrics
    for key, value in expected("evaluate").items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key
    assert set(phase_metric_keys("evaluate")) == set(metrics)
    logged = [h for h in trainer.state.log_history if "green/evaluate_energy_kwh" in h]
    assert len(logged) == 1 and logged[0]["green/evaluate_energy_per_sample_j"] == pytest.approx(J_PER_SAMPLE)
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "evaluate" and record["training"]["record"] == Path(fit_record).name
    assert record["break_even"]["samples_for_energy"] == pytest.approx(FIT_J / J_PER_SAMPLE)  # 64
    fit = read_record(fit_record)
    assert fit["kind"] == "fit" and [p["kind"] for p in fit["phases"]] == ["evaluate"]
    assert fit["phases"][0]["record"] == Path(callback.last_phase_record_path).name


def test_predict_standalone_keeps_the_figures_on_the_callback(tmp_path, fake_clock):
    trainer, callback = make(tmp_path, fake_clock.advance)
    output = trainer.predict(Padded(10))
    assert output.predictions.shape == (10, C)
    assert not [k for k in output.metrics if k.startswith("green/")]  # PredictionOutput.metrics: the Trainer's own
    for key, value in expected("predict").items():
        assert callback.last_phase_metrics[key] == pytest.approx(value, rel=1e-9), key
    assert not [h for h in trainer.state.log_history if "green/predict_energy_kwh" in h]  # HF does not log predict
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "predict" and record["training"] is None


def test_evaluation_inside_train_is_not_a_phase(tmp_path, fake_clock):
    trainer, callback = make(tmp_path, fake_clock.advance)
    trainer.args.eval_strategy = transformers.IntervalStrategy.EPOCH
    trainer.train()
    assert callback.last_phase is None
    assert callback.last_metrics["green/epoch_eval_energy_kwh"] > 0


def test_a_failing_evaluate_leaves_a_failed_record(tmp_path, fake_clock):
    trainer, callback = make(tmp_path, fake_clock.advance)

    class Boom(TrainerCallback):
        def on_prediction_step(self, args, state, control, **kwargs):
            raise RuntimeError("boom in evaluate")

    trainer.add_callback(Boom())
    with pytest.raises(RuntimeError, match="boom"):
        trainer.evaluate()
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "evaluate" and record["status"] == "failed" and "boom" in record["error"]
    assert record["phase"]["energy_j"] == pytest.approx(POWER_W * BATCH_S)


def test_evaluate_over_a_dict_of_datasets_is_one_phase(tmp_path, fake_clock):
    """evaluate({"a": ..., "b": ...}) calls itself per dataset: one phase over both. By hand: 6 batches of 0.25 s;
    warm-up = the first (4, 8) and the first (2, 8) batch, both in dataset a; the 4 others are steady: 1 s = 125 J
    for 20 - 6 = 14 samples, and 140 - (28 + 14) = 98 real tokens."""
    trainer, callback = make(tmp_path, fake_clock.advance)
    returned = trainer.evaluate(eval_dataset={"a": Padded(10), "b": Padded(10)})
    assert callback.last_phase is not None and callback.last_phase.samples == 20
    assert "eval_a_loss" in returned and "eval_b_loss" in returned
    metrics = callback.last_phase_metrics
    assert metrics["green/evaluate_batches"] == 6 and metrics["green/evaluate_samples"] == 20
    assert metrics["green/evaluate_warmup_batches"] == 2
    assert metrics["green/evaluate_energy_per_sample_j"] == pytest.approx(125.0 / 14, rel=1e-9)
    assert metrics["green/evaluate_tokens_in"] == 140
    assert metrics["green/evaluate_energy_per_token_in_j"] == pytest.approx(125.0 / 98, rel=1e-9)
    assert len([h for h in trainer.state.log_history if "green/evaluate_energy_kwh" in h]) == 1


def test_seq2seq_predict_with_generate_counts_output_tokens(tmp_path, fake_clock):
    """A tiny T5 (from a config, no weights) generating exactly 3 tokens per sample (min = max new tokens, the pad
    token suppressed): tokens out = 3 × 10 = 30; the steady batch's 31.25 J over its 4 × 3 = 12 tokens. FLOPs are
    NaN (generation runs the model once per new token)."""
    import math

    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 3
    model.generation_config.min_new_tokens = 3
    model.generation_config.suppress_tokens = [0]
    callback = GreenCallback(sensors=[ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
                                      ConstantPowerSensor("ram", 5.0, scope="process")], carbon_intensity=400.0)
    args = Seq2SeqTrainingArguments(str(tmp_path / "out"), per_device_eval_batch_size=4, predict_with_generate=True,
                                    report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=args, callbacks=[Ticker(fake_clock.advance), callback])
    inputs = Padded(10)
    output = trainer.predict([{k: v for k, v in inputs[i].items() if k != "labels"} for i in range(10)])
    assert output.predictions.shape[0] == 10
    metrics = callback.last_phase_metrics
    assert metrics["green/predict_tokens_out"] == 30
    assert metrics["green/predict_energy_per_token_out_j"] == pytest.approx(POWER_W * BATCH_S / 12, rel=1e-9)
    assert metrics["green/predict_tokens_in"] == 70
    assert metrics["green/predict_energy_per_sample_j"] == pytest.approx(J_PER_SAMPLE, rel=1e-9)
    assert math.isnan(metrics["green/predict_flops"])
    assert "prediction_step" not in trainer.__dict__  # unwrapped after the phase

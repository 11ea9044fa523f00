"""FLOPs of HF Trainer runs through the one FLOP wrapper: dynamic padding (#20) and torch.compile (#14.8)."""

from __future__ import annotations

import random
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from green_callbacks.report.build import build_report  # noqa: E402
from green_callbacks.report.render import render_text  # noqa: E402
from green_callbacks.report.runs import load_runs, summarize_run  # noqa: E402
from green_callbacks.transformers import GreenCallback  # noqa: E402
from tests.models import Tokens, tiny_bert  # noqa: E402

V, H, NH, FF, LAYERS, MAX_LEN = 50, 16, 2, 32, 2, 128


def _bert() -> BertForSequenceClassification:
    return tiny_bert(vocab=V, hidden=H, layers=LAYERS, heads=NH, intermediate=FF, max_positions=MAX_LEN)


def ragged(lengths: list[int]) -> Tokens:
    """Token sequences of the given lengths, no attention mask: the collator pads them."""
    return Tokens(lengths, vocab=V, attention_mask=False)


def _pad(batches: list[dict]):
    def collate(features):
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), longest, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, f in enumerate(features):
            ids[row, : len(f["input_ids"])] = f["input_ids"]
            mask[row, : len(f["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([f["labels"] for f in features])}
        batches.append({k: v.clone() for k, v in batch.items()})
        return batch

    return collate


def _args(tmp_path, **overrides) -> TrainingArguments:
    settings = dict(num_train_epochs=1, per_device_train_batch_size=2, logging_strategy="epoch", eval_strategy="no",
                    save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=1e-3)
    settings.update(overrides)
    return TrainingArguments(str(tmp_path / "out"), **settings)


def _independent_count(batch: dict) -> int:
    """torch's own FlopCounterMode around one real forward + backward of a fresh copy of the model."""
    model = _bert()
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    return counter.get_total_flops()


@pytest.mark.slow  # 120 sequences through a tiny BERT, checked against torch's own counter: 10 s
def test_dynamic_padding_over_many_lengths_is_exact_with_a_handful_of_counts(tmp_path):
    lengths = list(range(4, 124))
    random.Random(1).shuffle(lengths)
    batches: list[dict] = []
    callback = GreenCallback(carbon_intensity=100.0, sensors=[StepEnergySensor("cpu", 1.0, scope="node")])
    trainer = Trainer(model=_bert(), args=_args(tmp_path), train_dataset=ragged(lengths), data_collator=_pad(batches),
                      callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()

    padded = {b["input_ids"].shape[1] for b in batches}
    assert len(batches) == 60 and len(padded) >= 40
    expected = sum(_independent_count(b) for b in batches)
    assert callback.last_metrics["green/epoch_train_flops"] == expected
    info = read_record(callback.record_path)["flops"]
    assert info["counts"]["observed"] <= 10  # 3 to fit, 1 to verify, a lattice point, spot checks
    assert info["counts"]["interpolated"] >= len(padded) - 10
    assert info["epoch_methods"] == ["interpolated-verified"]


@pytest.mark.slow
def test_torch_compile_counts_exactly_without_recompiles(tmp_path):
    """TrainingArguments(torch_compile=True): the counting hooks stay out of dynamo's trace."""
    pytest.importorskip("torch._dynamo")
    import torch._dynamo

    torch._dynamo.reset()
    batches: list[dict] = []
    callback = GreenCallback(carbon_intensity=100.0, sensors=[StepEnergySensor("cpu", 1.0, scope="node")])
    trainer = Trainer(model=_bert(), args=_args(tmp_path, torch_compile=True), train_dataset=ragged([8] * 8),
                      data_collator=_pad(batches), callbacks=[callback])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "recompile" in m.lower() or "silent incorrectness" in m.lower()], messages
    assert callback.last_metrics["green/epoch_train_flops"] == 4 * _independent_count(batches[0])
    # counted once on a meta copy of the uncompiled model: its later (compiled) steps cannot be re-checked (#25)
    flops = read_record(callback.record_path)["flops"]
    assert flops["epoch_methods"] == ["counted-once"] and "not re-checked" in flops["epoch_notes"][0]
    # and the report says so beside the number, with the reason
    run = summarize_run(read_record(callback.record_path))
    assert run.train_flops_method == "counted-once"
    text = render_text(build_report(load_runs([callback.record_path])))
    assert f"{run.train_flops:.4g} (counted once)" in text and "not re-checked" in text

"""When the shape does not decide the work: later checks of a signature find it, the epoch is labelled and its figure
stays within the stated range of the truth (every batch counted on a copy), or exact with ``every_step=True``.

Cases of the issue's table: top-k routing whose work follows the routing, a branch on a data value, BART's LayerDrop,
a length cap that contradicts predictions, and the optimizer's matmuls (Keras torch backend, Muon).
"""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from green_callbacks.core.flops import FlopCountWarning, FlopTracker  # noqa: E402
from green_callbacks.core.flops.formulas import custom_flop_mapping  # noqa: E402
from tests.models import Branch, CappedLength  # noqa: E402


def _truth_of(model, batch, loss):
    """The FLOPs of one real forward + backward of ``batch`` on a copy, with the random generators left as found (so
    the real step that follows draws the same numbers: LayerDrop skips the same layers)."""
    state = torch.get_rng_state()
    twin = copy.deepcopy(model)
    with FlopCounterMode(display=False, custom_mapping=custom_flop_mapping()) as counter:
        loss(twin, batch).backward()
    torch.set_rng_state(state)
    return counter.get_total_flops()


def _epoch(model, batches, loss, **options):
    """One epoch through the tracker (each real step watched or not, as the tracker decides) and its truth."""
    tracker = FlopTracker(**options)
    truth = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:
            truth += _truth_of(model, batch, loss)
            tracker.begin("train", model, batch)
            loss(model, batch).backward()
            tracker.end()
            model.zero_grad()
        epoch = tracker.take_epoch()
    flop_warnings = [w for w in caught if issubclass(w.category, FlopCountWarning)]
    return epoch, truth, tracker, flop_warnings


def _check_sampled(epoch, truth, tracker, flop_warnings):
    assert epoch.method == "sampled"
    low, high = epoch.train_flops_range
    assert low <= truth <= high  # the truth lies in the stated range
    assert low <= epoch.train_flops <= high
    assert epoch.note and "data-dependent" in epoch.note
    info = tracker.info()
    assert info["epoch_methods"] == ["sampled"] and info["data_dependent"]
    assert info["counts"]["checks_failed"] >= 1
    assert len(flop_warnings) == 1 and "depends on the data" in str(flop_warnings[0].message)


class ThresholdMoE(nn.Module):
    """Top-k routing whose work follows the routing: a token goes to each expert whose gate exceeds 0.3."""

    def __init__(self, experts: int = 4) -> None:
        super().__init__()
        self.gate = nn.Linear(8, experts)
        self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(experts))

    def forward(self, x):
        probs = self.gate(x).softmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = (probs[:, e] > 0.3).nonzero().squeeze(-1)
            if rows.numel():
                out = out.index_add(0, rows, expert(x[rows]) * probs[rows, e, None])
        return out


def _loss(m, b):
    return m(b[0]).pow(2).sum()


@pytest.mark.parametrize("cls", [Branch, ThresholdMoE])
def test_data_dependent_work_is_found_and_the_epoch_sampled_within_its_range(cls):
    torch.manual_seed(0)
    batches = [(torch.randn(6, 8),) for _ in range(40)]
    epoch, truth, tracker, flop_warnings = _epoch(cls(), batches, _loss)
    _check_sampled(epoch, truth, tracker, flop_warnings)
    # bounded: the first count, the check at the 2nd step, then 1 step in 8 (a counter around 6 of 40 steps)
    watched = tracker.info()["data_dependent"]
    assert sum(v["watched"] for v in watched.values()) <= 2 + 40 // 8


@pytest.mark.parametrize("cls", [Branch, ThresholdMoE])
def test_every_step_mode_counts_data_dependent_work_exactly(cls):
    torch.manual_seed(0)
    batches = [(torch.randn(6, 8),) for _ in range(20)]
    epoch, truth, _, _ = _epoch(cls(), batches, _loss, every_step=True)
    assert epoch.train_flops == truth
    assert epoch.method == "counted" and epoch.train_flops_range is None


def test_shape_driven_work_stays_counted_and_exact_with_its_checks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    batches = [(torch.randn(6, 8),) for _ in range(20)]
    epoch, truth, tracker, flop_warnings = _epoch(model, batches, _loss)
    assert epoch.train_flops == truth and epoch.method == "counted"
    assert tracker.info()["counts"]["checks"] == 4  # the 2nd, 4th, 8th and 16th step, all agreeing
    assert flop_warnings == []


def test_bart_layerdrop_is_found_data_dependent_and_sampled_within_range():
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(vocab_size=64, d_model=16, encoder_layers=4, decoder_layers=4,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_position_embeddings=32, encoder_layerdrop=0.5,
                                     decoder_layerdrop=0.5, dropout=0.0, attention_dropout=0.0,
                                     attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config).train()
    batches = [{"input_ids": torch.randint(3, 64, (2, 10)), "labels": torch.randint(3, 64, (2, 10))}
               for _ in range(24)]
    epoch, truth, tracker, flop_warnings = _epoch(model, batches, lambda m, b: m(**b).loss)
    _check_sampled(epoch, truth, tracker, flop_warnings)


def test_a_spot_check_that_contradicts_predictions_relabels_the_epoch():
    torch.manual_seed(0)
    # 4 lengths fit and verify; 21.. are predicted past the cap, the 16th predicted value is counted and fails
    lengths = [2, 3, 4, 5, *range(21, 45)]
    batches = [(torch.randn(2, n, 4),) for n in lengths]
    epoch, truth, tracker, _ = _epoch(CappedLength(20), batches, _loss)
    assert tracker.info()["counts"]["verifications_failed"] == 1
    assert epoch.train_flops != truth  # predicted lengths past the cap were too high ...
    assert epoch.method == "estimated" and "not corrected" in epoch.note  # ... and the epoch no longer says so
    assert tracker.info()["epoch_methods"] == ["estimated"]


@pytest.mark.slow
def test_keras_torch_muon_optimizer_matmuls_stay_out_of_the_model_flops(tmp_path):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch" or not hasattr(keras.optimizers, "Muon"):
        pytest.skip("needs the Keras torch backend with keras.optimizers.Muon")
    import numpy as np

    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.keras import GreenCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Muon(learning_rate=0.01), loss="mse")
    x, y = np.random.rand(32, 8).astype("float32"), np.random.rand(32, 4).astype("float32")
    green = GreenCallback(carbon_intensity=100.0, output_dir=str(tmp_path), sensors=[ConstantPowerSensor("cpu", 5.0)])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[green])
    # per sample: forward 2·(8·16 + 16·4); backward dW of both, dX of the second (the data needs no gradient)
    per_sample = 2 * (8 * 16 + 16 * 4) + 2 * (8 * 16 + 16 * 4) + 2 * 16 * 4
    assert green.last_metrics["green/epoch_train_flops"] == 32 * per_sample


@pytest.mark.parametrize("mode", ["sampled", "every-step"])
def test_lightning_labels_a_data_dependent_epoch_and_every_step_makes_it_exact(tmp_path, mode):
    pl = pytest.importorskip("lightning.pytorch")
    from green_callbacks.core.record import read_record
    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.lightning import GreenCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Branch()

        def training_step(self, batch, batch_idx):
            return _loss(self.net, batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)  # lr 0: the copy's truth sees the same weights

    torch.manual_seed(0)
    xs = torch.randn(96, 8)
    module = Module()
    truth = sum(_truth_of(module.net, (xs[i:i + 4],), _loss) for i in range(0, 96, 4))
    callback = GreenCallback(carbon_intensity=100.0, flops=mode,
                             sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], max_epochs=1,
                         default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs), batch_size=4))
    info = read_record(callback.record_path)["flops"]
    logged = callback.last_metrics["green/epoch_train_flops"]
    if mode == "every-step":
        assert logged == truth and info["epoch_methods"] == ["counted"]
    else:
        assert info["epoch_methods"] == ["sampled"] and info["data_dependent"]
        low, high = info["epoch_train_flops_range"][0]
        assert low <= truth <= high and low <= logged <= high
    with pytest.raises(ValueError, match="every-step"):
        GreenCallback(flops="always")


def test_counts_on_a_verified_polynomial_are_not_checked_again():
    """Lengths whose counts verified a polynomial (#20) are checked by it; repeating them watches no more steps."""

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.out = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.out((self.q(x) @ x.transpose(1, 2)).softmax(-1) @ x)

    torch.manual_seed(0)
    lengths = [3, 4, 5, 6, 7, 8, 9, 10] * 3
    epoch, truth, tracker, _ = _epoch(Attention(), [(torch.randn(2, n, 4),) for n in lengths], _loss)
    assert epoch.train_flops == truth
    counts = tracker.info()["counts"]
    assert counts["observed"] == 4  # 3 fit + 1 verification; 5 lengths predicted
    # none: the reference length is the line's first point, checked by the polynomial like the others (it used to be
    # watched on its 2nd step, one more watched step per line)
    assert counts["checks"] == 0

"""The report's figures draw each figure's interval (docs/uncertainty.md): error bars on each epoch's energy, on the
cumulative energy and on each run of a search, from the record's low/high; none where a figure has no basis."""

from __future__ import annotations

import pytest

from green_callbacks.report.plots import (
    INTERVAL_LABEL,
    energy_per_epoch_figure,
    metric_vs_cost_figure,
    sweep_energy_figure,
)
from green_callbacks.report.runs import summarize_run
from tests.records import CARBON, make_records

pytest.importorskip("matplotlib")  # optional: the plots module imports it only when a figure is drawn



def _run(spans, index=0, value=0.9):
    """Three epochs of 100 J on the GPU; ``spans``: each epoch's (low, high), or None for no basis."""
    epochs = [(10.0, {"gpu": 100.0}, 0.0, 1e9, 1e8, {"val_acc": value - 0.1 + 0.05 * i}) for i in range(3)]
    data = make_records.record(run_id=f"r{index:03d}{'0' * 28}", status="completed", carbon=CARBON,
                               components={"gpu": {"scope": "device", "method": "nvml-energy-counter"}},
                               epochs_spec=epochs, monitor="val_acc", mode="max", hyperparameters={"lr": index})
    low_total = high_total = 0.0
    for row, span in zip(data["epochs"], spans, strict=True):
        if span is not None:
            row["energy_low_j"], row["energy_high_j"] = span
            low_total, high_total = low_total + span[0], high_total + span[1]
            row["totals"]["energy_low_j"], row["totals"]["energy_high_j"] = low_total, high_total
    if all(s is not None for s in spans):
        data["totals"]["energy_low_j"], data["totals"]["energy_high_j"] = low_total, high_total
    return summarize_run(data)


def _bars(ax):
    """The error-bar containers of an axes: their segments ((x0, y0), (x1, y1)) and legend label."""
    out = []
    for container in ax.containers:
        if type(container).__name__ == "ErrorbarContainer":
            (segments,) = [c.get_segments() for c in container.lines[2]]
            out.append(([tuple(map(tuple, s)) for s in segments], container.get_label()))
    return out


def test_each_epochs_energy_has_its_interval_as_an_error_bar():
    fig = energy_per_epoch_figure(_run([(90.0, 110.0), (80.0, 130.0), None]))
    ((segments, label),) = _bars(fig.axes[0])
    # epochs 0 and 1 (x = epoch) from low to high; epoch 2 has no basis: no bar, said in the legend
    assert segments == [((0.0, 90.0), (0.0, 110.0)), ((1.0, 80.0), (1.0, 130.0))]
    assert label == f"{INTERVAL_LABEL}; 1 of 3 without (no basis for an interval)"


def test_no_interval_no_error_bar():
    fig = energy_per_epoch_figure(_run([None, None, None]))
    assert _bars(fig.axes[0]) == []


def test_cumulative_energy_has_horizontal_error_bars():
    fig = metric_vs_cost_figure(_run([(90.0, 110.0), (80.0, 130.0), (95.0, 105.0)]))
    energy_ax = fig.axes[-1]
    ((segments, _),) = _bars(energy_ax)
    # cumulative: 100 (90-110), 200 (170-240), 300 (265-345) J, at val_acc 0.8, 0.85, 0.9
    expected = [((90.0, 0.8), (110.0, 0.8)), ((170.0, 0.85), (240.0, 0.85)), ((265.0, 0.9), (345.0, 0.9))]
    assert segments == [tuple(tuple(pytest.approx(v) for v in p) for p in s) for s in expected]


def test_each_run_of_a_search_has_its_energy_interval():
    runs = [_run([(90.0, 110.0)] * 3, 0, 0.9), _run([(80.0, 120.0)] * 3, 1, 0.8)]
    fig = sweep_energy_figure(runs, "val_acc", runs[0].label)
    ((segments, label),) = _bars(fig.axes[0])
    assert segments == [((270.0, 0.9), (330.0, 0.9)), ((240.0, pytest.approx(0.8)), (360.0, pytest.approx(0.8)))]
    assert label == INTERVAL_LABEL

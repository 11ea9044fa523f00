"""Ray Tune experiments as searches (green_callbacks.ray): a Tune experiment of 4 trials whose trainable drives the
loop ``Tracker`` (a Lightning fit per trial in Ray workers is too heavy for a 2-core CI machine) gives 4 trial
records in the experiment folder, bound to their trials, the energy in each trial's results, the experiment's
totals in the driver's callback, and one report whether read from the experiment folder or from the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")
torch = pytest.importorskip("torch")

from green_callbacks.core.record import find_records, read_record  # noqa: E402

STEP_J = 3.0  # joules per sensor read
INTENSITY = 200.0  # gCO2e/kWh
EPOCHS = 2
NAME = "tiny-tune"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def trainable(config: dict[str, Any]) -> None:
    """A linear model trained for 2 epochs of 2 steps, measured by the loop Tracker (no search identity given
    besides the method and space: the name and trial id come from Ray)."""
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.loop import Tracker

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    tracker = Tracker(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=INTENSITY,
                      output_dir=config["records"], hyperparameters={"lr": config["lr"]}, monitor="loss",
                      search={"name": NAME, "method": "random", "space": {"lr": "log"}})
    with tracker:
        for _ in range(EPOCHS):
            with tracker.epoch() as epoch:
                for i in (0, 4):
                    loss = torch.nn.functional.mse_loss(model(x[i:i + 4]), y[i:i + 4])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    tracker.step((x[i:i + 4],))
                epoch.metrics["loss"] = float(loss)
            tune.report({"loss": float(loss), **tracker.last_metrics})


def report_json(folder: Path) -> dict[str, Any]:
    """The JSON report of ``folder``, each record named by its file name (the experiment keeps each in its trial's
    subfolder) and the runs in one order."""
    from green_callbacks.report.build import build_report
    from green_callbacks.report.render import render_json
    from green_callbacks.report.runs import load_runs

    text = render_json(build_report(load_runs([folder])))
    for path in find_records([folder]):
        text = text.replace(str(path), path.name)
    data = json.loads(text)
    data["runs"] = sorted(data["runs"], key=lambda run: run["run_id"])
    return data


def test_tune_experiment_of_four_trials(local_ray: Any, tmp_path: Path) -> None:
    from green_callbacks.ray import GreenTuneCallback

    records = tmp_path / "records"
    green = GreenTuneCallback()
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-3, 1e-1), "records": str(records)},
        tune_config=tune.TuneConfig(num_samples=4, metric="loss", mode="min"),
        run_config=tune.RunConfig(name=NAME, storage_path=str(tmp_path / "ray"), callbacks=[green], verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 4 and not results.errors
    experiment = tmp_path / "ray" / NAME
    in_experiment = {read_record(p)["search"]["trial"]: read_record(p) for p in find_records([experiment])}
    originals = {read_record(p)["search"]["trial"]: read_record(p) for p in find_records([records])}
    ids = {r.metrics["trial_id"] for r in results}
    assert set(in_experiment) == set(originals) == ids  # one record per trial, in its trial's folder
    for result in results:
        trial_id = result.metrics["trial_id"]
        record = in_experiment[trial_id]
        assert Path(record.pop("_path")).parent == Path(result.path)  # the trial's own folder
        search = record["search"]
        assert (search["name"], search["engine"], search["method"], search["state"]) == (
            NAME, "ray", "random", "complete")
        assert record == {k: v for k, v in originals[trial_id].items() if k != "_path"}  # the copy is the record
        totals = record["totals"]
        assert totals["epochs"] == EPOCHS and totals["energy_j"] > 0
        assert totals["emissions_gco2e"] == pytest.approx(totals["energy_j"] / 3.6e6 * INTENSITY, rel=1e-12)
        assert result.metrics["green_energy_j"] == totals["energy_j"]  # the trial's results, from its record
        assert result.metrics["green_emissions_gco2e"] == totals["emissions_gco2e"]
        assert result.metrics["green/total_energy_kwh"] == pytest.approx(totals["energy_j"] / 3.6e6, rel=1e-12)
    everything = sum(r["totals"]["energy_j"] for r in originals.values())
    assert green.totals.trials == 4 and green.totals.measured == 4
    assert green.totals.energy_j == pytest.approx(everything, rel=1e-12)
    assert report_json(experiment) == report_json(records)

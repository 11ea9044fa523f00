"""Ray Tune experiments as searches (green_callbacks.ray): a Tune experiment of 4 trials, each a Lightning fit with
the callback, gives 4 trial records in the experiment folder, bound to their trials, the energy in each trial's
results, the experiment's totals in the driver's callback, and one report whether read from the experiment folder
or from the records. (The loop ``Tracker`` in a trainable: docs/search.md's example, run by test_search_docs.py;
one Ray experiment here keeps CI short: Ray starts in about 4 s, each Lightning worker imports in about 5 s.)"""

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


def lightning_trainable(config: dict[str, Any]) -> None:
    """A linear model fitted for 2 epochs of 2 steps by Lightning with the callback, which is given the method and
    space (Tune does not tell a trial its space), not the trial; a small callback hands the epoch's metrics to Tune
    (as Ray's own Lightning report callbacks do), after the green/ keys were logged."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.lightning import GreenCallback

    if config["fail"]:  # fails before its fit: no record, its energy not measured
        raise RuntimeError("the data could not be read")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=config["lr"])

    class ReportToTune(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            tune.report({k: float(v) for k, v in trainer.callback_metrics.items()})

    torch.manual_seed(0)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    green = GreenCallback(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=INTENSITY,
                          output_dir=config["records"], monitor="loss",
                          search={"name": NAME, "method": "random", "space": {"lr": "log"}})
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[green, ReportToTune()])
    trainer.fit(Module(), DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))


def report_json(folder: Path, experiment: Path | None = None) -> dict[str, Any]:
    """The JSON report of ``folder``, each record named by its file name (the experiment keeps each in its trial's
    subfolder) and the runs in one order; with ``experiment``, its trials joined with the records (as
    ``green-callbacks report --ray-experiment``)."""
    from green_callbacks.report.build import ReportOptions, build_report
    from green_callbacks.report.engines import join_engines, read_ray
    from green_callbacks.report.render import render_json
    from green_callbacks.report.runs import load_runs

    loaded, joins = load_runs([folder]), ()
    if experiment is not None:
        loaded, joins = join_engines(loaded, [read_ray(experiment)])
    text = render_json(build_report(loaded, ReportOptions(engines=joins)))
    for path in find_records([folder]):
        text = text.replace(str(path), path.name)
    data = json.loads(text)
    data["runs"] = sorted(data["runs"], key=lambda run: run["run_id"])
    return data


def test_tune_experiment_of_four_lightning_trials(local_ray: Any, tmp_path: Path, capsys: Any) -> None:
    """Four trials with the callback and a fifth that fails before its fit: four records, and the report read
    from the experiment folder is the records' report, plus the trial without a record counted."""
    pytest.importorskip("lightning")
    from green_callbacks.ray import GreenTuneCallback

    records = tmp_path / "records"
    green = GreenTuneCallback()
    tuner = tune.Tuner(
        lightning_trainable,
        param_space={"lr": tune.loguniform(1e-3, 1e-1), "records": str(records),
                     "fail": tune.grid_search([False, False, False, False, True])},
        tune_config=tune.TuneConfig(num_samples=1, metric="loss", mode="min"),
        run_config=tune.RunConfig(name=NAME, storage_path=str(tmp_path / "ray"), callbacks=[green], verbose=0),
    )
    everything_run = tuner.fit()
    assert len(everything_run) == 5 and len(everything_run.errors) == 1
    results = [r for r in everything_run if r.error is None]
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
    assert green.totals.trials == 5 and green.totals.measured == 4  # the failed trial: seen, not measured
    assert green.totals.energy_j == pytest.approx(everything, rel=1e-12)
    assert report_json(experiment) == report_json(records)
    joined = report_json(experiment, experiment)
    note = joined["sweeps"][0].pop("engine_note")
    assert note == (f"5 trial(s) in the ray experiment {NAME!r}, 4 with a record; without one: 1 failed — their "
                    "energy was not measured and is not in the search's cost (a failed trial without a record "
                    "failed before its run began).")
    assert joined["sweep"].pop("engine_note") == note
    joined["sweep_summary"].remove(note)
    plain = report_json(records)
    assert plain["sweeps"][0].pop("engine_note") == plain["sweep"].pop("engine_note") == ""
    assert joined == plain  # the same report, plus the note
    from green_callbacks.report.command import run_report

    capsys.readouterr()
    assert run_report(ray_experiment=str(experiment), format="json") == 0  # no PATH: the experiment's records
    assert json.loads(capsys.readouterr().out)["sweeps"][0]["engine_note"] == note


def measured_loop(records: str, report: Any = None) -> None:
    """2 epochs measured by the Tracker with a per-device sensor (STEP_J per read, on each rank)."""
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.loop import Tracker

    tracker = Tracker(sensors=[StepEnergySensor("gpu", STEP_J)], carbon_intensity=INTENSITY, output_dir=records,
                      monitor="loss")
    with tracker:
        for epoch in range(EPOCHS):
            with tracker.epoch() as ep:
                tracker.step(samples=4)
                ep.metrics["loss"] = 1.0 / (epoch + 1)
            if report is not None:
                report({"loss": 1.0 / (epoch + 1), **tracker.last_metrics})


def train_loop(config: dict[str, Any]) -> None:
    """Each of 2 Ray Train workers measures its own part."""
    import ray.train

    measured_loop(config["records"], ray.train.report)


def test_ray_train_sums_its_workers_before_reporting(local_ray: Any, tmp_path: Path) -> None:
    """Only rank 0's metrics reach Ray: they must be the run's, both workers summed (over torch.distributed, which
    Ray Train sets up); one record, by rank 0, bound to the run and copied into the run's folder."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    measured_loop(str(tmp_path / "one"))  # the same loop in one process, outside Ray: one rank's energy
    [alone] = find_records([tmp_path / "one"])
    one_rank_j = read_record(alone)["totals"]["energy_j"]
    assert read_record(alone)["search"] is None and one_rank_j > 0  # no Ray run here: not bound
    records = tmp_path / "records"
    trainer = TorchTrainer(train_loop, train_loop_config={"records": str(records)},
                           scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                           run_config=RunConfig(name="tiny-train", storage_path=str(tmp_path / "ray")))
    trainer.fit()  # (Ray Train V2 keeps no metrics reported without a checkpoint in its Result)
    [path] = find_records([records])
    record = read_record(path)
    assert record["world_size"] == 2 and record["search"]["name"] == "tiny-train"
    assert record["search"]["engine"] == "ray" and record["search"]["state"] == "complete"
    assert record["totals"]["energy_j"] == pytest.approx(2 * one_rank_j, rel=1e-12)  # both workers summed
    [copy] = find_records([tmp_path / "ray" / "tiny-train"])
    assert {k: v for k, v in read_record(copy).items() if k != "_path"} == {
        k: v for k, v in record.items() if k != "_path"}

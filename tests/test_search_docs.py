"""The examples of docs/search.md run as users run them (a subprocess in an empty folder, the machine's sensors),
and give what the page says: each trial's record bound to its trial, the engine's totals equal to the records'."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.core.record import find_records, read_record

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "search.md"
pytestmark = pytest.mark.slow


def example(name: str) -> str:
    found = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert found, f"docs/search.md has no example {name!r}"
    return found.group(1)


def run(name: str, tmp_path: Path, timeout_s: int = 300) -> str:
    script = tmp_path / f"{name}_example.py"
    script.write_text(example(name), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GREEN_CALLBACKS_STRICT": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_the_examples_are_on_the_page() -> None:
    for name in ("optuna", "transformers", "ray"):
        compile(example(name), f"docs/search.md:{name}", "exec")


def test_optuna_example(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("lightning")
    run("optuna", tmp_path)
    import optuna

    study = optuna.load_study(study_name="regressor", storage=f"sqlite:///{tmp_path / 'study.db'}")
    records = {r["search"]["trial"]: r for r in map(read_record, find_records([tmp_path / "green_runs"]))}
    assert sorted(records) == sorted(t.number for t in study.trials) and records
    for trial in study.trials:
        record = records[trial.number]
        assert record["search"]["name"] == "regressor" and record["search"]["method"] == "tpe"
        assert record["search"]["state"] == trial.state.name.lower().replace("fail", "failed")
        assert trial.user_attrs["green_energy_j"] == record["totals"]["energy_j"]
    # the report over the study's own data, as the page shows it
    proc = subprocess.run([sys.executable, "-m", "green_callbacks.cli", "report", "green_runs", "--optuna-storage",
                           "sqlite:///study.db", "--study", "regressor"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n = len(study.trials)
    assert f"{n} trial(s) in the optuna study 'regressor', {n} with a record." in " ".join(proc.stdout.split())


def test_transformers_example(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    pytest.importorskip("transformers")
    run("transformers", tmp_path)
    records = [r for r in map(read_record, find_records([tmp_path / "green_runs"])) if r["kind"] == "fit"]
    assert sorted(r["search"]["trial"] for r in records) == [0, 1, 2]
    assert {r["search"]["name"] for r in records} == {"hf-search"}


def test_ray_example(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune")
    pytest.importorskip("torch")
    out = run("ray", tmp_path)
    in_experiment = list(find_records([tmp_path / "ray_results" / "lr-tune"]))
    assert len(in_experiment) == 4 and "experiment: ExperimentTotals(trials=4, measured=4" in out
    assert {read_record(p)["search"]["engine"] for p in in_experiment} == {"ray"}

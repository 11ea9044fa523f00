"""Each front end's own words, and warnings that point at the user's line.

The callbacks say ``GreenCallback(monitor=...)``, the loop Tracker ``Tracker(monitor=...)``, ``green-callbacks
measure`` its flags (``--country FR``); a warning's location is the line of the user's code that led to it (here:
this test file), not the package's or the framework's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from green_callbacks.core import carbon
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.wording import CALLBACK, MEASURE, TRACKER

ROOT = Path(__file__).resolve().parents[1]
NO_GRID = ("GREEN_CALLBACKS_COUNTRY", "GREEN_CALLBACKS_REGION", "GREEN_CALLBACKS_CARBON_INTENSITY")


@pytest.fixture
def no_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_GRID:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(carbon, "_world_warned", False)




def test_front_ends_spell_an_option_their_own_way() -> None:
    assert CALLBACK.passing(CALLBACK.setting("monitor", "...", literal=True)) == "GreenCallback(monitor=...)"
    assert TRACKER.passing(TRACKER.setting("country", "FR")) == "Tracker(country='FR')"
    assert MEASURE.passing(MEASURE.setting("carbon_intensity", 50)) == "--carbon-intensity 50"
    assert not MEASURE.has("monitor") and TRACKER.has("monitor")


def test_tracker_warnings_name_the_tracker_and_point_at_the_users_line(tmp_path, no_grid) -> None:
    from green_callbacks.loop import Tracker

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(output_dir=str(tmp_path), sensors=[ConstantPowerSensor("cpu", 20.0, scope="node")])
        with tracker, tracker.epoch():
            tracker.step(None)
    ours = [w for w in caught if "green_callbacks" in str(w.message)]
    texts = " ".join(str(w.message) for w in ours)
    assert "no validation metric" in texts and "world average" in texts
    assert "Tracker(monitor=...)" in texts and "country='FR'" in texts
    assert "GreenCallback" not in texts
    assert {w.filename for w in ours} == {__file__}, [(w.filename, w.lineno) for w in ours]


def test_lightning_warnings_point_at_the_users_line(tmp_path, no_grid) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback
    from tests.models import lightning_module

    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    train = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback = GreenCallback(sensors=[ConstantPowerSensor("cpu", 20.0, scope="node")], output_dir=str(tmp_path))
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             default_root_dir=str(tmp_path))
        trainer.fit(lightning_module(nn.Linear(4, 2), steps=("training",)), train)
    ours = [w for w in caught if str(w.message).startswith("green_callbacks:")]
    texts = " ".join(str(w.message) for w in ours)
    assert "no validation metric" in texts and "GreenCallback(monitor=...)" in texts
    assert "country='FR'" in texts
    assert ours and {w.filename for w in ours} == {__file__}, [(w.filename, w.lineno) for w in ours]


def test_measure_says_its_flags(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in NO_GRID}
    env["GREEN_CALLBACKS_RAPL_ROOT"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path), "--", sys.executable,
         "-c", "pass"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "--country FR" in result.stderr and "--carbon-intensity <gCO2e/kWh>" in result.stderr
    assert "country='FR'" not in result.stderr
    assert "GreenCallback" not in result.stderr and "monitor" not in result.stderr  # measure has no metric to follow


def test_demo_without_torch_says_what_to_install() -> None:
    code = ("import sys; sys.modules['torch'] = None; from green_callbacks.cli import main; "
            "raise SystemExit(main(['demo']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert 'pip install "green-callbacks[lightning]"' in result.stderr
    assert "Traceback" not in result.stderr and "'torch'" in result.stderr


def test_demo_with_an_unknown_country_says_so_before_importing_torch() -> None:
    """A bad ``--country`` is one line and exit 2 at once: torch is not even importable here, and the error is the
    country's, not the missing install's (importing torch and Lightning first took seconds)."""
    code = ("import sys; sys.modules['torch'] = None; from green_callbacks.cli import main; "
            "raise SystemExit(main(['demo', '--epochs', '1', '--country', 'XX']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("green-callbacks demo: --country: No packaged carbon intensity for country='XX'")
    assert "pip install" not in result.stderr and "Traceback" not in result.stderr

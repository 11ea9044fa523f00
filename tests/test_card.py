"""``green-callbacks card`` and the HF Trainer's model card: the Hub's ``co2_eq_emissions`` block (grams), parsed
back with ``huggingface_hub``'s own card tools, offline; the push path with the Hub faked at its HTTP boundary."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from green_callbacks.cli import main
from green_callbacks.core.record import read_record
from green_callbacks.report.card import card_text, merge_into_card
from green_callbacks.report.runs import summarize_run

DATA = Path(__file__).parent / "data" / "records"
J_PER_KWH = 3.6e6


def _hub():
    return pytest.importorskip("huggingface_hub", reason="the card tests parse cards with huggingface_hub")


def _block(text: str) -> dict:
    card = _hub().ModelCard(text, ignore_metadata_errors=False)
    return card.data.to_dict()["co2_eq_emissions"]


def test_card_of_the_fixture_run_parses_with_huggingface_hub(capsys) -> None:
    assert main(["card", str(DATA / "single"), "--training-type", "fine-tuning"]) == 0
    out = capsys.readouterr().out
    block = _block(out)
    # 1920 J of IT energy x PUE 1.2 x 56 gCO2e/kWh, in grams (the Hub's unit)
    assert block["emissions"] == pytest.approx(1920 * 1.2 * 56 / J_PER_KWH, rel=1e-12)
    assert block["training_type"] == "fine-tuning"
    assert block["geographical_location"] == "FRA"
    assert block["hardware_used"] == "1 x NVIDIA H100 80GB HBM3"
    assert "rapl" in block["source"] and "Ember" in block["source"] and "PUE 1.2" in block["source"]
    assert "## Training emissions" in out and "not an offset" in out
    data = _hub().ModelCardData(co2_eq_emissions=block)  # the Hub's own metadata class keeps it as it is
    assert _block("---\n" + data.to_yaml() + "\n---\n") == block
    assert f"{1920 / J_PER_KWH:.4g} kWh of IT energy" in out
    assert "1.2e+15 training FLOPs" in out


def test_record_text_cannot_leave_its_yaml_scalar_or_make_markdown(tmp_path) -> None:
    data = read_record(DATA / "single" / "green-run-single.json")
    data["carbon"]["location"] = 'FR"\n---\ninjected: yes\n<script>alert(1)</script>\x9b2J\x1b]0;t\x07'
    data["components"]["gpu"]["devices"][0]["name"] = "GPU ![x](https://evil.example/p.png) \\\"\n: x"
    text = card_text(summarize_run(data))
    card = _hub().ModelCard(text)
    meta = card.data.to_dict()
    assert "injected" not in meta
    where = meta["co2_eq_emissions"]["geographical_location"]
    assert where == 'FR"\n---\ninjected: yes\n<script>alert(1)</script>2J]0;t'  # the text, less its controls
    assert not any("\x80" <= c <= "\x9f" or c in "\x1b\x07" for c in text)  # nothing a terminal would run
    assert meta["co2_eq_emissions"]["hardware_used"] == "1 x " + data["components"]["gpu"]["devices"][0]["name"]
    assert "<script>" not in card.text and "![x](" not in card.text


def test_merging_keeps_the_other_metadata_and_replaces_an_older_block(tmp_path, capsys) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\nco2_eq_emissions:\n  emissions: 99\ntags:\n- text\n---\n\n# My model\n",
                      encoding="utf-8")
    for _ in range(2):
        assert main(["card", str(DATA / "single" / "green-run-single.json"), "--into", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    card = _hub().ModelCard(text)
    meta = card.data.to_dict()
    assert meta["license"] == "mit" and meta["tags"] == ["text"]
    assert meta["co2_eq_emissions"]["emissions"] == pytest.approx(0.03584)
    assert "training_type" not in meta["co2_eq_emissions"]  # not known, not guessed
    assert text.count("## Training emissions") == 1 and "# My model" in text


def test_a_run_without_emissions_gets_no_card(tmp_path, capsys) -> None:
    data = read_record(DATA / "single" / "green-run-single.json")
    data["epochs"], data["totals"]["emissions_gco2e"] = [], None
    path = tmp_path / "green-run-empty.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["card", str(path)]) == 1
    assert "no measured emissions" in capsys.readouterr().err
    with pytest.raises(ValueError, match="training_type"):
        merge_into_card("", summarize_run(read_record(DATA / "single" / "green-run-single.json")),
                        training_type="training")


def _check_card_of(folder: Path, capsys) -> None:
    assert main(["card", str(folder)]) == 0
    block = _block(capsys.readouterr().out)
    record = read_record(next(folder.glob("green-run-*.json")))
    assert record["totals"]["emissions_gco2e"] > 0
    assert block["emissions"] == record["totals"]["emissions_gco2e"]
    # the record's energy x PUE x intensity, in grams
    carbon = record["carbon"]
    assert block["emissions"] == pytest.approx(
        record["totals"]["energy_j"] * carbon["pue"] * carbon["intensity_gco2e_per_kwh"] / J_PER_KWH, rel=1e-9)


def test_card_of_a_tracker_run(tmp_path, fake_clock, capsys) -> None:
    pytest.importorskip("torch")
    from tests.models import mlp
    from tests.test_loop import Tracker, sensors, train

    train(Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), sensors=sensors()), mlp(seed=0), fake_clock.advance)
    _check_card_of(tmp_path, capsys)


def test_card_of_a_lightning_run(tmp_path, fake_clock, capsys) -> None:
    from tests.test_lightning import green, loaders, lp, make_module, trainer

    trainer(lp, tmp_path, [green(output_dir=str(tmp_path / "runs"))], max_epochs=2).fit(
        make_module(lp, fake_clock.advance), *loaders())
    _check_card_of(tmp_path / "runs", capsys)


def test_card_of_a_keras_run(tmp_path, capsys) -> None:
    from tests.test_keras import BATCH, _data, _green, _model

    _model().fit(*_data(25), epochs=2, batch_size=BATCH, verbose=0, callbacks=[_green(tmp_path)])
    _check_card_of(tmp_path / "runs", capsys)


# ---------------------------------------------------------------- the HF Trainer writes the card
def _hf_trainer(tmp_path: Path, **overrides):
    from tests.test_transformers import green, make_trainer

    callback = green()
    trainer = make_trainer(tmp_path, [callback], num_train_epochs=1, **overrides)
    trainer.train()
    return trainer, callback


def test_create_model_card_holds_the_records_grams(tmp_path) -> None:
    hub = _hub()
    httpx2 = pytest.importorskip("httpx2", reason="the Hub client's HTTP library")
    fake = FakeHub()
    hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    try:
        trainer, callback = _hf_trainer(tmp_path)
        trainer.create_model_card()  # writes output_dir/README.md
    finally:
        from huggingface_hub.utils._http import default_client_factory

        hub.set_client_factory(default_client_factory)
    assert fake.calls == []  # no network
    readme = Path(trainer.args.output_dir) / "README.md"
    card = hub.ModelCard.load(readme)
    block = card.data.to_dict()["co2_eq_emissions"]
    record = read_record(callback.record_path)
    assert block["emissions"] == record["totals"]["emissions_gco2e"] > 0
    assert block["emissions"] == pytest.approx(record["totals"]["energy_j"] * 100.0 / J_PER_KWH, rel=1e-9)
    assert block["training_type"] == "pre-training"  # the tiny BERT is built from a config
    assert "geographical_location" not in block  # an explicit intensity has no location
    assert "generated_from_trainer" in card.data.to_dict()["tags"]  # the Trainer's own metadata is kept
    trainer.create_model_card()  # a second write: one block, one paragraph
    assert readme.read_text(encoding="utf-8").count("## Training emissions") == 1


class FakeHub:
    """The Hub's HTTP API as far as ``Trainer.push_to_hub`` uses it: create the repo, validate the README's YAML,
    pre-upload, commit. The commit's files are kept (decoded) to read what would have been uploaded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.committed: dict[str, bytes] = {}

    def __call__(self, request):
        import httpx2

        path = request.url.path
        self.calls.append(path)
        if path.endswith("/api/repos/create"):
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/tiny", "name": "me/tiny"})
        if path.endswith("/api/validate-yaml"):
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/tiny/commit/" + "a" * 40,
                                              "commitOid": "a" * 40})
        return httpx2.Response(404, json={"error": f"not faked: {path}"})


def test_push_to_hub_uploads_the_card_with_the_block(tmp_path, monkeypatch) -> None:
    hub = _hub()
    httpx2 = pytest.importorskip("httpx2", reason="the Hub client's HTTP library")
    fake = FakeHub()
    hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    try:
        trainer, callback = _hf_trainer(tmp_path, hub_model_id="me/tiny", hub_token="hf_not_a_token")
        trainer.push_to_hub()
    finally:
        from huggingface_hub.utils._http import default_client_factory

        hub.set_client_factory(default_client_factory)
    assert any(c.endswith("/commit/main") for c in fake.calls), fake.calls
    uploaded = fake.committed["README.md"].decode("utf-8")
    block = hub.ModelCard(uploaded).data.to_dict()["co2_eq_emissions"]
    assert block["emissions"] == read_record(callback.record_path)["totals"]["emissions_gco2e"] > 0
    assert "## Training emissions" in uploaded


def test_a_card_that_cannot_be_updated_warns_and_leaves_the_trainers(tmp_path, monkeypatch) -> None:
    _hub()
    from green_callbacks.report import card

    trainer, _ = _hf_trainer(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(card, "add_to_model_card", disk_full)
    with pytest.raises(OSError):  # strict mode (the tests): the failure is raised
        trainer.create_model_card()
    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "0")
    with pytest.warns(RuntimeWarning, match="could not add the training emissions to the model card"):
        trainer.create_model_card()  # a user's run: a warning, the Trainer's card as it wrote it
    assert "co2_eq_emissions" not in (Path(trainer.args.output_dir) / "README.md").read_text(encoding="utf-8")

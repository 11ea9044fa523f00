"""The HTML report in a real browser (#15.10): headless Chromium loads the page, every figure decodes and is laid
out at a visible size, the console stays free of errors, and a screenshot is kept.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-separated JSON on file
descriptors 3 and 4), with the standard library only. Skipped where no ``chromium`` is installed (Debian:
``apt-get install chromium``). The screenshot lands in pytest's temporary folder and, when the environment variable
``GREEN_CALLBACKS_ARTIFACTS`` names a folder, is copied there.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from green_callbacks.report.command import run_report

RECORDS = Path(__file__).parent / "data" / "records"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,900", "--remote-debugging-pipe"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # the child reads commands on fd 3 and writes answers on fd 4
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"], preexec_fn=wire,
            pass_fds=(3, 4), stdout=self.log, stderr=self.log)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and failed loads seen since :meth:`open`."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: " + json.dumps(params.get("args"))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                out.append("log: " + params["entry"].get("text", "")[:300])
        return out

    def screenshot(self, target: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        target.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10)
        except Exception:  # closing: the pipe may already be gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass


FIGURES_JS = """JSON.stringify(Array.from(document.images).map(img => {
  const box = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
          shown: [Math.round(box.width), Math.round(box.height)],
          visible: getComputedStyle(img).visibility === 'visible' && getComputedStyle(img).display !== 'none',
          inside: box.left >= 0 && box.right <= document.documentElement.scrollWidth};
}))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium)")
    pytest.importorskip("matplotlib")
    session = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield session
    session.close()


def _keep(screenshot: Path) -> None:
    folder = os.environ.get("GREEN_CALLBACKS_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(folder) / screenshot.name)


def test_html_report_renders_in_chromium(browser, tmp_path) -> None:
    page = tmp_path / "report.html"
    paths = [str(RECORDS / "sweep"), str(RECORDS / "crashed")]
    assert run_report(paths=paths, format="html", out=str(page), pledge=True, tolerance="3%") == 0
    browser.open(page)
    figures = json.loads(browser.evaluate(FIGURES_JS))
    # the 3 x 3 grid is a search of 9 runs > 4: its three figures (best against energy, sensitivity, expected best)
    # and its best run's two; the crashed run (no hyperparameters, so not a run of this search: #26) gets its own two
    assert len(figures) == 7, figures
    for figure in figures:
        assert figure["complete"] and figure["natural"][0] > 300 and figure["natural"][1] > 200, figure
        assert figure["visible"] and figure["inside"] and figure["shown"][0] > 300 and figure["shown"][1] > 150, figure
    assert browser.evaluate("document.querySelectorAll('svg').length") >= 2  # badges inline
    assert browser.evaluate("document.title") == "green_callbacks report"
    assert browser.problems() == []
    shot = browser.screenshot(tmp_path / "green-callbacks-report.png")
    assert shot.startswith(PNG_MAGIC) and len(shot) > 50_000
    _keep(tmp_path / "green-callbacks-report.png")


def test_hostile_and_extreme_records_do_not_break_the_page(browser, tmp_path) -> None:
    """Records that once broke the page: a value of 1.7e308 (the plots failed) and markup in text fields."""
    folder = tmp_path / "runs"
    shutil.copytree(RECORDS / "sweep", folder)
    single = json.loads((RECORDS / "single" / "green-run-single.json").read_text())
    huge = json.loads((folder / "green-run-sweep-12.json").read_text())  # the search's best run
    huge["epochs"][1]["component_energy_j"]["gpu"] = huge["totals"]["energy_j"] = 1.7e308
    (folder / "green-run-sweep-12.json").unlink()
    (folder / "green-run-huge.json").write_text(json.dumps(huge))
    single.update(run_id='<img src=x onerror="window.pwned=1">', error="</td></table><script>window.pwned=2</script>")
    single["hyperparameters"] = {"x": '"><svg onload="window.pwned=3">'}
    (folder / "green-run-hostile.json").write_text(json.dumps(single))
    page = tmp_path / "report.html"
    assert run_report(paths=[str(folder)], format="html", out=str(page)) == 0
    browser.open(page)
    assert browser.evaluate("typeof window.pwned") == "undefined"
    figures = json.loads(browser.evaluate(FIGURES_JS))
    # the search's three, its best run's two (8 runs left: best lr 0.01 batch 32), and the val_loss run's two
    assert len(figures) == 7 and all(f["complete"] and f["natural"][0] > 300 for f in figures), figures
    assert browser.problems() == []
    assert "green-run-huge.json" in browser.evaluate("document.body.innerText")  # named as skipped


def test_the_check_sees_a_broken_page(browser, tmp_path) -> None:
    """The harness itself: a page with a broken image and a script error is caught (so a pass means something)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head><body>'
                    '<img alt="bad" src="data:image/png;base64,AAAA"><script>undefinedFunction()</script>'
                    "</body></html>")
    browser.open(page)
    figures = json.loads(browser.evaluate(FIGURES_JS))
    assert figures[0]["natural"] == [0, 0]
    assert any("undefinedFunction" in p for p in browser.problems())

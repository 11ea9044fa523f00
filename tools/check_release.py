"""Build the release artefacts and prove they work: ``tox -e release`` runs this (so does ``.ci/run``).

1. ``python -m build``: the sdist, then the wheel built *from the sdist* (so a file missing from the sdist fails);
2. ``twine check --strict`` on both;
3. the wheel holds every file of the package (each ``.py`` and each data file: ``core/data/*.csv``, ``*.md``,
   ``py.typed``, ...), the extras and the ``green-callbacks`` command;
4. a fresh virtual environment gets the wheel (``pip install`` under ``constraints/test.txt``, so an extra can never
   pull a multi-GB CUDA torch); from a folder outside the checkout it imports ``green_callbacks`` (no ML framework
   imported), reads the packaged tables, runs ``green-callbacks --help`` and
   ``green-callbacks measure --country KE -- python -c pass`` and reads the record it wrote.

Usage: ``python tools/check_release.py [--extras lightning] [--keep DIR]``. Needs ``build`` and ``twine``
(the tox env installs them) and the network only for what pip needs (the build backend, the wheel's
dependencies).
"""

from __future__ import annotations

import argparse
import email
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "green_callbacks"
EXTRAS = ("torch", "lightning", "keras", "transformers", "plot", "optuna", "ray", "all", "dev")
FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "keras", "transformers", "tensorflow", "jax")


def package_files(root: Path = ROOT) -> list[str]:
    """Every file of the package as a wheel path (``green_callbacks/...``): git's list when it has one."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", PACKAGE], capture_output=True, check=True, text=True
        ).stdout.split("\0")
        files = [name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        files = [p.relative_to(root).as_posix() for p in (root / PACKAGE).rglob("*") if p.is_file()]
    return sorted(f for f in files if "__pycache__" not in f and not f.endswith((".pyc", ".pyo")))


def wheel_problems(wheel: Path, expected: list[str]) -> list[str]:
    """What is wrong with the wheel: package files it lacks, extras or the command it does not declare."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        problems = [f"missing from the wheel: {name}" for name in expected if name not in names]
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        points_name = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        if meta_name is None:
            return [*problems, "the wheel has no METADATA"]
        metadata = email.message_from_bytes(archive.read(meta_name))
        extras = set(metadata.get_all("Provides-Extra") or [])
        problems += [f"extra not declared: {extra}" for extra in EXTRAS if extra not in extras]
        points = archive.read(points_name).decode() if points_name else ""
        if "green-callbacks = green_callbacks.cli:main" not in points:
            problems.append("the green-callbacks command is not declared in entry_points.txt")
    return problems


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    shown = ["<script>" if "\n" in str(c) else str(c) for c in cmd]
    print("+", " ".join(shown), flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-4000:])
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"failed (exit {result.returncode}): {' '.join(str(c) for c in cmd)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default="", help="extras to install with the wheel, e.g. lightning")
    parser.add_argument("--keep", help="folder for dist/, the venv and the run (default: a temporary folder)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="green-release-") as scratch:
        work = Path(args.keep or scratch).resolve()
        dist, venv, run_dir = work / "dist", work / "venv", work / "run"
        for folder in (dist, run_dir):
            folder.mkdir(parents=True, exist_ok=True)

        _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
        [sdist] = sorted(dist.glob("*.tar.gz"))
        [wheel] = sorted(dist.glob("*.whl"))
        _run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])

        problems = wheel_problems(wheel, package_files())
        if problems:
            raise SystemExit("the wheel is incomplete:\n  " + "\n  ".join(problems))
        print(f"wheel holds all {len(package_files())} package files, the extras and the command")

        _run([sys.executable, "-m", "venv", str(venv)])
        py, command = venv / "bin" / "python", venv / "bin" / "green-callbacks"
        target = f"{wheel}[{args.extras}]" if args.extras else str(wheel)
        constraint = ROOT / "constraints" / "test.txt"
        _run([str(py), "-m", "pip", "install", "-q", "-c", str(constraint), target])

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GREEN_CALLBACKS_COUNTRY")}
        probe = (
            "import sys, green_callbacks\n"
            "from green_callbacks.core.carbon import country_table, gcp_region_table, lookup_country\n"
            f"assert green_callbacks.__file__.startswith({str(venv)!r}), green_callbacks.__file__\n"
            f"loaded = sorted(set({FRAMEWORKS!r}) & set(sys.modules))\n"
            "assert not loaded, f'import green_callbacks imported {loaded}'\n"
            "assert len(country_table()) > 200 and len(gcp_region_table()) > 40\n"
            "value = lookup_country('KEN')\n"
            "assert value.location == 'KE' and value.source and value.year, value\n"
            "print('import ok:', green_callbacks.__file__)\n"
        )
        print(_run([str(py), "-c", probe], cwd=run_dir, env=env).stdout.strip())
        helped = _run([str(command), "--help"], cwd=run_dir, env=env).stdout
        if "measure" not in helped or "report" not in helped:
            raise SystemExit(f"green-callbacks --help does not list its commands:\n{helped}")
        measured = _run(
            [str(command), "measure", "--country", "KE", "--output-dir", str(run_dir / "records"), "--",
             str(py), "-c", "pass"],
            cwd=run_dir, env=env,
        )
        [record_path] = sorted((run_dir / "records").glob("green-run-*.json"))
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("status") != "completed" or record.get("carbon", {}).get("location") != "KE":
            raise SystemExit(f"unexpected record {record_path}: status={record.get('status')}")
        emissions = [line.strip() for line in measured.stderr.splitlines() if "emissions:" in line]
        print(emissions[0] if emissions else "(no emissions line in the summary)")
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KiB" for p in (sdist, wheel))
        print(f"release check passed in {time.monotonic() - start:.0f} s: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

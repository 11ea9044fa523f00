"""``import green_callbacks`` (and its core) must not import any ML framework."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "keras", "tensorflow", "jax", "transformers", "lightning", "pytorch_lightning")


def test_import_leaves_frameworks_out():
    code = (
        "import sys, green_callbacks, green_callbacks.core.session, green_callbacks.core.meter, "
        "green_callbacks.core.carbon, green_callbacks.core.record, green_callbacks.cli, green_callbacks._adapter; "
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_subpackages_import_no_framework():
    code = (
        "import sys, importlib, pkgutil, green_callbacks.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'green_callbacks.core.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

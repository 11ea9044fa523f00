"""Lazy import of an optional vendor library, with the install hint when it is missing.

No vendor library is a dependency of green_callbacks: each is an extra (``pip install "green-callbacks[amd]"``)
imported only when a run trains on that vendor's device. Some bindings load their native library at import time
and raise ``OSError`` (or a bare ``Exception``) instead of ``ImportError`` when the driver is absent; every such
failure becomes a :class:`SensorUnavailableError` whose message says what is missing and what to do.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["SensorUnavailableError", "import_optional"]


class SensorUnavailableError(RuntimeError):
    """A device's energy cannot be measured here; the message says why and what to do."""


def import_optional(module: str, *, extra: str, package: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`SensorUnavailableError` naming ``package`` and the extra to install.

    Args:
        module: the import name (``"amdsmi"``).
        extra: the green-callbacks extra that installs it (``"amd"``).
        package: the PyPI name, if different from the module (``"zeus-apple-silicon"``).
        what: what is not measured without it (``"AMD GPU energy"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SensorUnavailableError(
            f"{what} is not measured: the `{module}` module is not installed ({err}). Install it with "
            f'`pip install "green-callbacks[{extra}]"` (or `pip install {package}`).'
        ) from err
    except Exception as err:  # bindings that load the native library at import (pyzes: OSError / Exception)
        raise SensorUnavailableError(
            f"{what} is not measured: `{module}` is installed but could not load its native library "
            f"({type(err).__name__}: {err}). Check that the vendor driver is installed and visible to this process."
        ) from err

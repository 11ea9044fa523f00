"""The bottom layer of the NVML sensors: loading ``pynvml``, initialising it once per process, its errors.

Layering (one way, as Zeus does it): ``_nvml_lib`` (library, init, errors, helpers) <- ``gpu_map`` (which physical
GPUs; pure functions over an NVML module) <- ``nvml`` (the sensor and its factory). ``pynvml`` is imported lazily,
through :func:`_load_pynvml`, which tests patch with a fake module.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["NvmlUnavailableError", "nvml_library", "nvml_text"]

_INIT_LOCK = threading.Lock()
_init_lib: Any = None  # the module nvmlInit succeeded or failed on
_init_error: NvmlUnavailableError | None = None


class NvmlUnavailableError(RuntimeError):
    """NVML cannot be used here; the message says why and what to do."""


def _load_pynvml() -> Any:
    """Import and return the ``pynvml`` module (from ``nvidia-ml-py``). Tests patch this function."""
    import pynvml

    return pynvml


def nvml_library() -> Any:
    """The ``pynvml`` module, with ``nvmlInit`` called once per process (thread-safe, result remembered).

    Raises:
        NvmlUnavailableError: the package is missing, or NVML could not start (no driver, no GPU access); the
            message tells the user what to do.
    """
    global _init_lib, _init_error
    try:
        lib = _load_pynvml()
    except ImportError as err:
        raise NvmlUnavailableError(
            f"the NVML bindings are not installed ({err}); GPU energy is not measured. "
            "Install them with `pip install nvidia-ml-py`."
        ) from err
    with _INIT_LOCK:
        if _init_lib is not lib:
            _init_lib, _init_error = lib, None
            try:
                lib.nvmlInit()
            except lib.NVMLError as err:
                _init_error = NvmlUnavailableError(_init_failure_reason(lib, err))
        if _init_error is not None:
            raise _init_error
    return lib


def _init_failure_reason(lib: Any, err: BaseException) -> str:
    name = type(err).__name__
    if isinstance(err, getattr(lib, "NVMLError_LibraryNotFound", ())):
        return (
            f"NVML could not start ({name}: {err}): no NVIDIA driver library (libnvidia-ml.so.1) here, so GPU "
            "energy is not measured. On a machine with NVIDIA GPUs, install the driver; in a container, start it "
            "with GPU access (`docker run --gpus all`, NVIDIA Container Toolkit)."
        )
    if isinstance(err, getattr(lib, "NVMLError_DriverNotLoaded", ())):
        return (
            f"NVML could not start ({name}: {err}): the NVIDIA driver is not loaded, so GPU energy is not "
            "measured. Check `nvidia-smi` in a shell and load or reinstall the driver."
        )
    return f"NVML could not start ({name}: {err}), so GPU energy is not measured. Check that `nvidia-smi` works."


def nvml_text(value: Any) -> str:
    """NVML strings are ``str`` in nvidia-ml-py >= 11, ``bytes`` in older bindings."""
    return value.decode() if isinstance(value, bytes) else str(value)

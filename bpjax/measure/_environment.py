"""The environment recorded beside every published number: device, versions, CPU."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import jax
import numpy as np

# Vector-ISA flags worth recording beside a CPU timing (x86 /proc/cpuinfo and ARM names).
_ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip


def cpu_info() -> dict:
    """The CPU's model and the vector ISA extensions it reports (Linux ``/proc/cpuinfo``).

    Returns:
      ``{"cpu_model", "cpu_id", "cpu_isa", "virtualized"}``: the model name, ``"family F model
      M stepping S"`` (virtual machines often report a generic name), the vector-ISA flags
      among :data:`_ISA_FLAGS`, and whether a hypervisor is reported. Elsewhere the model is
      ``platform.processor()`` and the rest is empty.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    ident = [f"{k} {fields[n]}" for k, n in (("family", "cpu family"), ("model", "model"))]
    ident += [f"stepping {fields['stepping']}"] if "stepping" in fields else []
    return {
        "cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": " ".join(ident) if "cpu family" in fields else "",
        "cpu_isa": [f for f in _ISA_FLAGS if f in flags],
        "virtualized": "hypervisor" in flags,
    }


def _version(distribution: str) -> str | None:
    # From the installed metadata, so recording a version does not import the package.
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Device, versions and machine: recorded beside every published number.

    Imports nothing beyond JAX: the versions of optional packages come from their metadata.
    """
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": str(getattr(device, "device_kind", device.platform)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        **cpu_info(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "numpy": np.__version__,
        "optax": _version("optax"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "x64": bool(jax.config.jax_enable_x64),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }

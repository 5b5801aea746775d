"""Which rule namespace differentiates a model: ``ops=`` resolved once, for every model."""

from __future__ import annotations

from bpjax import fwd, ref, rev

NAMESPACES = {"ref": ref, "rev": rev, "fwd": fwd}


def namespace(ops):
    """The rule namespace ``ops`` names: :mod:`bpjax.ref`, ``rev`` or ``fwd``, as the module
    or its name. Everything that takes ``ops=`` resolves it here."""
    if isinstance(ops, str) and ops in NAMESPACES:
        return NAMESPACES[ops]
    if ops in NAMESPACES.values():
        return ops
    raise ValueError(
        f"ops must be one of {sorted(NAMESPACES)} (or the module bpjax.ref/rev/fwd), got {ops!r}"
    )

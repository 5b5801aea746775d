"""Ops with hand-written JVP rules (``jax.custom_jvp``): forward mode, and reverse by transposition.

Same names and signatures as the other two namespaces; see :mod:`bpjax.rules` for the table.
"""

from bpjax._namespace import build_fwd as _build
from bpjax.rules import TABLE as _TABLE

linear = _build(_TABLE["linear"])
matmul = _build(_TABLE["matmul"])
sigmoid = _build(_TABLE["sigmoid"])
tanh = _build(_TABLE["tanh"])
relu = _build(_TABLE["relu"])
softmax = _build(_TABLE["softmax"])
log_softmax = _build(_TABLE["log_softmax"])
softmax_cross_entropy = _build(_TABLE["softmax_cross_entropy"])
cross_entropy = _build(_TABLE["cross_entropy"])
mse = _build(_TABLE["mse"])

__all__ = list(_TABLE)

"""Models as pure functions over pytrees.

:func:`init_layers` / :func:`layers_logits` / :func:`layers_loss` describe a plain MLP as a
list of ``(W, b)`` pairs, the format :mod:`bpjax.manual` uses, so the same parameters can be
differentiated by hand (manual), by hand-written rules (``rev``/``fwd``) and by autodiff
(``ref``) and compared one to one.

One concept per file: ``_inits.py`` the weight initializers, ``_ops.py`` the rule namespace
that ``ops=`` names, ``_layers.py`` the ``(W, b)`` list MLP, ``_blocks.py`` the registry of
hidden blocks (a new block is one :func:`register_block` call), ``_mlp.py`` the deep
:class:`MLP` that stacks them.
"""

# ARCHS, BLOCKS, INITS, ACTIVATIONS and NAMESPACES are data, importable from here as before
# (not in __all__). BLOCKS is the registry itself: register_block's additions show here.
from bpjax.models._blocks import ARCHS as ARCHS
from bpjax.models._blocks import BLOCKS as BLOCKS
from bpjax.models._blocks import Block, block, register_block
from bpjax.models._inits import INITS as INITS
from bpjax.models._inits import init_weight, kernel_init
from bpjax.models._layers import init_layers, layers_logits, layers_loss
from bpjax.models._mlp import ACTIVATIONS as ACTIVATIONS
from bpjax.models._mlp import MLP
from bpjax.models._ops import NAMESPACES as NAMESPACES
from bpjax.models._ops import namespace

__all__ = [
    "MLP",
    "Block",
    "register_block",
    "block",
    "init_layers",
    "layers_logits",
    "layers_loss",
    "init_weight",
    "kernel_init",
    "namespace",
]

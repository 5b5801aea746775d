"""A small reverse-mode autodiff engine on arrays, driven by the rule table. For teaching.

This is what PyTorch's autograd does, in about a hundred lines you can read:

* every op on a :class:`Var` runs the rule's ``vjp_fwd`` (the forward pass, keeping the
  rule's residuals: the activation cache) and records a node: its inputs and a closure
  over the rule's ``vjp_bwd``;
* :meth:`Var.backward` sorts the recorded graph topologically (iteratively, so a chain of
  thousands of ops does not hit Python's recursion limit), then walks it in reverse,
  multiplying by each node's local Jacobian (its VJP) and **summing** the cotangents that
  reach a node along several paths (fan-out in the forward pass is fan-in here);
* leaves with ``requires_grad=True`` **accumulate** into ``.grad`` across calls, which is why
  training loops call :meth:`Var.zero_grad`; intermediate cotangents are not kept;
* inside :func:`no_grad` nothing is recorded (inference costs no graph and no cache).

Functional JAX has no such state: ``jax.grad`` returns gradients as values, so there is no
``.grad`` to forget to zero. It is deliberately minimal: no in-place ops, no higher-order
derivatives through the tape (use JAX for those), eager ``jax.numpy`` underneath.
"""

from __future__ import annotations

import contextlib
import itertools

import jax.numpy as jnp

from bpjax._namespace import prepare
from bpjax._validate import to_device
from bpjax.rules import TABLE, Rule
from bpjax.rules._broadcast import sum_to

__all__ = [
    "Var",
    "no_grad",
    "apply_rule",
    "add",
    "mul",
    "total",
    "linear",
    "matmul",
    "sigmoid",
    "tanh",
    "relu",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "cross_entropy",
    "mse",
]

_recording = True
_ids = itertools.count()


@contextlib.contextmanager
def no_grad():
    """Record nothing inside this block (like ``torch.no_grad``)."""
    global _recording
    previous, _recording = _recording, False
    try:
        yield
    finally:
        _recording = previous


class Var:
    """An array that remembers how it was computed.

    Attributes:
      value: the ``jax.numpy`` array.
      grad: accumulated gradient of the last ``backward()`` roots (leaves only), or None.
      requires_grad: whether gradients flow to (and accumulate in) this variable.
      op: name of the op that produced it (``"leaf"`` for inputs).
    """

    def __init__(
        self, value, *, requires_grad=False, name="", _parents=(), _backward=None, op="leaf"
    ):
        self.value = to_device(value)
        self.requires_grad = requires_grad
        self.grad = None
        self.name = name
        self.op = op
        self._parents = _parents
        self._backward = _backward
        self._id = next(_ids)

    def __repr__(self):
        return (
            f"Var({self.op}, shape={tuple(self.value.shape)}, requires_grad={self.requires_grad})"
        )

    @property
    def shape(self):
        """The shape of :attr:`value`."""
        return self.value.shape

    def zero_grad(self):
        """Forget the accumulated :attr:`grad` (a training loop calls it before each step)."""
        self.grad = None

    def backward(self, seed=None):
        """Reverse-mode sweep from this variable; accumulates into the leaves' ``.grad``.

        Args:
          seed: the cotangent of this variable, shaped like it. Optional for a scalar (then
            d self / d self = 1); required otherwise, as in PyTorch, because the gradient of
            a non-scalar needs to know which combination of its entries to differentiate.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a variable that does not require grad: no input had "
                "requires_grad=True, or it was computed inside no_grad()"
            )
        if seed is None:
            if self.value.ndim:
                raise RuntimeError(
                    f"backward(): grad can be implicitly created only for scalar outputs; this "
                    f"variable has shape {tuple(self.value.shape)}: reduce it first (.sum()) "
                    "or pass seed= with its shape"
                )
            seed = jnp.ones_like(self.value)
        seed = to_device(seed)
        if seed.shape != self.value.shape:
            raise ValueError(
                f"backward(): seed.shape={tuple(seed.shape)} differs from the variable's shape "
                f"{tuple(self.value.shape)}"
            )
        order = _topological(self)
        cotangents = {self._id: seed}
        for node in reversed(order):
            g = cotangents.pop(node._id, None)
            if g is None:
                continue
            if node._backward is None:  # a leaf
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node._parents, node._backward(g), strict=True):
                if pg is None or not parent.requires_grad:
                    continue
                # Fan-in: a value used by several ops receives the sum of their cotangents.
                prev = cotangents.get(parent._id)
                cotangents[parent._id] = pg if prev is None else prev + pg

    # Arithmetic, so that fan-out examples read naturally.
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __sub__(self, other):
        return add(self, mul(other, -1.0))

    def __neg__(self):
        return mul(self, -1.0)

    def __matmul__(self, other):
        return matmul(self, other)

    def sum(self):
        """The sum of all entries, on the tape (:func:`total`)."""
        return total(self)


def _topological(root):
    """Nodes reachable from ``root``, each after all its inputs (iterative DFS)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node._id in seen:
            continue
        seen.add(node._id)
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p._id not in seen)
    return order


def _as_var(x):
    return x if isinstance(x, Var) else Var(x)


def _record(op, inputs, out, backward):
    inputs = tuple(inputs)
    tracked = _recording and any(v.requires_grad for v in inputs)
    if not tracked:
        return Var(out, op=op)
    return Var(out, requires_grad=True, _parents=inputs, _backward=backward, op=op)


def apply_rule(rule: Rule, *args, **options):
    """Run one op of the rule table on the tape: forward now, its hand VJP on backward.

    Arguments are checked exactly as :mod:`bpjax.ref`/``rev``/``fwd`` check them (shapes,
    dtypes, labels), so a mistake gets the same error on the tape as off it.
    """

    def unwrap(a):
        return a.value if isinstance(a, Var) else a

    arrays, checked = prepare(
        rule, [unwrap(a) for a in args], {k: unwrap(a) for k, a in options.items()}
    )
    given = rule.signature.bind(*args, **options).arguments  # prepare bound the same call
    inputs = [
        given[p] if isinstance(given[p], Var) else Var(x)
        for p, x in zip(rule.array_params, arrays, strict=True)
    ]
    out, residuals = rule.vjp_fwd(*arrays, **checked)
    return _record(rule.name, inputs, out, lambda g: rule.vjp_bwd(residuals, g, **checked))


def add(a, b):
    """``a + b`` with NumPy broadcasting; the backward pass sums each cotangent back to its
    input's shape."""
    a, b = _as_var(a), _as_var(b)
    return _record(
        "add",
        (a, b),
        a.value + b.value,
        lambda g: (sum_to(g, a.shape), sum_to(g, b.shape)),
    )


def mul(a, b):
    """``a * b`` elementwise; each input's cotangent is the other factor times ``g``."""
    a, b = _as_var(a), _as_var(b)
    av, bv = a.value, b.value  # each factor's gradient needs the other factor
    return _record(
        "mul",
        (a, b),
        av * bv,
        lambda g: (sum_to(g * bv, a.shape), sum_to(g * av, b.shape)),
    )


def total(a):
    """``Σ a``, a scalar; its backward pass broadcasts ``g`` back to ``a``'s shape."""
    a = _as_var(a)
    return _record("sum", (a,), jnp.sum(a.value), lambda g: (jnp.broadcast_to(g, a.shape),))


def _bind(name):
    rule = TABLE[name]

    def op(*args, **options):
        return apply_rule(rule, *args, **options)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"``{name}`` on the tape, differentiated by its hand-written VJP rule."
    return op


linear = _bind("linear")
matmul = _bind("matmul")
sigmoid = _bind("sigmoid")
tanh = _bind("tanh")
relu = _bind("relu")
softmax = _bind("softmax")
log_softmax = _bind("log_softmax")
softmax_cross_entropy = _bind("softmax_cross_entropy")
cross_entropy = _bind("cross_entropy")
mse = _bind("mse")

"""Property: over randomly composed programs, ``modes.sparsity`` never misses a nonzero.

Each program is a random chain of operations on ``(n,)`` float vectors, drawn from the
primitives the interpreter has rules for (elementwise ops, permutations, gathers and
scatters with traced indices, ``dynamic_slice``/``dynamic_update_slice`` at starts computed
from traced indices (bounded by integer ranges), sort, cumsum, a
convolution, reductions, ``cond``, ``scan``, ``while_loop``, ``custom_jvp``/``custom_vjp``).
Its Jacobian at random points, by JAX (forward mode, or reverse mode where a ``custom_vjp``
has no forward rule), must have no nonzero outside the detected pattern.

The default suite checks 100 programs at one point each; ``make test-slow`` checks 2,000
more at three points each.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_pattern

from bpjax import modes

N = 6


@jax.custom_jvp
def _cj_sin(x):
    return jnp.sin(x)


_cj_sin.defjvp(lambda p, t: (jnp.sin(p[0]), jnp.cos(p[0]) * t[0] + 0.1 * jnp.roll(t[0], 1)))


@jax.custom_vjp
def _cv_scale(x):
    return 2.0 * x


_cv_scale.defvjp(lambda x: (2.0 * x, x), lambda x, ct: (2.0 * ct + 0.1 * jnp.roll(ct * x, -1),))


def _while(a, b):
    def body(c):
        v, k = c
        return v * 0.5 + jnp.roll(v, 1) * b, k + 1

    return jax.lax.while_loop(lambda c: (c[1] < 3) & (jnp.sum(c[0]) < 50.0), body, (a, 0))[0]


def _scan(a, b):
    return jax.lax.scan(lambda c, ab: (c * 0.9 + ab[0], c * ab[1]), a[0], (a, b))[1]


def _cond(a, b):
    return jax.lax.cond(jnp.sum(a) > 0, lambda u, v: u * v, lambda u, v: u + v[::-1], a, b)


# name -> (arity, op); each op maps (n,) vectors to an (n,) vector.
OPS = {
    "sin": (1, jnp.sin),
    "exp_tanh": (1, lambda a: jnp.exp(jnp.tanh(a))),
    "sqrt": (1, lambda a: jnp.sqrt(a * a + 1.0)),
    "square": (1, jnp.square),
    "add": (2, jnp.add),
    "mul": (2, jnp.multiply),
    "div": (2, lambda a, b: a / (1.0 + b * b)),
    "where": (2, lambda a, b: jnp.where(a > b, a * b, jnp.sin(b))),
    "max": (2, jnp.maximum),
    "roll": (1, lambda a: jnp.roll(a, 2)),
    "reverse": (1, lambda a: a[::-1]),
    "shift_pad": (1, lambda a: jnp.pad(a[1:], (0, 1))),
    "gather_traced": (2, lambda a, b: a[jnp.argsort(b)]),
    "scalar_gather": (2, lambda a, b: a[jnp.argmax(b)] * b),
    "scatter_traced": (2, lambda a, b: jnp.zeros(N).at[jnp.argsort(b)].add(a)),
    "scatter_static": (1, lambda a: jnp.zeros(N).at[jnp.array([0, 0, 3, 5, 1, 2])].add(a)),
    "dynamic_slice": (
        2,
        lambda a, b: jax.lax.dynamic_slice(jnp.concatenate([a, a]), (jnp.argmin(b),), (N,)),
    ),
    # Starts computed from traced indices: bounded by the integer ranges the interpreter
    # tracks (argmax's axis, then arithmetic, comparisons, clamping).
    "index_arith": (
        2,
        lambda a, b: jax.lax.dynamic_slice(
            jnp.concatenate([a, a]), ((jnp.argmax(b) * 2 - 1) // 2 + 1,), (N,)
        ),
    ),
    "dus_traced": (
        2,
        lambda a, b: jax.lax.dynamic_update_slice(a, b[:3] * 2.0, (jnp.argmax(a) % 4 - 1,)),
    ),
    "clamped_take": (2, lambda a, b: a[jnp.clip(jnp.argmax(b) ** 2 - 3, 0, N - 1)] * b),
    "where_start": (
        2,
        lambda a, b: jnp.pad(
            jax.lax.dynamic_slice(a, (jnp.where(jnp.argmax(b) < 2, 1, 3),), (3,)), (0, N - 3)
        ),
    ),
    "sort": (1, jnp.sort),
    "cumsum": (1, jnp.cumsum),
    "conv": (1, lambda a: jnp.convolve(a, jnp.array([1.0, -2.0, 0.5]), mode="same")),
    "sum_times": (2, lambda a, b: jnp.sum(a) * b),
    "dot_const": (1, lambda a: jnp.asarray(np.triu(np.ones((N, N)), 2)) @ a),
    "cond": (2, _cond),
    "scan": (2, _scan),
    "while": (2, _while),
    "custom_jvp": (1, _cj_sin),
    "custom_vjp": (1, _cv_scale),
}
NAMES = sorted(OPS)


def random_program(seed: int):
    """``(f, names)``: a chain of 2-6 random operations over a pool of vectors."""
    rng = np.random.default_rng(seed)
    steps = []
    names = []
    for _ in range(rng.integers(2, 7)):
        name = NAMES[rng.integers(len(NAMES))]
        if name == "while" and "custom_vjp" in names or name == "custom_vjp" and "while" in names:
            name = "sin"  # no mode of JAX differentiates both: the reference needs one
        arity, _ = OPS[name]
        steps.append((name, [int(rng.integers(0, len(steps) + 1)) for _ in range(arity)]))
        names.append(name)

    def f(x):
        pool = [x]
        for name, args in steps:
            pool.append(OPS[name][1](*(pool[k] for k in args)))
        return pool[-1] + 0.1 * pool[len(pool) // 2]

    return f, names


def check_program(seed: int, points: int):
    f, names = random_program(seed)
    x = jnp.linspace(-1.0, 1.0, N) + 0.05 * seed % 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modes.SparsityWarning)
        P = dense_pattern(modes.sparsity(f, x))
    jac = jax.jacrev if "custom_vjp" in names else jax.jacfwd
    for k in range(points):
        point = jax.random.normal(jax.random.key(seed * 7 + k), (N,))
        J = np.asarray(jac(f)(point))
        missed = np.argwhere((J != 0) & ~P)
        assert missed.size == 0, f"seed {seed}, ops {names}: pattern misses {missed.tolist()}"


@pytest.mark.parametrize("block", range(4))
def test_random_programs_never_miss_a_nonzero(block):
    for seed in range(block * 25, block * 25 + 25):
        check_program(seed, points=1)


@pytest.mark.slow
@pytest.mark.parametrize("block", range(20))
def test_random_programs_never_miss_a_nonzero_many(block):
    for seed in range(1000 + block * 100, 1000 + block * 100 + 100):
        check_program(seed, points=3)

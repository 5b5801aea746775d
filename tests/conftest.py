"""Shared test set-up: float64 everywhere unless a test asks for float32, and op samplers.

Hypothesis profiles: ``bpjax`` (default: few derandomized examples, so ``make test`` stays
fast and repeatable) and ``bpjax-slow`` (many random examples; ``make test-slow`` selects
it with ``HYPOTHESIS_PROFILE=bpjax-slow``).

Most of the suite's time is XLA compiling small programs, and most of that is LLVM
optimizing the generated code, which the tests do not measure: they check values against
references with tolerances, and compiled memory sizes and FLOP counts, which XLA fixes at
the HLO level before LLVM runs. So the tests compile with LLVM's optimization off
(``--xla_backend_optimization_level=0``: the suite takes about a quarter less time);
``BPJAX_TEST_FULL_OPT=1`` keeps XLA's defaults (for this flag and the next). Timings and
published numbers come from the experiments and ``bpjax bench``, which never run under these
flags.

On jaxlib 0.10 (the Python 3.11 pin) XLA:CPU still has its older fusion code generator,
which emits LLVM IR straight from each fusion; the newer one (its default, the only one in
0.12) lowers through MLIR first and compiles these small programs about 2.5 times slower.
So the tests there also set ``--xla_cpu_use_fusion_emitters=false``: it picks how a fusion
XLA has already formed becomes machine code, after the HLO passes that fix memory sizes and
FLOP counts. Other jaxlib releases are left alone (0.12 rejects the flag and aborts). The
miscompile canary (test_canary.py) runs without any of these flags.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os


def _fast_compile_flags() -> str:
    flags = " --xla_backend_optimization_level=0"
    try:
        jaxlib_version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return flags
    if jaxlib_version.startswith("0.10."):
        flags += " --xla_cpu_use_fusion_emitters=false"
    return flags


if not os.environ.get("BPJAX_TEST_FULL_OPT"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _fast_compile_flags()).strip()


def pytest_configure(config):
    # Before any test starts JAX's backend (conftest's imports do not), so XLA sizes its
    # thread pools by the cores given here.
    if "not slow" in (config.getoption("markexpr") or ""):
        _share_the_cores_between_workers()


def _share_the_cores_between_workers() -> None:
    """Give each pytest-xdist worker of the default suite its own share of the cores.

    XLA sizes its thread pools by the cores a process may use. With ``-n auto`` each worker
    would start a pool as wide as the machine, and on 2 cores the two workers' pools then
    contend (threads spinning and yielding): the suite spent 50 s in the kernel and took
    183 s; with a core each, 172 s (2026-12-05, 2-core Xeon). Worker ``gwK`` of ``N`` gets
    every N-th usable core from the K-th, so 2 workers on 16 cores get 8 each. The slow
    suite is left alone: its tests run the experiments in subprocesses, which would inherit
    one core each and could not use the other when its worker idles.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not (worker and count and hasattr(os, "sched_setaffinity")):
        return
    cores = sorted(os.sched_getaffinity(0))
    k, n = int(worker.removeprefix("gw")), int(count)
    mine = cores[k % len(cores) :: n] if n <= len(cores) else [cores[k % len(cores)]]
    os.sched_setaffinity(0, mine)


# The automatic Jacobian mode keeps per-machine rates and probe times on disk; the tests
# leave the user's cache alone and never read a probe an earlier test run kept (a test of
# the cache names its own directory). The model's rates are a record's (see
# _recorded_model_rates below).
os.environ["BPJAX_CACHE_DIR"] = "off"

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them when it starts)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile("bpjax", max_examples=4, deadline=None, derandomize=True)
settings.register_profile("bpjax-slow", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bpjax"))


def dense_pattern(P) -> np.ndarray:
    """The dense boolean matrix of a pattern from ``modes.sparsity``/``hessian_sparsity``,
    built on the host from its indices (``BCOO.todense`` compiles a scatter for every new
    number of nonzeros); every stored entry must be a 1."""
    data, indices = np.asarray(P.data), np.asarray(P.indices)
    assert data.shape == (indices.shape[0],) and np.all(data == 1), "a pattern stores ones"
    dense = np.zeros(P.shape, bool)
    dense[tuple(indices.T)] = True
    return dense


def sample_op_args(name: str, seed: int, batch: int, d_in: int, d_out: int, *, soft: bool):
    """Random float64 arguments for the table op ``name``.

    Returns ``(args, options)``. ``soft`` picks soft labels instead of class ids for the
    losses: positive rows that do *not* sum to one (a rule that assumes Σy = 1 is then
    caught). ``matmul`` and ``linear`` draw leading batch axes and 1-D operands (picked by
    ``seed``), so broadcasting is exercised. Inputs are kept away from kinks and clip
    thresholds, where finite differences and the rules legitimately disagree (those points
    have tests of their own).
    """
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape)

    def labels(classes):
        if soft:
            p = rng.random((batch, classes)) + 0.1
            return p / p.sum(axis=1, keepdims=True) * rng.uniform(0.5, 2.0, size=(batch, 1))
        return rng.integers(0, classes, size=batch)

    if name == "linear":
        lead = [(batch,), (2, batch), (d_out,)][seed % 3]
        return (normal(*lead, d_in), normal(d_in, d_out), normal(d_out)), {}
    if name == "matmul":
        a_shape, b_shape = matmul_shapes(seed, batch, d_in, d_out)
        return (normal(*a_shape), normal(*b_shape)), {}
    if name in ("sigmoid", "tanh", "relu"):
        z = normal(batch, d_in) * 3
        z[np.abs(z) < 1e-3] = 0.5
        return (z,), {}
    if name in ("softmax", "log_softmax"):
        return (normal(batch, d_in) * 3,), {"axis": int(rng.choice([0, -1]))}
    if name == "softmax_cross_entropy":
        return (normal(batch, d_out) * 2, labels(d_out)), {}
    if name == "cross_entropy":
        p = rng.random((batch, d_out)) + 0.05
        return (p / p.sum(axis=1, keepdims=True), labels(d_out)), {}
    if name == "mse":
        return (normal(batch, d_out), normal(batch, d_out)), {}
    raise KeyError(name)


def matmul_shapes(seed: int, m: int, k: int, n: int):
    """One of NumPy matmul's cases, picked by ``seed``: 2-D, 1-D on either side, batched with
    broadcast batch axes. The contraction size is ``k`` in all of them."""
    cases = [
        ((m, k), (k, n)),
        ((k,), (k, n)),
        ((m, k), (k,)),
        ((k,), (k,)),
        ((3, m, k), (k, n)),
        ((m, k), (2, k, n)),
        ((2, 1, m, k), (3, k, n)),
        ((1, m, k), (4, k, n)),
    ]
    return cases[seed % len(cases)]


@functools.cache
def brute_force_advances(n: int, c: int) -> int:
    """Minimum forward steps to reverse ``n`` steps with ``c`` checkpoints, over every first
    split (the brute-force reference that revolve's closed form and the online schedule must
    match)."""
    if n <= 1:
        return 0
    if c == 1:
        return n * (n - 1) // 2
    return min(
        m + brute_force_advances(n - m, c - 1) + brute_force_advances(m, c) for m in range(1, n)
    )


def record_rates() -> dict:
    """The model's rates kept in results/jacobians.json (a record's, not this machine's), in
    the form ``bpjax.modes._rates`` holds them, so that choices do not depend on the machine
    the tests run on."""
    import json

    from bpjax.modes import _rates

    with open("results/jacobians.json") as f:
        kept = json.load(f)["data"]["rates"]
    return {k: float(v) if k in _rates._SCALARS else tuple(v) for k, v in kept.items()}


@pytest.fixture(autouse=True, scope="session")
def _recorded_model_rates():
    """Every worker starts with the model's rates of results/jacobians.json in memory, as a
    process that finds them kept on disk does: the automatic mode's choices in the tests
    then do not depend on the machine, and no worker spends 2-3 s calibrating. The tests of
    the calibration itself empty ``_rates._MEMORY`` (monkeypatched) and measure."""
    from bpjax.modes import _rates

    _rates._MEMORY.setdefault(_rates.machine_key(jax.default_backend()), record_rates())

"""Known XLA miscompiles, each run under jit and eagerly; prints one JSON line per case.

Run as a plain process (no test flags): the compiler options a user gets are the ones that
miscompiled. ``tests/test_canary.py`` runs it and compares.
"""

import json

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402


def vmapped_matvec_reduction(dtype, n):
    """jax-ml/jax#39103: jaxlib 0.10.2 sums the squares of ``eye(3) @ row`` wrongly under jit
    (float64 at 16,385 rows: 267911424 instead of 268435456)."""
    i = jnp.arange(n, dtype=dtype)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    matrix = jnp.eye(3, dtype=dtype)

    def f(x):
        return jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2))(x)

    return f, x


CASES = {
    "jax-ml/jax#39103 float64": lambda: vmapped_matvec_reduction(jnp.float64, 16_385),
    "jax-ml/jax#39103 float32": lambda: vmapped_matvec_reduction(jnp.float32, 32_769),
}

for name, make in CASES.items():
    f, x = make()
    eager, jitted = f(x), jax.jit(f)(x)
    print(
        json.dumps(
            {
                "case": name,
                "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                "max_abs_diff": float(jnp.max(jnp.abs(eager - jitted))),
                "eager_last": float(eager[-1]),
                "jit_last": float(jitted[-1]),
            }
        )
    )

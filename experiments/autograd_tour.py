"""The autograd deep dive, in both worlds: a graph, accumulation, no-grad, custom rules.

On bpjax's teaching tape (PyTorch's model: stateful `.grad`) and in functional JAX: the
generated forward/backward graph of a 2-layer net; the accumulation pitfall and
its fix; micro-batch gradient accumulation equal to the full-batch gradient; stop_gradient
as the no-grad analogue; PyTorch's classic custom ReLU example as a custom_vjp; a second derivative
through hand-written rules.
"""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np

from bpjax import graph, models, ref, results, rev, tape, train


def accumulation_pitfall():
    x = tape.Var(jnp.array([1.0, 2.0]), requires_grad=True)
    forgot, zeroed = [], []
    for _ in range(3):
        (x * x).sum().backward()  # d/dx Σx² = 2x, but .grad accumulates
        forgot.append(np.asarray(x.grad).tolist())
    for _ in range(3):
        x.zero_grad()
        (x * x).sum().backward()
        zeroed.append(np.asarray(x.grad).tolist())
    return {"without zero_grad": forgot, "with zero_grad": zeroed}


def microbatch_accumulation(seed):
    model = models.MLP(depth=3, width=16)
    key = jax.random.key(seed)
    params = model.init(key, 8, 3)
    x = jax.random.normal(jax.random.fold_in(key, 1), (64, 8))
    y = jax.random.randint(jax.random.fold_in(key, 2), (64,), 0, 3)
    full = jax.grad(model.loss)(params, x, y)
    mean = train.accumulated_grad(model.loss, params, x, y, micro_batches=4)
    err = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
        for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(full), strict=True)
    )
    return {"micro_batches": 4, "max_relative_difference_to_full_batch": err}


def no_grad_analogues():
    x = tape.Var(jnp.array([0.5, -1.0]), requires_grad=True)
    with tape.no_grad():
        y = tape.tanh(x)
    frozen = jax.grad(lambda v: jnp.sum(jax.lax.stop_gradient(jnp.tanh(v)) * v))(x.value)
    return {
        "tape: requires_grad inside no_grad": y.requires_grad,
        "tape: parents recorded inside no_grad": len(y._parents),
        "jax: grad of stop_gradient(tanh(x)) * x": np.asarray(frozen).tolist(),
    }


@jax.custom_vjp
def my_relu(z):
    """PyTorch's tutorial ``MyReLU`` as a JAX custom_vjp: save z, zero the gradient where z < 0."""
    return jnp.maximum(z, 0.0)


def _my_relu_fwd(z):
    return jnp.maximum(z, 0.0), z  # ctx.save_for_backward(input)


def _my_relu_bwd(z, g):
    return (jnp.where(z < 0, 0.0, g),)  # grad_input[input < 0] = 0


my_relu.defvjp(_my_relu_fwd, _my_relu_bwd)


def custom_rule_and_second_derivative():
    z = jnp.array([-2.0, -0.5, 0.5, 2.0])
    g_custom = jax.grad(lambda v: jnp.sum(my_relu(v) ** 2))(z)
    g_ref = jax.grad(lambda v: jnp.sum(ref.relu(v) ** 2))(z)
    second = jax.grad(jax.grad(lambda t: rev.tanh(t)))(0.7)  # through the hand VJP rule
    exact = -2 * np.tanh(0.7) * (1 - np.tanh(0.7) ** 2)
    return {
        "custom relu grad": np.asarray(g_custom).tolist(),
        "custom relu equals autodiff": bool(jnp.allclose(g_custom, g_ref)),
        "d2/dz2 tanh at 0.7 through rev rule": float(second),
        "exact": float(exact),
    }


def main(argv=None):
    args = results.parse_args(__doc__.splitlines()[0], argv)
    flow = graph.two_layer_flow()
    results.save_text(args.out / "autograd_flow.mmd", flow)
    figures = []
    if shutil.which("dot"):
        loss, example, names = graph.two_layer_example()
        graph.render(
            loss,
            *example,
            path=results.staged(args.out / "autograd_flow.png"),
            backward=True,
            names=names,
        )
        figures.append("autograd_flow.png")
    else:
        print("Graphviz `dot` not found: wrote the Mermaid text only (autograd_flow.mmd)")
    pitfall = accumulation_pitfall()
    micro = microbatch_accumulation(args.seed)
    nograd = no_grad_analogues()
    custom = custom_rule_and_second_derivative()
    for name, part in (
        ("accumulation", pitfall),
        ("micro-batches", micro),
        ("no_grad", nograd),
        ("custom rules", custom),
    ):
        print(f"{name}: {part}")
    results.save(
        "autograd_tour",
        out=args.out,
        profile=args.profile,
        seed=args.seed,
        title="Autograd made visible: the graph, accumulation, no-grad, custom rules",
        summary=[
            results.entry(
                "grad_after_backward_calls",
                str(pitfall[f"{how} zero_grad"][-1]),
                unit="text",
                text=f".grad after 3 backward() {words}",
                calls=3,
                zero_grad=how == "with",
            )
            for how, words in (("without", "without zeroing"), ("with", "with zero_grad"))
        ]
        + [
            results.entry(
                "microbatch_max_rel_diff",
                micro["max_relative_difference_to_full_batch"],
                unit="",
                text="micro-batch accumulated vs full-batch gradient (max rel diff)",
            ),
            results.entry(
                "custom_relu_equals_autodiff",
                str(custom["custom relu equals autodiff"]),
                unit="text",
                text="custom relu == autodiff",
            ),
            results.entry(
                "second_derivative_error",
                abs(custom["d2/dz2 tanh at 0.7 through rev rule"] - custom["exact"]),
                unit="",
                text="second derivative through hand VJP − exact",
            ),
        ],
        data={
            "accumulation": pitfall,
            "microbatch": micro,
            "no_grad": nograd,
            "custom": custom,
            "flow_mermaid": flow,
        },
        figures=figures,
        notes=(
            "The graph is generated from the jaxpr of (loss, vjp): forward pass, backward pass, "
            "and dashed the activation cache, i.e. the residuals the hand-written VJPs read. "
            "Mermaid text: `autograd_flow.mmd`."
        ),
    )


if __name__ == "__main__":
    main()

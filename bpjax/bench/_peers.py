"""The peers, each written as its users would write it, with its own best settings.

* ``flax nnx``: ``nnx.Linear`` layers and ``nnx.Optimizer(optax.sgd)``, stepped through the
  functional loop that Flax's performance guide recommends for speed (``nnx.split`` once,
  ``nnx.merge`` inside one ``jax.jit``), which removes ``nnx.jit``'s per-call graph traversal.
* ``torch eager`` (and ``torch.compile`` of the loss, forward and backward): ``addmm`` and
  ``relu`` layers, ``F.cross_entropy``, an in-place SGD update; PyTorch's own thread pool.
  On CUDA (:func:`torch_device`) when JAX runs on a GPU and PyTorch can reach one, each step
  ending in ``torch.cuda.synchronize()`` as JAX's ends in ``block_until_ready``.
* ``numpy manual``: forward cache and δ recursion in NumPy (float32, OpenBLAS GEMMs), on the
  host CPU wherever JAX runs (then shown, but not ranked as a peer).
"""

from __future__ import annotations

import time

from bpjax.bench._problem import LR, Contender


def _flax_net(params):
    """An NNX MLP of ``nnx.Linear`` layers holding ``params`` (ReLU between layers)."""
    from flax import nnx

    from bpjax._validate import to_device

    class Net(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List(
                [nnx.Linear(i, o, rngs=rngs) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
            )

        def __call__(self, h):
            for layer in self.layers[:-1]:
                h = nnx.relu(layer(h))
            return self.layers[-1](h)

    net = Net([params[0][0].shape[0]] + [w.shape[1] for w, _ in params], nnx.Rngs(0))
    for layer, (w, b) in zip(net.layers, params, strict=True):
        layer.kernel[...] = to_device(w)
        layer.bias[...] = to_device(b)
    return net


def _flax_loss(net, x, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(net(x), y).mean()


def flax_contender(params, x, y) -> Contender:
    """Flax NNX: the same MLP from ``nnx.Linear`` layers, SGD through ``nnx.Optimizer``."""
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from bpjax._validate import to_device

    def fresh_state():
        net = _flax_net(params)
        return nnx.split((net, nnx.Optimizer(net, optax.sgd(LR), wrt=nnx.Param)))

    xj, yj = to_device(x), to_device(y)
    # Building the modules (eager initialisers) is model construction, as handing NumPy
    # parameters to the others is: the first call is timed from a built model.
    graphdef, state = fresh_state()
    start = time.perf_counter()

    @jax.jit
    def train_step(state, x, y):
        net, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(_flax_loss)(net, x, y)
        optimizer.update(net, grads)
        return nnx.state((net, optimizer)), loss

    jax.block_until_ready(train_step(state, xj, yj))
    first_call = time.perf_counter() - start
    current = [fresh_state()[1]]

    def step():
        current[0], loss = train_step(current[0], xj, yj)
        return loss

    def grads(x, y):
        g = nnx.grad(_flax_loss)(_flax_net(params), to_device(x), to_device(y))
        layers = sorted(g["layers"].items(), key=lambda kv: int(kv[0]))
        return [(np.asarray(g_["kernel"][...]), np.asarray(g_["bias"][...])) for _, g_ in layers]

    return Contender("flax nnx", step, grads, first_call, device=jax.default_backend())


def torch_device() -> str:
    """``"cuda"`` where JAX runs on a GPU and PyTorch has CUDA, else ``"cpu"``: PyTorch runs
    where JAX runs when it can, so the two are compared on the same chip."""
    import jax
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_contenders(params, x, y, *, compile_too: bool, device: str | None = None):
    """PyTorch eager (and ``torch.compile`` of the loss when ``compile_too``), on ``device``
    (default :func:`torch_device`). Returns a list of :class:`Contender`."""
    import torch
    import torch.nn.functional as F

    device = torch_device() if device is None else device
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    # A CUDA step returns before the GPU has run it: wait, as JAX's timed steps do.
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fresh():
        return [
            (
                torch.tensor(w, device=device, requires_grad=True),
                torch.tensor(b, device=device, requires_grad=True),
            )
            for w, b in params
        ]

    def loss_of(ps, x, y):
        h = x
        for i, (w, b) in enumerate(ps):
            h = torch.addmm(b, h, w)
            if i < len(ps) - 1:
                h = torch.relu(h)
        return F.cross_entropy(h, y)

    def sgd_step(loss_fn, ps):
        loss_fn(ps, xt, yt).backward()
        with torch.no_grad():
            for pair in ps:
                for t in pair:
                    t.sub_(LR * t.grad)
                    t.grad = None
        sync()

    def make(loss_fn, name):
        start = time.perf_counter()
        sgd_step(loss_fn, fresh())
        first_call = time.perf_counter() - start
        ps = fresh()

        def grads(x, y):
            qs = fresh()
            xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
            loss_fn(qs, xs, ys).backward()
            return [(w.grad.cpu().numpy(), b.grad.cpu().numpy()) for w, b in qs]

        return Contender(
            name,
            lambda: sgd_step(loss_fn, ps),
            grads,
            first_call,
            runtime="torch",
            device=device,
        )

    out = [make(loss_of, "torch eager")]
    if compile_too:
        # A cold compile, as for a new model: without the reset, TorchDynamo would reuse the
        # graphs (and the dynamic shapes) it made for this function at earlier sizes.
        torch._dynamo.reset()
        out.append(make(torch.compile(loss_of), "torch.compile"))
    return out


def numpy_contender(params, x, y) -> Contender:
    """The δ recursion in NumPy: forward cache, softmax-minus-onehot, backward GEMMs."""
    import numpy as np

    def grads_of(ps, x, y):
        # Forward pass, keeping what the backward pass needs: each layer's input and ReLU mask.
        inputs, masks, h = [], [], x
        for i, (w, b) in enumerate(ps):
            inputs.append(h)
            z = h @ w + b
            if i < len(ps) - 1:
                mask = z > 0
                masks.append(mask)
                h = z * mask
            else:
                h = z
        z = h - h.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        delta = p / len(y)  # δᴸ = (softmax − onehot) / m
        out = [None] * len(ps)
        for i in range(len(ps) - 1, -1, -1):
            out[i] = (inputs[i].T @ delta, delta.sum(axis=0))
            if i:
                delta = (delta @ ps[i][0].T) * masks[i - 1]
        return out

    def sgd_step(ps):
        for (w, b), (gw, gb) in zip(ps, grads_of(ps, x, y), strict=True):
            w -= LR * gw
            b -= LR * gb

    start = time.perf_counter()
    sgd_step([(w.copy(), b.copy()) for w, b in params])
    first_call = time.perf_counter() - start
    ps = [(w.copy(), b.copy()) for w, b in params]
    return Contender(
        "numpy manual",
        lambda: sgd_step(ps),
        lambda x, y: grads_of(params, x, y),
        first_call,
        runtime="numpy",
    )

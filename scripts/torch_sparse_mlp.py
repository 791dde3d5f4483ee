"""PyTorch's options for a *whole* sparse training step of 784-4096-4096-10 (batch 128, SGD
momentum 0.9, lr 0.01), beside burn-sparse's `sparse_mlp4096_step_b128` bench group:

- `dense`: torch.nn.Linear layers (what a masked-dense library pays at any sparsity);
- `torch.sparse csr`: the two hidden layers as CSR weights with ERK densities (the output layer
  dense, as ERK makes it), multiplied with `torch.sparse.mm`, their values stepped by hand with
  momentum (torch.optim does not step sparse CSR leaves).

The sparse step is first checked against the masked-dense computation on the same weights
(loss and every gradient), then timed. Prints JSON lines, medians in ms. Not part of CI.

    python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install -q torch numpy
    ~/torch-venv/bin/python scripts/torch_sparse_mlp.py --threads 2
"""
import argparse
import json
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=10)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

WIDTHS = [784, 4096, 4096, 10]
B, LR, MOM = 128, 0.01, 0.9


def erk_densities(widths, sparsity):
    """ERK (RigL): density of layer i proportional to (n_in + n_out) / (n_in n_out), layers
    that would exceed 1 capped at dense, the rest scaled to the global budget."""
    shapes = list(zip(widths[:-1], widths[1:]))
    numel = [i * o for i, o in shapes]
    raw = [(i + o) / (i * o) for i, o in shapes]
    dense = set()
    while True:
        budget = (1 - sparsity) * sum(numel) - sum(numel[j] for j in dense)
        free = sum(raw[j] * numel[j] for j in range(len(shapes)) if j not in dense)
        eps = budget / free
        over = [j for j in range(len(shapes)) if j not in dense and eps * raw[j] > 1]
        if not over:
            return [1.0 if j in dense else eps * raw[j] for j in range(len(shapes))]
        dense.update(over)


def med(f, reps):
    f()
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


x = torch.randn(B, WIDTHS[0])
y = torch.randint(0, 10, (B,))

# Dense.
mlp = torch.nn.Sequential(
    torch.nn.Linear(784, 4096), torch.nn.ReLU(),
    torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
    torch.nn.Linear(4096, 10))
opt = torch.optim.SGD(mlp.parameters(), lr=LR, momentum=MOM)


def dense_step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(mlp(x), y).backward()
    opt.step()


td = med(dense_step, a.reps)
print(json.dumps({"model": "784-4096-4096-10", "batch": B, "kind": "dense", "step_ms": td}))


class SparseMlp:
    """Hidden layers as CSR weights [out, in] (only the non-zeros), output layer dense."""

    def __init__(self, densities):
        self.ws, self.bs, self.masks = [], [], []
        for (i, o), d in zip(zip(WIDTHS[:-1], WIDTHS[1:]), densities):
            w = torch.empty(o, i).uniform_(-1, 1) / i ** 0.5
            m = torch.rand(o, i) < d
            self.masks.append(m)
            w = (w * m)
            if d < 1.0:
                w = w.to_sparse_csr()
            self.ws.append(w.requires_grad_(True))
            self.bs.append(torch.zeros(o, requires_grad=True))
        self.bufs = [None] * (2 * len(self.ws))

    def forward(self, x):
        h = x
        for j, (w, b) in enumerate(zip(self.ws, self.bs)):
            if w.layout == torch.sparse_csr:
                h = torch.sparse.mm(w, h.t()).t() + b
            else:
                h = torch.nn.functional.linear(h, w, b)
            if j < len(self.ws) - 1:
                h = torch.relu(h)
        return h

    def step(self):
        for w in self.ws + self.bs:
            w.grad = None
        loss = torch.nn.functional.cross_entropy(self.forward(x), y)
        loss.backward()
        with torch.no_grad():
            for k, p in enumerate(self.ws + self.bs):
                g = p.grad
                if p.layout == torch.sparse_csr:
                    # The gradient of a CSR leaf is the dense gradient sampled at its pattern.
                    v, g = p.values(), g.values()
                else:
                    v = p
                if self.bufs[k] is None:
                    self.bufs[k] = g.clone()
                else:
                    self.bufs[k].mul_(MOM).add_(g)
                v.sub_(LR * self.bufs[k])
        return loss


def check(net):
    """The CSR step's loss and gradients equal the masked-dense computation's."""
    dense_ws = [(w.to_dense() if w.layout == torch.sparse_csr else w).detach().clone().requires_grad_(True)
                for w in net.ws]
    dense_bs = [b.detach().clone().requires_grad_(True) for b in net.bs]
    h = x
    for j, (w, b) in enumerate(zip(dense_ws, dense_bs)):
        h = torch.nn.functional.linear(h, w, b)
        if j < len(dense_ws) - 1:
            h = torch.relu(h)
    ref = torch.nn.functional.cross_entropy(h, y)
    ref.backward()
    for w in net.ws + net.bs:
        w.grad = None
    loss = torch.nn.functional.cross_entropy(net.forward(x), y)
    loss.backward()
    assert abs(loss.item() - ref.item()) < 1e-4 * abs(ref.item()), (loss.item(), ref.item())
    for w, dw, m in zip(net.ws, dense_ws, net.masks):
        g = w.grad.to_dense() if w.grad.layout == torch.sparse_csr else w.grad
        want = dw.grad * m
        assert torch.allclose(g, want, rtol=1e-3, atol=1e-6), float((g - want).abs().max())
    for b, db in zip(net.bs, dense_bs):
        assert torch.allclose(b.grad, db.grad, rtol=1e-3, atol=1e-6)


for s in (0.90, 0.95, 0.98):
    dens = erk_densities(WIDTHS, s)
    net = SparseMlp(dens)
    try:
        check(net)
        ts = med(net.step, a.reps)
        print(json.dumps({"model": "784-4096-4096-10", "batch": B, "kind": "torch.sparse csr",
                          "sparsity": s, "densities": [round(d, 5) for d in dens],
                          "step_ms": ts, "speedup_vs_dense": td / ts}))
    except Exception as e:  # a torch build without CSR autograd says so, not a number
        print(json.dumps({"model": "784-4096-4096-10", "kind": "torch.sparse csr", "sparsity": s,
                          "error": str(e)[:300]}))

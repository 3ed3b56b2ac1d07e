"""The `ahtsgd bench` workloads in PyTorch, to run beside it on the same machine.

    python3 torch_bench.py [--device cpu|cuda] [--threads N] [--steps 100] [--reps 5]
                           [--warmup 10] [--json] [WORKLOAD ...]

Workloads (f32, batch 128, synthetic data, seed 0), as in `ahtsgd bench --list`:
  mlp-sgd              MLP 784-256-256-10 ReLU, cross-entropy, SGD step (lr 0.1)
  mlp-ahtsgd-fixed     the same with symmetric alpha-stable noise (alpha 1.5, sigma 0.01) added
                       to every gradient coordinate (Chambers-Mallows-Stuck in torch ops)
  mlp-hvp              one Hessian-vector product by double backward
  mlp-power-iter       10 HVPs on one gradient graph (power iteration for lambda_max)
  cnn-sgd              conv3x3(3->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2,
                       linear 4096->10 on 3x32x32, SGD step
  resnet18-sgd         CIFAR ResNet-18 (3x3 stem, no max-pool, batch norm), SGD step
  vgg-sgd              the VGG-style net of docs/language.md (conv3x3 32 + BN + ReLU twice,
                       maxpool2, dropout 0.25, linear 8192->128 + ReLU, dropout 0.5, linear
                       128->10, Kaiming init) on 3x32x32, SGD step
  vgg-hvp              one Hessian-vector product of it by double backward (dropout off, batch
                       norm with batch statistics, as ahtsgd's sharpness estimates take it)
  sampler              10^7 alpha-stable draws (alpha 1.5), reported as draws per second
  gpt-sgd              a 2-block pre-norm causal transformer (dim 128, 4 heads, MLP 512 with
                       tanh GELU, learned positions, vocabulary 256) on batch 64 of context 64,
                       cross-entropy at every position, SGD step; attention by PyTorch's fused
                       F.scaled_dot_product_attention
  gpt-hvp              one Hessian-vector product of it by double backward (attention written
                       out as softmax(QK^T/sqrt(d))V: the fused kernels have no double backward)

Prints one line per workload (median of --reps repetitions of --steps calls), like
`ahtsgd bench`; with --json, one JSON object per line with workload, threads, device,
steps_per_s and ms_per_step, the fields `ahtsgd bench --json` prints.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, steps, reps, warmup):
    for _ in range(warmup):
        fn()
    sync(dev)
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(dev)
        rates.append(steps / (time.perf_counter() - t))
    return statistics.median(rates)


def stable(alpha, shape, dev):
    """Symmetric alpha-stable draws, scale 1 (Chambers-Mallows-Stuck)."""
    u = (torch.rand(shape, device=dev) - 0.5) * math.pi
    w = -torch.log(torch.rand(shape, device=dev).clamp_min(1e-12))
    if alpha == 1.0:
        return torch.tan(u)
    return (
        torch.sin(alpha * u)
        / torch.cos(u).pow(1.0 / alpha)
        * (torch.cos(u - alpha * u) / w).pow((1.0 - alpha) / alpha)
    )


def mlp(dev):
    return nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    ).to(dev)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        h = self.b2(self.c2(h))
        return F.relu(h + (x if self.short is None else self.short(x)))


def resnet18(dev, width=64):
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for s in range(4):
        p = width << s
        for i in range(2):
            layers.append(Block(c, p, 2 if s > 0 and i == 0 else 1))
            c = p
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers).to(dev)


def cnn(dev):
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    ).to(dev)


def vgg(dev):
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(32 * 16 * 16, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )
    for layer in m:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return m.to(dev)


class Block(nn.Module):
    """A pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d, heads, mlp, fused):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc0, self.fc1 = nn.Linear(d, mlp * d), nn.Linear(mlp * d, d)
        self.heads, self.fused = heads, fused

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).split(d, dim=2)
        q, k, v = (z.view(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if self.fused:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            a = s.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(n, t, d))
        return x + self.fc1(F.gelu(self.fc0(self.n2(x)), approximate="tanh"))


class GPT(nn.Module):
    """`transformer { blocks = 2, dim = 128, heads = 4, mlp = 4 }` on `text { context = 64 }`."""

    def __init__(self, fused, vocab=256, context=64, d=128, heads=4, blocks=2, mlp=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(context, d))
        self.blocks = nn.Sequential(*[Block(d, heads, mlp, fused) for _ in range(blocks)])
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, x):
        h = self.embed(x) + self.pos[: x.shape[1]]
        return self.head(self.norm(self.blocks(h))).flatten(0, 1)


def sgd_step(model, x, y, lr=0.1, noise=None):
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            if noise is not None:
                g = g + noise * stable(1.5, g.shape, g.device)
            p.sub_(lr * g)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("workloads", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    names = a.workloads or [
        "mlp-sgd", "mlp-ahtsgd-fixed", "mlp-hvp", "mlp-power-iter", "cnn-sgd", "sampler",
    ]
    x_mlp = torch.randn(128, 784, device=dev)
    x_img = torch.randn(128, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (128,), device=dev)
    x_tok = torch.randint(0, 256, (64, 64), device=dev)
    y_tok = torch.randint(0, 256, (64 * 64,), device=dev)
    results = {}
    for name in names:
        steps, scale = a.steps, 1.0
        if name in ("mlp-sgd", "mlp-ahtsgd-fixed"):
            m = mlp(dev)
            noise = 0.01 if name == "mlp-ahtsgd-fixed" else None
            fn = lambda: sgd_step(m, x_mlp, y, noise=noise)
        elif name in ("mlp-hvp", "mlp-power-iter"):
            m = mlp(dev)
            params = list(m.parameters())
            iters = 1 if name == "mlp-hvp" else 10

            def fn():
                loss = F.cross_entropy(m(x_mlp), y)
                g = torch.autograd.grad(loss, params, create_graph=True)
                v = [torch.ones_like(p) for p in params]
                for _ in range(iters):
                    h = torch.autograd.grad(g, params, v, retain_graph=True)
                    n = torch.sqrt(sum((t * t).sum() for t in h))
                    v = [t / n for t in h]
        elif name == "cnn-sgd":
            m = cnn(dev)
            fn = lambda: sgd_step(m, x_img, y)
        elif name == "vgg-sgd":
            m = vgg(dev).train()
            fn = lambda: sgd_step(m, x_img, y)
        elif name == "vgg-hvp":
            m = vgg(dev).train()
            for layer in m:
                if isinstance(layer, nn.Dropout):
                    layer.p = 0.0
            params = list(m.parameters())

            def fn():
                loss = F.cross_entropy(m(x_img), y)
                g = torch.autograd.grad(loss, params, create_graph=True)
                v = [torch.ones_like(p) for p in params]
                torch.autograd.grad(g, params, v)
        elif name == "resnet18-sgd":
            m = resnet18(dev)
            fn = lambda: sgd_step(m, x_img, y)
            steps = max(1, a.steps // 10)
        elif name == "gpt-sgd":
            m = GPT(fused=True).to(dev)
            fn = lambda: sgd_step(m, x_tok, y_tok)
        elif name == "gpt-hvp":
            m = GPT(fused=False).to(dev)
            params = list(m.parameters())

            def fn():
                loss = F.cross_entropy(m(x_tok), y_tok)
                g = torch.autograd.grad(loss, params, create_graph=True)
                v = [torch.ones_like(p) for p in params]
                torch.autograd.grad(g, params, v)
        elif name == "sampler":
            fn = lambda: stable(1.5, (10_000_000,), dev)
            steps, scale = max(1, a.steps // 10), 1e7
        else:
            raise SystemExit(f"unknown workload {name}")
        rate = timed(fn, dev, steps, a.reps, a.warmup) * scale
        results[name] = rate
        ms = 1000.0 * scale / rate
        if a.json:
            print(json.dumps({"workload": name, "threads": a.threads, "device": a.device,
                              "steps_per_s": rate, "ms_per_step": ms}))
        else:
            print(f"{name:22} {a.threads:6} {rate:16.1f} {ms:12.3f}")


if __name__ == "__main__":
    main()

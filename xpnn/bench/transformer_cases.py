"""Benchmark cases of the transformer blocks (registered into ``xpnn.bench.cases.CASES``):

- ``attention``: causal ``scaled_dot_product_attention`` forward + backward (dq, dk, dv), float32, q/k/v of shape
  (B, H, T, D); ``attention_flops(size)`` counts its multiply-adds (``12 B H T^2 D`` FLOPs: 2 matmuls forward,
  4 backward, the causal half not discounted, as PyTorch's FLOP counter does) for a FLOP/s figure;
- ``generate``: ``GPT.generate`` of 64 new tokens after a 16-token prompt, batch 16 (the ``gpt_step`` model, block
  128), with the KV-cache (size ``kv-cache``) and recomputing the prefix for every token (``recompute``);
- ``gpt_step``: a training step of ``xpnn.models.GPT`` (d_model 128, 4 layers, 4 heads, T 64, batch 32, vocabulary
  256, AdamW, next-token cross-entropy, float32) and of the same model written in PyTorch (GPT-2 / nanoGPT layout:
  ``F.scaled_dot_product_attention(is_causal=True)``, tanh GELU, tied LM head).

Implementations: xpnn (NumPy; CUDA with and without kernels; on autograd, the only way GPT runs) and PyTorch (CPU,
CUDA); no plain-NumPy version, so
compare with ``xpnn bench --preset transformer --reference torch-cpu``.
"""
from __future__ import annotations

from typing import Any, Callable

from .cases import CASES, IMPLS, Case, Runner, _backend, _Data, _torch_device, _torch_optimizer_arrays, \
    _xpnn_optimizer_arrays

__all__ = ["ATTENTION_SIZES", "GPT_STEP", "attention_flops"]

# (B, H, T, D)
ATTENTION_SIZES = {"b32h4t64d32": (32, 4, 64, 32), "b8h8t256d64": (8, 8, 256, 64), "b4h8t1024d64": (4, 8, 1024, 64)}
# (vocab, d_model, n_layer, n_head, T, batch)
GPT_STEP = {"d128l4h4t64b32": (256, 128, 4, 4, 64, 32), "d32l1h2t16b4": (64, 32, 1, 2, 16, 4)}
# generate: (batch, prompt, new tokens) and whether the KV-cache is used
GENERATE = {"kv-cache": (16, 16, 64, True), "recompute": (16, 16, 64, False), "tiny": (2, 4, 8, True)}


def attention_flops(size: tuple[int, int, int, int]) -> int:
    """FLOPs of one causal attention forward + backward at (B, H, T, D) (each matmul ``2 B H T^2 D``)."""
    b, h, t, d = size
    return 12 * b * h * t * t * d


def _attention_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        from .. import F, tensor

        d = _Data(impl)
        q, k, v, g = (d.normal(size) for _ in range(4))
        if _backend(impl) == "cuda":
            import cupy

            q, k, v, g = (cupy.asarray(a) for a in (q, k, v, g))
        ts = [tensor(a, requires_grad=True) for a in (q, k, v)]

        def step() -> None:
            for t in ts:
                t.grad = None
            F.scaled_dot_product_attention(*ts, is_causal=True).backward(g)

        return Runner(step, IMPLS[impl].device, lambda: [t.grad for t in ts], keep=ts)
    return build


def _attention_torch(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        import torch

        d = _Data(impl)
        q, k, v = (d.normal(size).requires_grad_(True) for _ in range(3))
        g = d.normal(size)

        def step() -> None:
            for t in (q, k, v):
                t.grad = None
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)

        return Runner(step, IMPLS[impl].device, lambda: [q.grad, k.grad, v.grad], keep=[q, k, v])
    return build


def _gpt_tokens(impl: str, size: Any) -> tuple[Any, Any]:
    vocab, _, _, _, t, b = size
    d = _Data(impl)
    idx = d.labels(b * (t + 1), vocab)
    idx = idx.reshape(b, t + 1)
    return idx[:, :-1], idx[:, 1:]


def _gpt_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        from .. import optim, tensor
        from ..models import GPT, NextTokenLoss

        vocab, dm, n_layer, n_head, t, _ = size
        x, y = _gpt_tokens(impl, size)
        if _backend(impl) == "cuda":
            import cupy

            x, y = cupy.asarray(x), cupy.asarray(y)
        x, y = x.copy(), y.copy()
        model = GPT(vocab, t, n_layer=n_layer, n_head=n_head, d_model=dm, backend=_backend(impl), seed=0)
        loss_fn = NextTokenLoss()
        opt = optim.AdamW(model.parameters(), lr=1e-4)
        xt = tensor(x)

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(xt), y).backward()
            opt.step()

        def state() -> list[Any]:
            params = list(model.parameters())
            return [p.data for p in params] + [p.grad for p in params] + _xpnn_optimizer_arrays(opt)

        return Runner(step, IMPLS[impl].device, state, keep=[model])
    return build


def _generate_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        from ..models import GPT

        b, prompt, new, cache = size  # (the d128l4h4 model of gpt_step, block 128)
        vocab, dm, n_layer, n_head, _, _ = GPT_STEP["d128l4h4t64b32"]
        model = GPT(vocab, 128, n_layer=n_layer, n_head=n_head, d_model=dm, backend=_backend(impl), seed=0)
        idx = _Data(impl).labels(b * prompt, vocab).reshape(b, prompt)
        if _backend(impl) == "cuda":
            import cupy

            idx = cupy.asarray(idx)

        def run() -> None:
            model.generate(idx, new, use_cache=cache)

        return Runner(run, IMPLS[impl].device, lambda: [p.data for p in model.parameters()], keep=[model])
    return build


def torch_gpt(vocab: int, block: int, d_model: int, n_layer: int, n_head: int) -> Any:
    """The PyTorch twin of ``xpnn.models.GPT`` (same layout and parameter names), for benchmarks and tests."""
    import torch

    nn, F = torch.nn, torch.nn.functional

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)

        def forward(self, x: Any) -> Any:
            b, t, c = x.shape
            q, k, v = (z.view(b, t, n_head, c // n_head).transpose(1, 2) for z in self.c_attn(x).split(c, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(b, t, c))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

        def forward(self, x: Any) -> Any:
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(d_model), Attn(), nn.LayerNorm(d_model), MLP()

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d_model), nn.Embedding(block, d_model)
            self.blocks = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(d_model)

        def forward(self, idx: Any) -> Any:
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            return self.ln_f(x) @ self.wte.weight.T

    return GPT()


def _gpt_torch(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        import torch

        vocab, dm, n_layer, n_head, t, _ = size
        torch.manual_seed(0)
        x, y = _gpt_tokens(impl, size)
        model = torch_gpt(vocab, t, dm, n_layer, n_head).to(_torch_device(impl))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x).reshape(-1, vocab), y.reshape(-1)).backward()
            opt.step()

        def state() -> list[Any]:
            return list(model.parameters()) + _torch_optimizer_arrays(opt)

        return Runner(step, IMPLS[impl].device, state, keep=[model])
    return build


def _impls(xpnn: Callable[[str], Callable[[Any], Runner]], torch: Callable[[str], Callable[[Any], Runner]]
           ) -> dict[str, Callable[[Any], Runner]]:
    """The xpnn rows run on autograd (Tensors; GPT has no explicit-API ``backward``) under the plain impl names."""
    return {"xpnn-numpy": xpnn("xpnn-numpy"), "torch-cpu": torch("torch-cpu"), "xpnn-cuda": xpnn("xpnn-cuda"),
            "xpnn-cuda-generic": xpnn("xpnn-cuda-generic"), "torch-cuda": torch("torch-cuda")}


TRANSFORMER_CASES: dict[str, Case] = {c.name: c for c in (
    Case("attention", "causal scaled_dot_product_attention forward + backward, float32 (B, H, T, D); "
         "FLOPs = 12 B H T^2 D (xpnn.bench.transformer_cases.attention_flops)", ATTENTION_SIZES,
         frozenset({"b4h8t1024d64"}), lambda s: None, _impls(_attention_xpnn, _attention_torch)),
    Case("generate", "GPT.generate: 64 new tokens after 16, batch 16 (d_model 128, 4 layers), with the KV-cache or "
         "recomputing the prefix", GENERATE, frozenset(), lambda s: None,
         {"xpnn-numpy": _generate_xpnn("xpnn-numpy"), "xpnn-cuda": _generate_xpnn("xpnn-cuda")}),
    Case("gpt_step", "training step of a GPT (d_model 128, 4 layers, 4 heads, T 64, batch 32, vocab 256), AdamW, "
         "next-token cross-entropy, float32", GPT_STEP, frozenset(), lambda s: None,
         _impls(_gpt_xpnn, _gpt_torch)),
)}

CASES.update(TRANSFORMER_CASES)  # one table for the suite and xpnn bench

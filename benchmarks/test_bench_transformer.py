"""Transformer blocks: causal scaled_dot_product_attention forward + backward at (B, H, T, D) (FLOPs in
``xpnn.bench.transformer_cases.attention_flops``) and a GPT training step (d_model 128, 4 layers, 4 heads, T 64,
batch 32, AdamW), xpnn vs PyTorch (no plain-NumPy version: compare the xpnn and torch-cpu rows of a group)."""
import pytest

from conftest import impls


@pytest.mark.parametrize("impl", impls("attention"))
@pytest.mark.parametrize("size", ["b32h4t64d32", "b8h8t256d64", "b4h8t1024d64"])
def test_attention(run_case, size, impl):
    run_case("attention", size, impl)


@pytest.mark.parametrize("impl", impls("gpt_step"))
def test_gpt_step(run_case, impl):
    run_case("gpt_step", "d128l4h4t64b32", impl)


@pytest.mark.parametrize("impl", impls("generate"))
@pytest.mark.parametrize("size", ["kv-cache", "recompute"])
def test_generate(run_case, size, impl):
    run_case("generate", size, impl)

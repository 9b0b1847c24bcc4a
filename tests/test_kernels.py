"""bgpt.kernels (numba): the compiled GELU and dropout against ATen and the numpy reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bgpt import kernels
from bgpt.kernels import KEEP_LEVELS, dropout_coins, dropout_reference, dropout_scale

needs_numba = pytest.mark.skipif(
    not kernels.available(), reason="numba (the fast extra) is not installed"
)
SIZES = [
    1,
    7,
    4099,
    kernels.PARALLEL_MIN + 13,
]  # tails that are no multiple of 4; one call split over threads


def test_dropout_coins_rate_and_independence():
    drop, scale = dropout_scale(0.1)
    assert drop == 6554 and scale == KEEP_LEVELS / (KEEP_LEVELS - 6554)  # p' = 0.100006
    coins = dropout_coins(12345, 10**6)
    assert coins.dtype == np.uint16 and coins.shape == (10**6,)
    keep = (coins >= drop).reshape(1000, 1000)
    # 10^6 coins: the kept share within 5 standard deviations (0.0015) of 1 - p'
    assert abs(keep.mean() - (1 - drop / KEEP_LEVELS)) < 0.0015
    # rows, columns and the four lanes of a hash are not correlated
    assert keep.mean(0).std() < 0.05 and keep.mean(1).std() < 0.05
    lanes = coins.reshape(-1, 4).astype(np.float64)
    assert np.abs(np.corrcoef(lanes.T) - np.eye(4)).max() < 0.01
    assert not np.array_equal(dropout_coins(12346, 1000), coins[:1000])
    assert np.array_equal(dropout_coins(12345, 999), coins[:999])  # a prefix of the same stream


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("n", SIZES)
def test_dropout_kernel_equals_reference_bit_for_bit(dtype, n):
    x = torch.randn(n).to(dtype)
    for seed in (0, 2**63 - 1, 987654321):
        fast = kernels.dropout(x, seed, 0.1)
        assert fast.dtype == dtype and torch.equal(fast, dropout_reference(x, seed, 0.1))
    assert torch.equal(kernels.dropout(x, 5, 0.0), x)


@needs_numba
@pytest.mark.parametrize("n", SIZES)
def test_gelu_kernel_matches_aten(n):
    torch.manual_seed(n)
    x32 = torch.randn(n) * 4
    x32[:3] = torch.tensor([0.0, 30.0, -30.0])[: min(3, n)]  # zero and the clamped tails
    g32 = torch.randn(n)
    # fp32: within 1e-6 (forward) and 2e-5 (backward, unit-scale gradients; the tanh is a
    # rational approximation and 1 - tanh^2 cancels in the tails); ATen is no closer to the
    # float64 truth than ~1e-6 itself
    torch.testing.assert_close(
        kernels.gelu(x32), F.gelu(x32, approximate="tanh"), atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(
        kernels.gelu_backward(g32, x32),
        torch.ops.aten.gelu_backward(g32, x32, approximate="tanh"),
        atol=2e-5,
        rtol=1e-5,
    )
    # bf16: within one ulp (different roundings where the fp32 values differ in the last
    # bits), or 1e-5 (3e-5 times the gradient) in the tails, where 1 + tanh cancels
    x, g = x32.bfloat16(), g32.bfloat16()
    forward = kernels.gelu(x)
    assert forward.dtype == torch.bfloat16
    torch.testing.assert_close(
        forward.float(), F.gelu(x, approximate="tanh").float(), atol=1e-5, rtol=2**-7
    )
    backward = kernels.gelu_backward(g, x)
    assert backward.dtype == torch.bfloat16
    torch.testing.assert_close(
        backward.float(),
        torch.ops.aten.gelu_backward(g, x, approximate="tanh").float(),
        atol=3e-5,
        rtol=2**-7,
    )


@needs_numba
def test_model_gelu_and_its_gradient_through_autograd():
    from bgpt.ops import gelu

    x = (torch.randn(300, 256) * 3).requires_grad_()
    y = gelu(x)
    y.backward(torch.ones_like(y))
    ref = x.detach().clone().requires_grad_()
    F.gelu(ref, approximate="tanh").backward(torch.ones_like(y))
    torch.testing.assert_close(
        y.detach(), F.gelu(ref.detach(), approximate="tanh"), atol=2e-6, rtol=1e-5
    )
    torch.testing.assert_close(x.grad, ref.grad, atol=2e-5, rtol=1e-5)
    assert gelu(torch.randn(10, 10)).grad_fn is None  # small tensors: ATen


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("n", SIZES)
def test_residual_dropout_kernel_equals_add_of_reference(dtype, n):
    x, y = torch.randn(n), torch.randn(n).to(dtype)
    fast = kernels.residual_dropout(x, y, 42, 0.1)
    assert fast.dtype == torch.float32 and torch.equal(fast, x + dropout_reference(y, 42, 0.1))
    # the backward pass: the gradient of y, written in y's dtype from the fp32 gradient
    g = torch.randn(n)
    assert torch.equal(kernels.dropout(g, 42, 0.1, dtype), dropout_reference(g, 42, 0.1).to(dtype))


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_model_residual_dropout_equals_the_two_operations(dtype):
    """The fused residual sum draws the mask `dropout` draws under the same seed."""
    from bgpt.ops import dropout, residual_dropout

    x0, y0 = torch.randn(64, 40, 96), torch.randn(64, 40, 96).to(dtype)
    results = []
    for fused in (True, False):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        torch.manual_seed(7)
        out = residual_dropout(x, y, 0.1) if fused else x + dropout(y, 0.1, True)
        out.backward(torch.linspace(-1, 1, out.numel()).view(out.shape))
        results.append((out.detach(), x.grad, y.grad))
    (o1, gx1, gy1), (o2, gx2, gy2) = results
    assert torch.equal(o1, o2) and torch.equal(gx1, gx2)
    assert gy1.dtype == dtype
    # y's gradient: one rounding to bf16 (fused) against two (cast, then scale): within one ulp
    torch.testing.assert_close(
        gy1.float(), gy2.float(), atol=0, rtol=0 if dtype == torch.float32 else 2**-7
    )
    assert residual_dropout(x0, y0, 0.0).equal(x0 + y0)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "shape",
    [(1, 2, 1, 8), (2, 3, 5, 8), (64, 4, 16, 32), (1, 2, 300, 16)],
    ids=lambda s: f"T{s[2]}",
)
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_probs_kernel_matches_the_operations_one_by_one(monkeypatch, dtype, shape, p):
    """The fused scale/mask/softmax/dropout against `explicit_causal_attention`'s ATen steps with
    the numpy dropout rule (kernels switched off): the same mask, outputs and gradients within
    float32 rounding (fp32) or a few bf16 ulps."""
    import bgpt.ops as ops

    torch.manual_seed(1)
    q, k, v, g = (torch.randn(shape).to(dtype) for _ in range(4))
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(kernels, "supports", lambda t: False)
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        torch.manual_seed(5)
        y = ops.explicit_causal_attention(*leaves, p, True)
        y.backward(g)
        results.append([y.detach()] + [x.grad for x in leaves])
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    for a, b in zip(*results, strict=True):
        assert a.dtype == dtype
        assert (a.float() - b.float()).abs().max() <= tol * b.float().abs().max()


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize(
    "shape", [(1, 5), (300, 96), (700, 3072)]
)  # 700 rows: blocks of 256 split over threads
def test_bias_gelu_kernels_match_aten(dtype, shape):
    torch.manual_seed(0)
    x, g, b = (
        torch.randn(shape).to(dtype) * 2,
        torch.randn(shape).to(dtype),
        torch.randn(shape[1]) * 0.5,
    )
    y = kernels.bias_gelu(x, b)
    ref = F.gelu(
        x.float() + b.to(dtype).float(), approximate="tanh"
    )  # the bias in x's dtype, as autocast casts it
    assert y.dtype == dtype
    torch.testing.assert_close(
        y.float(), ref.to(dtype).float(), atol=2e-6, rtol=2**-7 if dtype == torch.bfloat16 else 1e-5
    )  # one ulp
    dx, db = kernels.bias_gelu_backward(g, x, b)
    leaf = (x.float() + b.to(dtype).float()).requires_grad_()
    F.gelu(leaf, approximate="tanh").backward(g.float())
    assert dx.dtype == dtype and db.dtype == torch.float32
    torch.testing.assert_close(
        dx.float(),
        leaf.grad.to(dtype).float(),
        atol=3e-5,
        rtol=2**-7 if dtype == torch.bfloat16 else 1e-5,
    )
    # the bias gradient: the column sums of x's gradient as written (blocks of rows, then blocks)
    torch.testing.assert_close(db, dx.double().sum(0).float(), atol=1e-4, rtol=1e-5)


@needs_numba
def test_model_linear_gelu_equals_gelu_of_linear():
    """The bias moved from the matmul into the GELU kernel: values and gradients within bf16
    rounding of gelu(fc(x)) under the same autocast, the bias gradient as precise or better."""
    import bgpt.ops as ops

    torch.manual_seed(0)
    fc = torch.nn.Linear(96, 384)
    x0, g = torch.randn(20, 30, 96), torch.randn(20, 30, 384)
    results = []
    for fused in (True, False):
        x = x0.clone().requires_grad_()
        fc.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ops.linear_gelu(x, fc) if fused else F.gelu(fc(x), approximate="tanh")
        assert (y.grad_fn.name() == "_CPUBiasGELUBackward") == fused
        y.backward(g.bfloat16())
        results.append([y.detach().float(), x.grad, fc.weight.grad.clone(), fc.bias.grad.clone()])
    for a, b in zip(*results, strict=True):
        assert (a - b).abs().max() <= 2**-7 * b.abs().max()
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):  # not training: the plain operations
        assert torch.equal(ops.linear_gelu(x0, fc), F.gelu(fc(x0), approximate="tanh"))


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("rows", [1, 37, 700])  # 700 rows: blocks of 256 split over threads
def test_layer_norm_kernels_match_aten(dtype, rows):
    torch.manual_seed(0)
    x, w, b = torch.randn(rows, 96) * 3 + 1, torch.randn(96), torch.randn(96)
    g = torch.randn(rows, 96).to(dtype)
    y, mean, rstd = kernels.layer_norm(x, w, b, 1e-5, dtype)
    ref = F.layer_norm(x, (96,), w, b, 1e-5)
    assert y.dtype == dtype
    torch.testing.assert_close(
        y.float(), ref.to(dtype).float(), atol=1e-5, rtol=2**-7 if dtype == torch.bfloat16 else 1e-5
    )
    torch.testing.assert_close(mean, x.mean(1))
    torch.testing.assert_close(rstd, (x.var(1, unbiased=False) + 1e-5).rsqrt())
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    F.layer_norm(leaves[0], (96,), leaves[1], leaves[2], 1e-5).backward(g.float())
    for fast, ref_grad in zip(
        kernels.layer_norm_backward(g, x, w, mean, rstd), (t.grad for t in leaves), strict=True
    ):
        assert fast.dtype == torch.float32
        torch.testing.assert_close(fast, ref_grad, atol=1e-5, rtol=1e-5)


@needs_numba
def test_model_layer_norm_equals_cast_of_aten_layer_norm():
    """Under CPU bf16 autocast in training, a block's LayerNorm writes bf16 (what the Linear
    after it casts to): equal to the cast of ATen's fp32 output but for one-ulp roundings, the
    same gradients within fp32 rounding."""
    import bgpt.ops as ops

    torch.manual_seed(0)
    ln = ops.LayerNorm(96)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x0, g = torch.randn(20, 30, 96) * 2, torch.randn(20, 30, 96).bfloat16()
    results = []
    for fused in (True, False):
        x = x0.clone().requires_grad_()
        ln.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ln(x) if fused else torch.nn.LayerNorm.forward(ln, x).bfloat16()
        assert y.dtype == torch.bfloat16 and (y.grad_fn.name() == "_CPULayerNormBackward") == fused
        y.backward(g)
        results.append([y.detach().float(), x.grad, ln.weight.grad.clone(), ln.bias.grad.clone()])
    (y1, *grads1), (y2, *grads2) = results
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=2**-7)
    for a, b in zip(grads1, grads2, strict=True):  # sums over 600 rows in another order
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):  # not training: ATen, fp32 out
        assert torch.equal(ln(x0), torch.nn.LayerNorm.forward(ln, x0))


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", [(1, 7), (700, 96), (300, 2304)])
def test_column_sums_kernel_sums_in_fp32(dtype, shape):
    x = (torch.randn(shape) * 3).to(dtype)
    sums = kernels.column_sums(x)
    assert sums.dtype == torch.float32 and sums.shape == (shape[1],)
    torch.testing.assert_close(sums, x.double().sum(0).float(), atol=1e-4, rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", [(1, 1), (33, 65), (1000, 257), (70, 3000)])
def test_transpose_kernel_equals_aten(dtype, shape):
    x = torch.randn(shape).to(dtype)
    out = kernels.transpose(x)
    assert out.is_contiguous() and torch.equal(out, x.t().contiguous())


@needs_numba
@pytest.mark.parametrize(
    "rows,n,k,bias",
    [(9000, 96, 320, True), (9000, 320, 96, True), (300, 257, 96, False), (9000, 96, 96, True)],
    ids=["transpose-dy", "transpose-x", "head", "square"],
)
def test_model_linear_equals_autocast_f_linear(monkeypatch, rows, n, k, bias):
    """`linear` (bf16 CPU autocast, training) against F.linear under the same autocast: the same
    output and input gradient bit for bit; the weight gradient is the same product in another
    memory layout (which of them `weight_gradient` takes depends on the shape), equal up to
    one-bf16-ulp roundings; the bias gradient is summed in fp32, not rounded to bf16."""
    import bgpt.ops as ops

    monkeypatch.setattr(
        ops, "TRANSPOSE_ROWS", 4096
    )  # reach the transposing branch with small tensors
    torch.manual_seed(0)
    x0, w0 = torch.randn(rows // 100, 100, k), torch.randn(n, k) * 0.05
    b0, g = torch.randn(n) if bias else None, torch.randn(rows // 100, 100, n).bfloat16()
    results = []
    for f in (ops.linear, F.linear):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        b = b0.clone().requires_grad_() if bias else None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = f(x, w, b)
        y.backward(g)
        results.append((y.detach(), x.grad, w.grad, b.grad if bias else None))
        assert (y.grad_fn.name() == "_CPULinearBackward") == (f is ops.linear)
    (y1, dx1, dw1, db1), (y2, dx2, dw2, db2) = results
    assert torch.equal(y1, y2) and torch.equal(dx1, dx2) and dx1.dtype == torch.float32
    if bias:
        exact = g.double().sum((0, 1))
        assert (db1 - exact).abs().max() <= 1e-6 * exact.abs().max() < (db2 - exact).abs().max()
        torch.testing.assert_close(db1, db2, atol=0, rtol=2**-8)
    assert dw1.dtype == torch.float32 and dw1.is_contiguous()
    # Both weight gradients are dy^T @ x of the same bf16 operands, summed in some order in fp32
    # and rounded to bf16: each lies within a bf16 rounding of the exact product plus the fp32
    # summation bound (gamma_R = R * 2^-24 of the sum of |terms|), whatever the CPU's kernel
    # and summation order. A wrong product (another layout, operand or transposition) misses
    # this bound by two orders of magnitude.
    a, xb = g.reshape(-1, n).double(), x0.reshape(-1, k).bfloat16().double()
    exact = a.t() @ xb
    bound = 2**-8 * exact.abs() + rows * 2**-24 * (a.abs().t() @ xb.abs())
    for dw in (dw1, dw2):
        assert ((dw.double() - exact).abs() <= bound).all()
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):  # not training: F.linear itself
        assert torch.equal(ops.linear(x0, w0), F.linear(x0, w0))


@needs_numba
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_kernels_work_in_a_forked_child():
    """A child forked after the kernels ran has none of the parent's worker threads: it must not
    wait on them forever."""
    import multiprocessing as mp

    x = torch.randn(kernels.PARALLEL_MIN * 2)
    expected = kernels.gelu(x)  # the parent's pool exists now
    with mp.get_context("fork").Pool(
        1
    ) as pool:  # numpy arrays across: torch's tensor sharing is not the point
        out = pool.apply_async(_gelu_in_child, (x.numpy(),)).get(timeout=60)
    assert np.array_equal(out, expected.numpy())


def _gelu_in_child(x: np.ndarray) -> np.ndarray:
    assert torch.get_num_threads() > 1  # so that the kernel goes to the pool
    return kernels.gelu(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("given,expected", [(None, "30000"), ("5", "5")])
def test_tune_process_shortens_openmp_spinning_unless_set(given, expected):
    """Importing bgpt changes nothing (no torch, no environment); `tune_process()`, which the
    long CPU commands call first, sets GOMP_SPINCOUNT before torch loads libgomp (spinning
    threads slowed the kernels after each matmul); a user's own value wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | (
        {"GOMP_SPINCOUNT": given} if given else {}
    )
    code = (
        "import bgpt, os, sys; before = os.environ.get('GOMP_SPINCOUNT'); torch_loaded = 'torch' in sys.modules; "
        "from bgpt.process import tune_process; tune_process(); "
        "sys.stdout.write(f\"{before} {torch_loaded} {os.environ['GOMP_SPINCOUNT']}\")"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out == f"{given} False {expected}"

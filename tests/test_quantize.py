"""Weights for inference (`bgpt.quantize`, `--weights`): the int8 kernel beside its plain twin,
the quantization error bound, every engine on an int8 model, loading, compressing, the CLI."""

import copy

import pytest
import torch
import torch.nn as nn

from bgpt.checkpoint import load, save_pretrained
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.errors import BGPTError
from bgpt.evaluate import evaluate_generative
from bgpt.generate import generate
from bgpt.quantize import Fp16Linear, Int8Linear, quantize, weights_of

from .conftest import random_bgpt

EPS32 = 2.0**-24  # unit roundoff of fp32
EPS16 = 2.0**-8  # unit roundoff of bf16


def small_model():
    config = BGPTConfig(
        patch_size=4, max_patches=16, hidden_size=64, heads=2, patch_layers=2, byte_layers=1
    )
    return random_bgpt(config, std=0.1, matrices_only=True)


def test_int8_weights_within_half_a_step_of_the_floats():
    torch.manual_seed(1)
    lin = nn.Linear(96, 40)
    q = Int8Linear(lin)
    assert q.qweight.dtype == torch.int8 and int(q.qweight.abs().max()) == 127
    err = (q.qweight.float() * q.scale[:, None] - lin.weight).abs()
    assert bool((err <= q.scale[:, None] / 2 * (1 + 1e-6)).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_equals_its_plain_twin(dtype):
    """fbgemm and the twin scale each activation row alike, quantize it with the same scale and
    zero point and form the same integer sums exactly; only the final scalings round (a few
    fp32 ulps, then one bf16 rounding of the output in bf16)."""
    torch.manual_seed(2)
    k = 256
    q = Int8Linear(nn.Linear(k, 48))
    x = torch.randn(5, 3, k).to(dtype)
    fast = q(x)
    q.kernel = False
    plain = q(x)
    assert fast.dtype == plain.dtype == dtype and fast.shape == (5, 3, 48)
    bound = 4 * EPS32 * (plain.float().abs() + q.bias.abs()) + 1e-30
    if dtype == torch.bfloat16:
        bound = bound + EPS16 * plain.float().abs()
    assert bool(((fast.float() - plain.float()).abs() <= bound).all())
    q.qweight[0] = -q.qweight[0]  # a different product is far out of the bound
    assert not bool(((q(x).float() - plain.float()).abs() <= bound).all())


def test_int8_rows_do_not_depend_on_each_other():
    """Each row is scaled by its own magnitude and the anchor row pins the quantization range:
    a row 100x larger elsewhere in the batch changes nothing (fbgemm alone quantizes the whole
    tensor with the range it spans)."""
    torch.manual_seed(3)
    q = Int8Linear(nn.Linear(64, 16))
    x = torch.randn(3, 64)
    x[1] *= 100
    assert torch.equal(q(x)[:1], q(x[:1]))
    assert torch.equal(q(x)[2:], q(x[2:]))


def test_fp16_kernel_equals_its_plain_twin():
    """fbgemm's fp16 GEMM and the twin multiply the same fp16-rounded weights in fp32, in their
    own orders: within the fp32 summation bound."""
    torch.manual_seed(4)
    k = 256
    lin = nn.Linear(k, 48)
    f = Fp16Linear(lin)
    x = torch.randn(7, k)
    fast = f(x)
    f.kernel = False
    plain = f(x)
    w = f.weight16.float()
    bound = k * EPS32 * (x.abs() @ w.abs().t() + f.bias.abs())
    assert bool(((fast - plain).abs() <= bound).all())
    assert bool(
        ((plain - lin(x)).abs() <= 2.0**-11 * (x.abs() @ lin.weight.abs().t()) * 1.01).all()
    )
    f.weight16[0] = -f.weight16[0]
    f.kernel, f._packed = True, None
    assert not bool(((f(x) - plain).abs() <= bound).all())


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_every_engine_runs_the_quantized_model_the_same(weights):
    model = quantize(small_model(), weights)
    assert weights_of(model) == weights
    kw = dict(ext="txt", top_k=1, max_bytes=30)
    cached = generate(model, b"ab", **kw)
    assert len(cached) == 30
    assert cached == generate(model, b"ab", engine="uncached", **kw)
    assert cached == generate(model, b"ab", engine="reference", **kw)


def test_load_with_weights_and_save_refuses_int8(tmp_path):
    save_pretrained(small_model(), tmp_path / "m")
    m8 = load(tmp_path / "m", weights="int8")
    assert weights_of(m8) == "int8"
    assert weights_of(load(tmp_path / "m", weights="bf16")) == "bf16"
    with pytest.raises(BGPTError, match="int8 model is for inference"):
        save_pretrained(m8, tmp_path / "again")
    with pytest.raises(BGPTError, match="unknown weights"):
        load(tmp_path / "m", weights="int4")
    # generate(weights=...) quantizes a copy: the same bytes as the model loaded that way
    fp32 = load(tmp_path / "m")
    want = generate(m8, b"q", "txt", top_k=1, max_bytes=12)
    assert generate(fp32, b"q", "txt", top_k=1, max_bytes=12, weights="int8") == want
    assert weights_of(fp32) == "fp32"


def test_compress_records_the_weights_and_refuses_others(tmp_path, capsys):
    pytest.importorskip("constriction")
    save_pretrained(small_model(), tmp_path / "m")
    src = tmp_path / "a.txt"
    src.write_bytes(b"the cat sat on the mat; " * 4)
    m = str(tmp_path / "m")
    assert main(["compress", m, str(src), "--weights", "int8", "-q"]) == 0
    blob = tmp_path / "a.txt.bgz"
    src.rename(tmp_path / "a.orig")
    assert main(["decompress", m, str(blob), "-q"]) == 0  # the weights come from the header
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "a.orig").read_bytes()
    capsys.readouterr()
    assert main(["decompress", m, str(blob), "-o", str(tmp_path / "b"), "--weights", "fp32"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compressed with --weights int8" in err[0]


def test_cli_weights_flag(tmp_path, capsys):
    save_pretrained(small_model(), tmp_path / "m")
    out = tmp_path / "gen"
    code = main(["generate", str(tmp_path / "m"), "--out", str(out), "-n", "2", "--ext", "txt",
                 "--max-bytes", "10", "--seed", "0", "--weights", "int8", "-q"])  # fmt: skip
    assert code == 0 and len(list(out.iterdir())) == 2
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "m"), "--out", str(out), "--weights", "int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'int4'" in err[0]


@pytest.mark.parametrize("weights, tolerance", [("fp16", 0.001), ("int8", 0.01), ("bf16", 0.02)])
def test_eval_bpb_near_fp32(tmp_path, weights, tolerance):
    """On a model with peaked distributions, int8 weights move BPB by well under 1 % (bf16
    weights and compute: its 8-bit mantissa, under 2 %)."""
    model = small_model()
    data = tmp_path / "d"
    data.mkdir()
    for i in range(4):
        (data / f"f{i}.txt").write_bytes(bytes((i + 3 * j) % 97 + 30 for j in range(50)))
    from bgpt.data import StreamDataset, open_files

    ds = StreamDataset(open_files([str(data)]), 4, 16)
    cpu = torch.device("cpu")
    ref = evaluate_generative(model, ds, 4, cpu, torch.float32)["bpb"]
    other = quantize(copy.deepcopy(model), weights)
    dtype = torch.bfloat16 if weights == "bf16" else torch.float32
    got = evaluate_generative(other, ds, 4, cpu, dtype)["bpb"]
    assert got != ref and abs(got - ref) <= tolerance * ref


def test_fused_int8_product_equals_the_kernel():
    """The numba product (bgpt.fused.affine_int8) scales, divides and rounds each activation as
    the int8 layer does, so the integers and their exact sums are fbgemm's: the outputs differ
    only in the float scalings' rounding (a few fp32 ulps). A weight changed is far out of it."""
    pytest.importorskip("numba")
    from bgpt.fused import FusedStep, affine_int8

    torch.manual_seed(5)
    layer = Int8Linear(nn.Linear(256, 96))
    step = FusedStep.__new__(FusedStep)  # only its weight packing, on a one-layer stack
    w, bias = step._linear_int8([layer])
    x = torch.randn(6, 256) * torch.logspace(-3, 3, 6)[:, None]
    want = layer(x)
    got = torch.stack([torch.from_numpy(_affine(affine_int8, row, w, bias)) for row in x.numpy()])
    bound = 4 * EPS32 * (want.abs() + layer.bias.abs()) + 1e-30
    assert bool(((got - want).abs() <= bound).all())
    w[1][0, 0, 3] = -w[1][0, 0, 3]
    got = torch.stack([torch.from_numpy(_affine(affine_int8, row, w, bias)) for row in x.numpy()])
    assert not bool(((got - want).abs() <= bound).all())


def _affine(fn, x, w, bias):
    import numpy as np

    out = np.empty(bias.shape[1], np.float32)
    fn(np.ascontiguousarray(x), w, 0, bias[0], out)
    return out


def test_fused_int8_step_equals_the_kernel_step():
    """One sample with int8 weights runs each cached step as one numba kernel (bgpt.fused). Its
    products are the layer's (above); its LayerNorms, attention and sums round in their own
    order, so an activation that sits on a rounding boundary of its quantization can land one
    step (1/63 of its row's magnitude) the other way. Same bytes as the PyTorch step; the
    distributions within 1e-5 (the fp32 kernel's bound, tests/test_generate.py) save where such
    a step moved them, within 0.05 there; at every prompt length mod S."""
    pytest.importorskip("numba")
    from bgpt.fused import FusedStep
    from bgpt.generate import Generation, Sampling, _CachedRun, generation_prompt

    model = quantize(small_model(), "int8")
    s = model.config.patch_size
    for n in range(s + 1):
        prompt = [generation_prompt(bytes(range(97, 97 + n)), "txt", s)]
        runs = []
        for fused in (True, False):
            seen = []
            gen = Generation(model, prompt, sampling=Sampling(top_k=1), min_bytes=10**6,
                             fused=fused, logits_hook=lambda _, x, seen=seen: seen.append(x.clone()))  # fmt: skip
            runs.append((gen.run(), torch.cat(seen)))
        (fused_out, fused_lp), (torch_out, torch_lp) = runs
        assert fused_out == torch_out and len(fused_out[0].data) > 20
        diff = (fused_lp - torch_lp).abs().amax(dim=1)  # per step
        assert float(diff.max()) < 0.05 and float(diff.median()) < 1e-5
    with torch.inference_mode():
        run = _CachedRun(Generation(model, prompt, sampling=Sampling(top_k=1), max_bytes=1), model)
    assert isinstance(run.byte_step, FusedStep) and isinstance(run.patch_step, FusedStep)
    fp16 = quantize(small_model(), "fp16")  # fp16 weights keep the PyTorch step
    with torch.inference_mode():
        run = _CachedRun(Generation(fp16, prompt, sampling=Sampling(top_k=1), max_bytes=1), fp16)
    assert not isinstance(run.byte_step, FusedStep)


@pytest.mark.parametrize("weights", ["int8", "fp32"])
def test_batches_run_one_product_call_between_compiled_kernels(weights):
    """A batch runs each cached step as one product call for all rows (int8: fbgemm's; fp32:
    bgpt.fused.affine_rows) with compiled kernels between them (bgpt.fused.RowsStep), rows at
    their own positions: a continuous batch of prompts of every length mod S (rows replaced as
    samples end, patch steps of a subset of rows) gives the PyTorch step's bytes, its
    distributions within 1e-5 (LayerNorms, attention and GELU round in their own order; in
    int8 an activation on a quantization boundary could move one step: within 0.05 there)."""
    pytest.importorskip("numba")
    from bgpt.fused import RowsStep
    from bgpt.generate import Generation, Sampling, _CachedRun, generation_prompt

    model = small_model()
    with torch.no_grad():  # biases and LayerNorms of their own (small_model's are 0 and 1)
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model = quantize(model, weights)
    s = model.config.patch_size
    prompts = [generation_prompt(bytes(range(97, 97 + n)), "txt", s) for n in range(2 * s)]
    runs = []
    for fused in (True, False):
        seen = []
        gen = Generation(
            model,
            prompts,
            sampling=Sampling(top_k=1),
            max_bytes=25 + len(prompts),
            min_bytes=6,
            batch_size=3,
            fused=fused,
            logits_hook=lambda rows, x, seen=seen: seen.append((rows, x.clone())),
        )
        runs.append((gen.run(), seen))
    (fused_out, fused_seen), (torch_out, torch_seen) = runs
    assert fused_out == torch_out and len({o.data for o in fused_out}) == len(prompts)
    assert [r for r, _ in fused_seen] == [r for r, _ in torch_seen]
    diff = torch.stack(
        [(a - b).abs().max() for (_, a), (_, b) in zip(fused_seen, torch_seen, strict=True)]
    )
    assert float(diff.max()) < (0.05 if weights == "int8" else 1e-5)
    assert float(diff.median()) < 1e-5
    with torch.inference_mode():
        run = _CachedRun(Generation(model, prompts, max_bytes=1, batch_size=3), model)
    assert isinstance(run.byte_step, RowsStep) and isinstance(run.patch_step, RowsStep)
    if weights == "fp32":
        return
    for layer in model.modules():  # int8's plain twins: the PyTorch step
        if isinstance(layer, Int8Linear):
            layer.kernel = False
    with torch.inference_mode():
        run = _CachedRun(Generation(model, prompts, max_bytes=1, batch_size=3), model)
    assert not isinstance(run.byte_step, RowsStep)


def test_int8_batches_draw_each_row_from_its_generator(monkeypatch):
    """A batch's rows on the compiled kernels are drawn in compiled code (bgpt.fused.draw), each
    sample with the uniforms of its own generator, in order, its end of file banned until
    min_bytes: the same draws sample_symbols makes (tests/test_generate.py holds draw to it)."""
    pytest.importorskip("numba")
    import bgpt.fused
    from bgpt.generate import Generation, Sampling, generation_prompt
    from bgpt.stream import PAD

    model = quantize(small_model(), "int8")
    prompts = [generation_prompt(bytes(range(97, 97 + n)), "txt", 4) for n in (0, 3, 5, 6, 9)]
    draws, rows = [], []
    real_draw, real_rows = bgpt.fused.draw, Generation._draw

    def draw(logits, u, temperature, greedy, banned):
        draws.append((u, temperature, greedy, banned))
        return real_draw(logits, u, temperature, greedy, banned)

    def rows_drawn(self, samples, logits):
        rows.append([(i, len(self.outputs[i])) for i in samples])
        return real_rows(self, samples, logits)

    monkeypatch.setattr(bgpt.fused, "draw", draw)
    monkeypatch.setattr(Generation, "_draw", rows_drawn)
    seeds = [7, 8, 9, 10, 11]
    gen = Generation(model, prompts, sampling=Sampling(temperature=0.9), seeds=seeds,
                     min_bytes=8, max_bytes=30, batch_size=3)  # fmt: skip
    outs = gen.run()
    drawn = [x for r in rows for x in r]
    assert len(drawn) == len(draws) == sum(len(o.data) + (o.stop == "end") for o in outs)
    streams = [torch.Generator().manual_seed(s) for s in seeds]
    for (i, made), (u, temperature, greedy, banned) in zip(drawn, draws, strict=True):
        assert u == torch.rand(1, generator=streams[i]).item()
        assert (temperature, greedy, banned) == (0.9, False, PAD if made < 8 else -1)
    assert max(len(r) for r in rows) == 3

"""Generation and conversion: the cached engine against the plain loops, batching, stopping,
sampling and the `generate` / `convert` commands. Tiny models (patch size 4), fp32."""

import numpy as np
import pytest
import torch

from bgpt.checkpoint import save_pretrained
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.errors import BGPTError
from bgpt.generate import (
    STOP_CONTEXT,
    STOP_END,
    STOP_MAX_BYTES,
    GenerateOptions,
    Generation,
    Sampling,
    conversion_streams,
    convert,
    generate,
    generation_prompt,
    sample_symbols,
    stream,
)
from bgpt.model import BGPT, BGPTClassifier
from bgpt.stream import PAD, conversion_prompt

from .conftest import random_bgpt

S = 4
SHAPES = [  # (hidden, heads, patch layers, byte layers, max patches, byte context)
    (32, 1, 1, 1, 12, False),
    (64, 2, 2, 2, 16, False),
    (48, 3, 2, 1, 9, False),
    (32, 2, 1, 2, 11, True),
]


def shape_id(s) -> str:
    return f"h{s[0]}-l{s[2]}{s[3]}-L{s[4]}" + ("-ctx" if s[5] else "")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(
    hidden=64,
    heads=2,
    patch_layers=2,
    byte_layers=2,
    max_patches=16,
    byte_context=False,
    seed=0,
    std=0.3,
) -> BGPT:
    config = BGPTConfig(
        patch_size=S,
        max_patches=max_patches,
        hidden_size=hidden,
        heads=heads,
        patch_layers=patch_layers,
        byte_layers=byte_layers,
        byte_context=byte_context,
    )
    return random_bgpt(config, seed, std)


def pad_bias(model: BGPT, k: float) -> BGPT:
    """Raise the logit of PAD by about k, so that files end after a few bytes."""
    with torch.no_grad():
        w = model.byte_decoder.wte.weight[PAD]
        model.byte_decoder.transformer.ln_f.bias += k * w / w.dot(w)
    return model


def prompt_bytes(n: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def run_with_logits(model, prompts, **kw):
    """Outputs and, per sample, the (steps, 257) log-probabilities the engine drew from."""
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(prompts))}

    def hook(samples, logits):
        for i, row in zip(samples, logits.log_softmax(-1), strict=True):
            seen[i].append(row.clone())

    gen = Generation(model, prompts, logits_hook=hook, **kw)
    outs = gen.run()
    return outs, [
        torch.stack(seen[i]) if seen[i] else torch.zeros(0, 257) for i in range(len(prompts))
    ]


# ----------------------------------------------------------------------------- cached == plain


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_cached_equals_plain_loops_for_every_prompt_length(shape):
    """Greedy bytes identical, distributions within 1e-4; prompts 0..2S+1 bytes (every residue
    mod S), all in one ragged batch for the cached engine, one batch per length for the loops."""
    model = make_model(*shape)
    mp = shape[4]
    prompts = [generation_prompt(prompt_bytes(n, seed=n), "txt", S) for n in range(2 * S + 2)]
    # min_bytes: no early end, so that outputs run to the context limit (the logits hook sees
    # the raw logits, PAD included)
    cached, lp_cached = run_with_logits(
        model, prompts, engine="cached", sampling=Sampling(top_k=1), min_bytes=10**6
    )
    for engine in ("uncached", "reference"):
        plain, lp_plain = run_with_logits(
            model, prompts, engine=engine, sampling=Sampling(top_k=1), min_bytes=10**6
        )
        assert [o.data for o in plain] == [o.data for o in cached]
        assert [o.stop for o in plain] == [o.stop for o in cached] == [STOP_CONTEXT] * len(prompts)
        for a, b in zip(lp_cached, lp_plain, strict=True):
            assert a.shape == b.shape and len(a) > 0
            assert (a - b).abs().max() < 1e-4
    # seeded sampling: the same bytes too, and varied ones (greedy may repeat one byte)
    sampled = Generation(model, prompts, seeds=range(len(prompts)), min_bytes=10**6).run()
    assert (
        sampled
        == Generation(
            model, prompts, seeds=range(len(prompts)), min_bytes=10**6, engine="reference"
        ).run()
    )
    assert len(set(b"".join(o.data for o in sampled))) > 100
    for o, p in zip(cached, prompts, strict=True):  # context: (L patches) - header - prompt
        assert len(o.data) == mp * S - len(p)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_fused_kernel_equals_torch_step(shape):
    """One sample on CPU in fp32 runs each cached step as one numba kernel (bgpt.fused): the
    same bytes as the PyTorch step, distributions within 1e-5, for prompts of every length
    mod S (prefill, forced prompt bytes, table lookups, patch steps, up to the context)."""
    pytest.importorskip("numba")
    from bgpt.fused import FusedStep

    model = make_model(*shape, seed=shape[0])
    for n in range(S + 1):
        prompt = [generation_prompt(prompt_bytes(n, seed=n), "txt", S)]
        runs = []
        for fused in (True, False):
            seen = []
            gen = Generation(
                model,
                prompt,
                sampling=Sampling(top_k=1),
                min_bytes=10**6,
                fused=fused,
                logits_hook=lambda samples, logits, seen=seen: seen.append(logits.clone()),
            )
            outs = gen.run()
            assert gen.fused == fused
            runs.append((outs, torch.cat(seen)))
        (fused_out, fused_lp), (torch_out, torch_lp) = runs
        assert fused_out == torch_out and fused_out[0].stop == STOP_CONTEXT
        assert (fused_lp - torch_lp).abs().max() < 1e-5
    # the kernel is what ran: a batch of one on CPU in fp32 builds it for both decoders
    gen = Generation(model, prompt, sampling=Sampling(top_k=1), max_bytes=1)
    from bgpt.generate import _CachedRun

    with torch.inference_mode():
        run = _CachedRun(gen, model)
    assert isinstance(run.byte_step, FusedStep) and isinstance(run.patch_step, FusedStep)


def test_cached_equals_plain_with_early_ends_and_sampling():
    model = pad_bias(make_model(seed=3), 3.0)
    prompts = [generation_prompt(prompt_bytes(n), "bin", S) for n in (0, 1, 2, 3, 5, 7)]
    for sampling in (Sampling(top_k=1), Sampling(), Sampling(top_k=20, top_p=0.9, temperature=0.8)):
        seeds = None if sampling.greedy else [11 * i for i in range(len(prompts))]
        cached = Generation(model, prompts, sampling=sampling, seeds=seeds).run()
        plain = Generation(model, prompts, sampling=sampling, seeds=seeds, engine="uncached").run()
        assert cached == plain
    stops = {o.stop for o in cached}
    assert STOP_END in stops


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_cached_matches_teacher_forcing(byte_context):
    """The distributions the engine draws from are the model's own on the finished stream."""
    model = make_model(byte_context=byte_context, seed=5)
    prompt = prompt_bytes(6)
    outs, (lp,) = run_with_logits(
        model, [generation_prompt(prompt, "abc", S)], sampling=Sampling(top_k=1), max_bytes=30
    )
    data = prompt + outs[0].data
    symbols = torch.from_numpy(generation_prompt(data, "abc", S).astype(np.int64))
    symbols = torch.cat([symbols, torch.full((-len(symbols) % S,), PAD)]).view(1, -1, S)
    with torch.no_grad():
        tf = model.symbol_logprobs(symbols, torch.ones(1, symbols.shape[1], dtype=torch.bool))[
            0
        ].flatten()
    # predicted symbol j of the stream (j >= S) is tf[j - S]; the output starts after the prompt
    first = len(prompt)
    chosen = torch.tensor(list(outs[0].data))
    got = lp[torch.arange(len(chosen)), chosen]
    assert (got - tf[first : first + len(chosen)]).abs().max() < 1e-4


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_batch_equals_each_sample_alone(byte_context):
    model = make_model(byte_context=byte_context, seed=7)
    raw = [prompt_bytes(n, seed=n) for n in (9, 0, 6, 1, 3, 2, 13)]  # every residue, ragged
    for kw in (dict(top_k=1), dict(seed=123), dict(seed=5, top_k=30, top_p=0.8, temperature=1.3)):
        together = generate(model, raw, "txt", **kw)
        for i, p in enumerate(raw):
            one = dict(kw, seed=kw["seed"] + i) if "seed" in kw else kw
            alone = generate(model, [p], "txt", **one)[0]
            assert together[i] == alone
    # the same with early ends inside the batch (rows leave the caches at different steps)
    model = pad_bias(model, 2.5)
    together = generate(model, raw, "txt", seed=9)
    assert {o.stop for o in together} >= {STOP_END}
    for i, p in enumerate(raw):
        assert generate(model, [p], "txt", seed=9 + i)[0] == together[i]


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_continuous_batching_equals_each_sample_alone(byte_context):
    """Twelve prompts through 3 rows: each finished row takes the next prompt at once (ends of
    file, max_bytes and prompts of every residue mix in the rows); every sample's bytes are
    those it makes alone with its seed, and never more than 3 rows run."""
    model = pad_bias(make_model(byte_context=byte_context, seed=11), 2.0)
    raw = [prompt_bytes(n % 7, seed=n) for n in range(12)]
    widths = []
    gen = Generation(
        model,
        [generation_prompt(p, "txt", S) for p in raw],
        sampling=Sampling(),
        seeds=[40 + i for i in range(12)],
        max_bytes=9,
        batch_size=3,
        logits_hook=lambda samples, logits: widths.append(len(samples)),
    )
    together = gen.run()
    assert max(widths) == 3 and sorted(gen.finished) == list(range(12))
    assert {o.stop for o in together} == {STOP_END, STOP_MAX_BYTES}
    for i, p in enumerate(raw):
        assert generate(model, p, "txt", seed=40 + i, max_bytes=9) == together[i].data
    assert generate(model, raw, "txt", seed=40, max_bytes=9, batch_size=3) == together
    for engine in ("uncached", "reference"):  # the plain loops run chunks of batch_size
        assert (
            generate(model, raw, "txt", seed=40, max_bytes=9, batch_size=5, engine=engine)
            == together
        )


def test_batch_distributions_equal_single():
    model = make_model(seed=8)
    prompts = [generation_prompt(prompt_bytes(n), "bin", S) for n in (5, 2, 0)]
    _, lp_batch = run_with_logits(model, prompts, sampling=Sampling(top_k=1), max_bytes=25)
    for i, p in enumerate(prompts):
        _, (lp_one,) = run_with_logits(model, [p], sampling=Sampling(top_k=1), max_bytes=25)
        assert lp_one.shape == lp_batch[i].shape
        assert (lp_one - lp_batch[i]).abs().max() < 1e-5


def test_ragged_cache_equals_full_forward():
    """Transformer with a ragged cache: rows prefilled to different lengths, then a step on a
    subset of rows, equal the uncached forward of each row."""
    model = make_model(seed=2)
    tr = model.patch_decoder.transformer
    x = torch.randn(3, 7, 64)
    lens = [3, 6, 4]
    with torch.no_grad():
        full = tr(x)
        cache = tr.new_cache(3, 8, "cpu", torch.float32)
        tr(
            torch.where(
                torch.arange(7)[None, :, None] < torch.tensor(lens)[:, None, None], x, 99.0
            ),
            cache,
        )
        cache.lens = list(lens)  # the padding (99) is forgotten and overwritten
        rows = torch.tensor([2, 0])
        out = tr(x[rows, torch.tensor(lens)[rows]][:, None], cache, rows)[:, 0]
        torch.testing.assert_close(out, full[rows, torch.tensor(lens)[rows]], atol=1e-5, rtol=0)
        assert cache.lens == [4, 6, 5]
        at = torch.tensor(cache.lens)
        out = tr(x[torch.arange(3), at][:, None], cache)[:, 0]  # all rows, ragged lengths
        torch.testing.assert_close(out, full[torch.arange(3), at], atol=1e-5, rtol=0)
        assert cache.lens == [5, 7, 6]


# ----------------------------------------------------------------------------- stopping


def test_stop_at_end_patch():
    model = pad_bias(make_model(seed=4), 3.0)
    outs = generate(model, [b""] * 32, "txt", seed=0)
    ended = [o for o in outs if o.stop == STOP_END]
    assert (
        ended and any(len(o.data) % S for o in ended) and any(len(o.data) % S == 0 for o in ended)
    )
    for i, o in enumerate(outs):
        if o.stop != STOP_END:
            continue
        # the draw after the last byte was PAD: one byte fewer allowed is a max_bytes stop with
        # the same bytes, one more allowed still ends there
        assert generate(model, ext="txt", seed=i, max_bytes=len(o.data) + 1) == o.data
        if o.data:
            short = generate(model, [b""], "txt", seed=i, max_bytes=len(o.data))[0]
            assert short == type(o)(o.data, STOP_MAX_BYTES)


def test_stop_at_context_limit_and_max_bytes():
    model = make_model(seed=6, max_patches=8)
    for n in range(2 * S + 2):
        p = prompt_bytes(n)
        o = generate(model, [p], "bin", seed=1, min_bytes=10**6)[0]
        assert o.stop == STOP_CONTEXT and len(o.data) == 8 * S - S - n
        m = generate(model, [p], "bin", seed=1, max_bytes=5, min_bytes=10**6)[0]
        assert m == type(o)(o.data[:5], STOP_MAX_BYTES)
    assert generate(model, [b"x"], max_bytes=0)[0] == type(o)(b"", STOP_MAX_BYTES)
    with pytest.raises(BGPTError, match="context"):
        generate(model, prompt_bytes(7 * S))  # header + 7 patches: no room left
    assert len(generate(model, prompt_bytes(7 * S - 1), seed=0, top_k=1)) <= 1


def test_same_seed_same_bytes_and_stream():
    model = make_model(seed=9)
    a = generate(model, b"ab", "txt", seed=42, max_bytes=40)
    assert a == generate(model, b"ab", "txt", seed=42, max_bytes=40)
    assert a != generate(model, b"ab", "txt", seed=43, max_bytes=40)
    assert b"".join(stream(model, b"ab", "txt", seed=42, max_bytes=40)) == a
    assert model.generate(b"ab", "txt", seed=42, max_bytes=40) == a
    assert b"".join(model.stream(b"ab", "txt", seed=42, max_bytes=40)) == a
    # greedy needs no seed; training mode is restored and does not change the output (no dropout)
    g = generate(model, b"ab", "txt", top_k=1, max_bytes=40)
    model.train()
    assert generate(model, b"ab", "txt", top_k=1, max_bytes=40) == g and model.training


def test_bf16_runs():
    model = make_model(seed=1)
    out = generate(model, [b"abc", b""], "txt", seed=0, max_bytes=12, min_bytes=12, dtype="bf16")
    assert [len(o.data) for o in out] == [12, 12]


# ----------------------------------------------------------------------------- conversion


def test_conversion_prompt_and_batched_convert():
    model = make_model(seed=10, max_patches=24)
    inputs = [(prompt_bytes(n, seed=n), "abc") for n in (5, 12, 1, 8)]
    streams = conversion_streams(model, inputs, "mid")
    for (x, e), st in zip(inputs, streams, strict=True):
        assert np.array_equal(st, conversion_prompt(np.frombuffer(x, np.uint8), e, "mid", S))
    together = convert(model, inputs, to="mid")
    for i, (x, e) in enumerate(inputs):
        alone = convert(model, x, e, "mid")
        assert together[i].data == alone == model.convert(x, e, "mid")
        assert b"".join(stream(model, x, e, to="mid")) == alone
        assert b"".join(model.stream(x, e, to="mid")) == alone
        assert convert(model, [(x, e)], to="mid", engine="uncached")[0] == together[i]
    assert convert(model, inputs, to="mid", seed=3, top_k=0) == [
        convert(model, [inp], to="mid", seed=3 + i, top_k=0)[0] for i, inp in enumerate(inputs)
    ]


# ----------------------------------------------------------------------------- sampling


def test_sampling_rules():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gens = [torch.Generator().manual_seed(0)]

    def draws(sampling, n=400):
        return {sample_symbols(logits, sampling, gens)[0] for _ in range(n)}

    assert sample_symbols(logits, Sampling(top_k=1), [None]) == [0]
    assert draws(Sampling()) == {0, 1, 2, 3}
    assert draws(Sampling(top_k=2)) == {0, 1}
    assert draws(Sampling(top_p=0.45)) == {0}
    assert draws(Sampling(top_p=0.6)) == {0, 1}
    assert draws(Sampling(top_p=0.81)) == {0, 1, 2}
    assert draws(Sampling(temperature=0.01)) == {0}
    for bad in (
        dict(top_k=-1),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(temperature=0.0),
        dict(temperature=-1),
    ):
        with pytest.raises(BGPTError):
            Sampling(**bad)


def test_one_row_sampling_equals_the_batched_search():
    """A single row is drawn on the host (bisect), several with torch.searchsorted: the same
    symbol for the same generator state, including peaked and near-flat distributions."""
    torch.manual_seed(0)
    settings = (Sampling(), Sampling(top_k=5), Sampling(top_p=0.7, temperature=0.6))
    for i in range(300):
        logits = torch.randn(1, 257) * (i % 9)
        other = torch.randn(1, 257)
        sampling = settings[i % 3]
        one = sample_symbols(logits, sampling, [torch.Generator().manual_seed(i)])
        pair = sample_symbols(
            torch.cat([logits, other]),
            sampling,
            [torch.Generator().manual_seed(i), torch.Generator().manual_seed(0)],
        )
        assert one == pair[:1]


def _interval_holds(logits: torch.Tensor, temperature: float, u: float, pick: int) -> bool:
    """Does u fall in symbol `pick`'s interval of the float64 cumulative distribution, give
    or take 1e-6 (float32 softmax and sums round at ~1e-7 of the total)?"""
    p = torch.softmax(logits.double() / temperature, -1)
    cdf = torch.cumsum(p, -1)
    low = float(cdf[pick] - p[pick])
    return float(p[pick]) > 0 and low - 1e-6 <= u <= float(cdf[pick]) + 1e-6


def test_fused_draw_picks_what_sample_symbols_picks():
    """`bgpt.fused.draw` (the fused single-sample engine's sampler) against sample_symbols with
    the same uniform: greedy picks the same first maximum; sampling picks the same symbol except
    where u lies within rounding of a step of the distribution, where both picks border it."""
    pytest.importorskip("numba")
    from bgpt.fused import draw

    torch.manual_seed(0)
    differ = 0
    for i in range(600):
        logits = torch.randn(257) * (i % 9)
        if i % 4 == 1:  # ties at the top: the first wins
            logits[[3, 100, 200]] = logits.max() + 1
        if i % 4 == 2:  # symbols of probability 0, as after top-k or a ban
            logits[torch.randperm(257)[:200]] = float("-inf")
        banned = PAD if i % 5 == 0 else -1
        if i % 10 == 0:  # the end of file most likely, but banned
            logits[PAD] = logits.max() + 2
        seen = logits.clone()
        if banned >= 0:
            seen[PAD] = float("-inf")
        x = logits.numpy().astype(np.float32)
        assert draw(x, 0.0, 1.0, True, banned) == int(seen.argmax())
        temperature = (1.0, 0.6, 1.7)[i % 3]
        sampling = Sampling(temperature=temperature)
        g, same = torch.Generator().manual_seed(i), torch.Generator().manual_seed(i)
        u = torch.rand(1, generator=same).item()
        want = sample_symbols(seen[None], sampling, [g])[0]
        got = draw(x, u, temperature, False, banned)
        assert got != banned and _interval_holds(seen, temperature, u, got)
        if got != want:  # only at a boundary both picks share
            assert _interval_holds(seen, temperature, u, want)
            differ += 1
    assert differ <= 3
    # a flat row: u walks the symbols in order
    flat = np.zeros(257, np.float32)
    assert [draw(flat, k / 257 + 1e-4, 1.0, False, -1) for k in (0, 5, 256)] == [0, 5, 256]


def test_fused_one_sample_draws_from_its_generator(monkeypatch):
    """The fused engine draws one sample in compiled code: with the uniforms its generator
    gives, the end of file banned until min_bytes, at the temperature asked; with a logits hook
    (or top-k / top-p) it goes through sample_symbols, which then picks the same bytes."""
    pytest.importorskip("numba")
    import bgpt.fused

    model = make_model(seed=9)
    prompt = [generation_prompt(prompt_bytes(3), "bin", S)]
    calls = []
    real = bgpt.fused.draw

    def spy(logits, u, temperature, greedy, banned):
        y = real(logits, u, temperature, greedy, banned)
        calls.append((logits.copy(), u, temperature, greedy, banned, y))
        return y

    monkeypatch.setattr(bgpt.fused, "draw", spy)
    sampling = Sampling(temperature=0.8)
    out = Generation(model, prompt, sampling=sampling, seeds=[4], min_bytes=20).run()[0]
    assert len(calls) == len(out.data) + (out.stop == STOP_END) and len(calls) > 25
    g = torch.Generator().manual_seed(4)
    for k, (row, u, temperature, greedy, banned, y) in enumerate(calls):
        logits = torch.from_numpy(row)
        assert u == torch.rand(1, generator=g).item() and temperature == 0.8 and not greedy
        assert banned == (PAD if k < 20 else -1)
        if banned >= 0:
            logits[PAD] = float("-inf")
        assert _interval_holds(logits, 0.8, u, y)
    drawn = list(calls)
    calls.clear()
    hooked = Generation(
        model, prompt, sampling=sampling, seeds=[4], min_bytes=20, logits_hook=lambda *_: None
    ).run()[0]
    assert not calls
    if hooked != out:  # the same bytes up to a draw at a boundary of the distribution
        k = next(k for k, (a, b) in enumerate(zip(hooked.data, out.data, strict=False)) if a != b)
        row, u = drawn[k][:2]
        assert hooked.data[:k] == out.data[:k]
        assert _interval_holds(torch.from_numpy(row), 0.8, u, hooked.data[k])


def test_library_errors():
    model = make_model()
    with pytest.raises(BGPTError, match="max_bytes"):
        generate(model, max_bytes=-1)
    with pytest.raises(BGPTError, match="engine"):
        generate(model, engine="fast")
    with pytest.raises(BGPTError, match="seed must be an integer"):
        GenerateOptions(seed=1.5)
    with pytest.raises(BGPTError, match="top_p"):
        GenerateOptions(top_p=0.0)
    with pytest.raises(TypeError, match="unknown generation option.*topk"):
        generate(model, topk=3)
    with pytest.raises(BGPTError, match="extension"):
        convert(model, b"x")
    with pytest.raises(BGPTError, match="pairs and no ext"):
        convert(model, [(b"x", "abc")], "abc", "mid")
    classifier = BGPTClassifier(
        BGPTConfig(
            patch_size=S,
            max_patches=8,
            hidden_size=32,
            patch_layers=1,
            byte_layers=0,
            num_classes=3,
        )
    )
    with pytest.raises(BGPTError, match="classifier"):
        Generation(classifier, [generation_prompt(b"", "txt", S)])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def saved(tmp_path):
    model = make_model(seed=11)
    save_pretrained(model, tmp_path / "model")
    return model, tmp_path / "model"


def test_cli_generate_writes_files(saved, tmp_path):
    model, path = saved
    out = tmp_path / "out"
    (tmp_path / "p.txt").write_bytes(b"hello")
    assert (
        main(
            [
                "generate",
                str(path),
                "--ext",
                ".txt",
                "-n",
                "3",
                "--out",
                str(out),
                "--seed",
                "7",
                "--max-bytes",
                "20",
                "--prompt",
                str(tmp_path / "p.txt"),
                "-q",
            ]
        )
        == 0
    )
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["sample-0000.txt", "sample-0001.txt", "sample-0002.txt"]
    want = generate(model, [b"hello"] * 3, "txt", seed=7, max_bytes=20)
    assert [f.read_bytes() for f in files] == [b"hello" + o.data for o in want]  # prompt first
    # batch size 1 gives the same files
    assert (
        main(
            [
                "generate",
                str(path),
                "--ext",
                "txt",
                "-n",
                "3",
                "--out",
                str(out),
                "--seed",
                "7",
                "--max-bytes",
                "20",
                "--prompt",
                str(tmp_path / "p.txt"),
                "--batch-size",
                "1",
                "-q",
                "--force",  # replaces the files of the first run
            ]
        )
        == 0
    )
    assert [f.read_bytes() for f in sorted(out.iterdir())] == [b"hello" + o.data for o in want]


def test_cli_files_grow_patch_by_patch(saved, tmp_path, monkeypatch):
    """Each file on disk holds every byte so far whenever its stream is at a patch boundary."""
    _, path = saved
    out, checked = tmp_path / "grow", []
    iterate = Generation.__iter__

    def spy(gen):
        for step in iterate(gen):
            yield step
            # back here once the command has written this step
            for j in range(len(gen.prompts)):
                if gen.at_patch_end(j):
                    size = (out / f"sample-{j:04d}.bin").stat().st_size
                    assert size == len(gen.outputs[j])
                    checked.append(size)

    monkeypatch.setattr(Generation, "__iter__", spy)
    argv = ["generate", str(path), "--ext", "bin", "-n", "2", "--out", str(out), "--seed", "1"]
    assert main(argv + ["--max-bytes", "30", "-q"]) == 0
    assert len(set(checked)) > 3


def test_cli_convert(saved, tmp_path):
    model, path = saved
    a, b = tmp_path / "a.abc", tmp_path / "tune.b.abc"
    a.write_bytes(b"X:1\nK:G\nabc|")
    b.write_bytes(b"X:2\n")
    assert (
        main(
            [
                "convert",
                str(path),
                str(a),
                str(b),
                "--to",
                "mid",
                "--out",
                str(tmp_path / "c"),
                "-q",
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "a.mid").read_bytes() == convert(model, a.read_bytes(), "abc", "mid")
    assert (tmp_path / "c" / "tune.b.mid").read_bytes() == convert(
        model, b.read_bytes(), "abc", "mid"
    )


def test_cli_errors_are_one_line(saved, tmp_path, capsys):
    _, path = saved
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "afile").write_bytes(b"x")
    (tmp_path / "in.abc").write_bytes(b"abc")
    classifier = BGPTClassifier(
        BGPTConfig(
            patch_size=S,
            max_patches=8,
            hidden_size=32,
            patch_layers=1,
            byte_layers=0,
            num_classes=2,
        )
    )
    save_pretrained(classifier, tmp_path / "clf")
    out = str(tmp_path / "o")
    gen = ["generate", str(path), "--ext", "txt", "--out", out]
    cases = [
        (gen + ["--prompt", str(tmp_path / "missing")], "no such file"),
        (gen + ["--prompt", str(tmp_path / "empty")], "empty"),
        (["generate", str(path), "--ext", "txt", "--out", str(tmp_path / "afile")], "is a file"),
        (gen + ["-n", "0"], "-n"),
        (gen + ["--top-p", "1.5"], "top_p"),
        (gen + ["--top-p", "0"], "top_p"),
        (gen + ["--temperature", "0"], "temperature"),
        (gen + ["--max-bytes", "-1"], "max-bytes"),
        (gen + ["--ext", "a/b"], "extension"),
        (gen + ["--threads", "-1"], "threads"),
        (["generate", str(tmp_path / "afile"), "--ext", "txt", "--out", out], "checkpoint"),
        (["generate", str(tmp_path / "clf"), "--ext", "txt", "--out", out], "classifier"),
        (
            ["convert", str(path), str(tmp_path / "in.abc"), "--to", "a/mid", "--out", out],
            "extension",
        ),
        (
            ["convert", str(path), str(tmp_path / "nope.abc"), "--to", "mid", "--out", out],
            "no such file",
        ),
        (["convert", str(path), str(tmp_path / "empty"), "--to", "mid", "--out", out], "empty"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, (argv, err)
    long = tmp_path / "long.abc"
    long.write_bytes(bytes(200))
    assert main(["convert", str(path), str(long), "--to", "mid", "--out", out]) == 2
    assert "too long" in capsys.readouterr().err


def test_one_options_object_or_its_fields_give_the_same_run():
    """`options=` and keywords are one thing: keywords override the object's fields; convert's
    default is greedy, generate's is sampling."""
    model = make_model()
    opts = GenerateOptions(seed=4, max_bytes=12, top_p=0.9)
    a = generate(model, b"ab", "txt", opts)
    assert a == generate(model, b"ab", "txt", seed=4, max_bytes=12, top_p=0.9)
    assert generate(model, b"ab", "txt", opts, seed=5) == generate(
        model, b"ab", "txt", seed=5, max_bytes=12, top_p=0.9
    )
    assert [o.data for o in generate(model, [b"ab", b"cd"], "txt", opts)] == [
        a,
        generate(model, b"cd", "txt", opts, seed=5),
    ]
    x = bytes(range(10))
    greedy = convert(model, x, "abc", "mid", max_bytes=12)
    assert greedy == convert(model, x, "abc", "mid", GenerateOptions(top_k=1, max_bytes=12))
    assert greedy == b"".join(stream(model, x, "abc", to="mid", max_bytes=12))

"""CUDA: the same model, training loop and engines on the GPU as on the CPU.

Skipped where no GPU is present (CI has none); run on a GPU machine with
`python -m pytest tests/test_cuda.py`. Tiny models, fp32 unless said: TF32 is off by
default for matmuls in PyTorch, so CPU and GPU agree to float32 rounding."""

import json

import numpy as np
import pytest
import torch

from bgpt.checkpoint import load, save_pretrained
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.generate import generate
from bgpt.model import BGPT

from .conftest import random_bgpt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")


def batch_of(config: BGPTConfig, n: int = 3, seed: int = 0):
    from bgpt.bench import random_batch

    return random_batch(config, n, torch.device("cpu"), seed)


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten().cpu() for p in model.parameters()])


def test_forward_and_gradients_match_cpu(tiny_config):
    batch = batch_of(tiny_config)
    cpu = random_bgpt(tiny_config, std=0.05).train()
    gpu = random_bgpt(tiny_config, std=0.05).train().to(CUDA)
    out_cpu = cpu(batch.patches, batch.mask)
    out_gpu = gpu(batch.patches.to(CUDA), batch.mask.to(CUDA))
    assert abs(out_cpu.loss.item() - out_gpu.loss.item()) < 1e-5
    out_cpu.loss.backward()
    out_gpu.loss.backward()
    torch.testing.assert_close(grads(gpu), grads(cpu), atol=1e-5, rtol=1e-4)
    # the scoring path too
    lp_cpu = cpu.eval().symbol_logprobs(batch.patches, batch.mask)
    lp_gpu = gpu.eval().symbol_logprobs(batch.patches.to(CUDA), batch.mask.to(CUDA))
    assert (lp_cpu - lp_gpu.cpu()).abs().max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_close_to_fp32(tiny_config, dtype):
    from bgpt.device import autocast

    batch = batch_of(tiny_config).to(CUDA)
    model = random_bgpt(tiny_config, std=0.05).to(CUDA)
    with torch.no_grad():
        exact = model(batch.patches, batch.mask).loss.item()
        with autocast(CUDA, dtype):
            low = model(batch.patches, batch.mask).loss.item()
    assert abs(exact - low) < 0.02 * exact


def test_dropout_rate_and_checkpointing_replays_it(tiny_config):
    """CUDA keeps F.dropout; the recomputed forward must draw the same masks from the CUDA RNG."""
    config = tiny_config.replace(dropout=0.1)
    batch = batch_of(config).to(CUDA)
    g = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = BGPT(config).to(CUDA)
        model.set_gradient_checkpointing(ckpt)
        model(batch.patches, batch.mask).loss.backward()
        g.append(grads(model))
    torch.testing.assert_close(g[0], g[1], atol=1e-6, rtol=1e-5)
    torch.manual_seed(0)
    model = BGPT(config).to(CUDA)
    with torch.no_grad():  # training mode: two forwards differ (dropout on), eval: equal
        a = model(batch.patches, batch.mask).loss.item()
        b = model(batch.patches, batch.mask).loss.item()
        model.eval()
        c = model(batch.patches, batch.mask).loss.item()
        d = model(batch.patches, batch.mask).loss.item()
    assert a != b and c == d


def test_cached_generation_equals_plain_loops_and_cpu():
    config = BGPTConfig(
        patch_size=4, max_patches=16, hidden_size=64, heads=2, patch_layers=2, byte_layers=2
    )
    model = random_bgpt(config, seed=3)
    prompts = [b"", b"a", b"abcde", b"0123456789"]
    on_cpu = generate(model, prompts, "txt", top_k=1, min_bytes=10**6, dtype="fp32")
    model.to(CUDA)
    for engine in ("cached", "uncached", "reference"):
        out = generate(model, prompts, "txt", top_k=1, min_bytes=10**6, dtype="fp32", engine=engine)
        assert [o.data for o in out] == [o.data for o in on_cpu], engine
    sampled = [generate(model, prompts, "txt", seed=5, engine=e) for e in ("cached", "reference")]
    assert [o.data for o in sampled[0]] == [o.data for o in sampled[1]]
    assert len(set(b"".join(o.data for o in sampled[0]))) > 30
    out = generate(model, prompts, "txt", seed=5, dtype="bf16", max_bytes=20, min_bytes=20)
    assert [len(o.data) for o in out] == [20] * 4


def test_train_eval_generate_commands_on_cuda(tmp_path, capsys):
    """The CLI trains on the GPU (bf16 autocast), and its checkpoint scores the same on the CPU."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three"]
    data = tmp_path / "d"
    data.mkdir()
    for i in range(32):
        (data / f"f{i:03d}.txt").write_text(
            " ".join(rng.choice(words, size=rng.integers(8, 30))) + "\n"
        )
    run = tmp_path / "run"
    args = [
        "train",
        str(data),
        "--out",
        str(run),
        "--device",
        "cuda",
        "--dtype",
        "bf16",
        "--steps",
        "120",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--save-every",
        "120",
        "--no-progress",
        "--patch-size",
        "4",
        "--max-patches",
        "32",
        "--hidden-size",
        "32",
        "--patch-layers",
        "2",
        "--byte-layers",
        "1",
        "--heads",
        "2",
    ]
    assert main(args) == 0
    capsys.readouterr()
    scores = {}
    for device in ("cuda", "cpu"):
        assert main(["eval", str(run), str(data), "--device", device, "--json"]) == 0
        scores[device] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bpb"]
    assert scores["cuda"] < 2.5, scores
    assert abs(scores["cuda"] - scores["cpu"]) < 1e-3, scores
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                str(run),
                "--ext",
                ".txt",
                "-n",
                "2",
                "--out",
                str(out),
                "--max-bytes",
                "40",
                "--seed",
                "1",
                "--device",
                "cuda",
            ]
        )
        == 0
    )
    files = sorted(out.iterdir())
    assert len(files) == 2 and all(0 < f.stat().st_size <= 40 for f in files)
    assert next(load(run).parameters()).device.type == "cpu"


def test_bench_reports_cuda_memory(capsys):
    assert (
        main(
            [
                "bench",
                "train",
                "--device",
                "cuda",
                "--config",
                "small",
                "--batch-size",
                "2",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["device"].startswith("cuda") and r["cuda_peak_mb"] > 100 and 0 < r["mfu"] < 1


def test_saved_on_cuda_loads_on_cpu(tmp_path, tiny_config):
    model = random_bgpt(tiny_config).to(CUDA)
    save_pretrained(model, tmp_path / "m")
    back = load(tmp_path / "m")
    for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b)

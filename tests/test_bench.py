import json

import pytest

from bgpt.bench import flops_per_byte
from bgpt.cli import main
from bgpt.config import BGPTConfig


def test_flops_per_byte_by_hand():
    c = BGPTConfig(
        patch_size=4, max_patches=8, hidden_size=64, patch_layers=2, byte_layers=1, heads=1
    )
    block = 12 * 64 * 64
    patch = 2 * (block + 64 * 9)  # attention over the mean causal prefix (L+1)/2, two matmuls
    byte = 1 * (block + 64 * 5) + 257 * 64
    assert flops_per_byte(c, train=False) == 2 * (patch / 4 + byte)
    assert flops_per_byte(c, train=True) == 3 * flops_per_byte(c, train=False)


def test_bench_cli_json(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "patch_size": 4,
                "max_patches": 8,
                "hidden_size": 32,
                "patch_layers": 1,
                "byte_layers": 1,
                "heads": 1,
            }
        )
    )
    for what in ("train", "eval", "generate"):
        assert (
            main(
                [
                    "bench",
                    what,
                    "--config",
                    str(cfg),
                    "--steps",
                    "1",
                    "--warmup",
                    "0",
                    "--batch-size",
                    "2",
                    "--nbytes",
                    "16",
                    "--dtype",
                    "fp32",
                    "--json",
                ]
            )
            == 0
        )
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert r["bytes_per_s"] > 0 and r["peak_rss_mb"] > 0 and 0 < r["mfu"] < 1, r
    assert main(["bench", "data", "--nbytes", "32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["instances_per_s"] > 0


FAULTS = """
import resource, sys, torch
from bgpt.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # on, and idempotent
for _ in range(8):  # warm-up: the first few allocations fault their pages in either way
    torch.ones(64 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.ones(64 << 20)  # 256 MB of float32 (65,536 pages of 4 KiB), allocated, touched, freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


@pytest.mark.machine
def test_freed_memory_is_reused_without_page_faults():
    """keep_freed_memory: large tensors allocated one after another reuse the freed pages.
    By default glibc unmaps blocks over 32 MB on free and each new one faults its pages in."""
    import platform
    import subprocess
    import sys

    import pytest

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")

    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout)

    default, kept = faults("default"), faults("keep")
    assert default > 8 * 60_000  # every allocation faulted all of its pages in
    # after the warm-up they reuse their pages: at most a couple of the 8 allocations fault
    # (the kernel may still reclaim a block under memory pressure from other processes)
    assert kept < default / 3

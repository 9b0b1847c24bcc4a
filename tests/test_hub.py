"""hf:// model paths through huggingface_hub's real code, on a local cache the test builds in
the hub's own layout (no network here): offline loading, revisions, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bgpt.checkpoint import to_reference_state_dict
from bgpt.config import BGPTConfig
from bgpt.hub import parse, published_task
from bgpt.model import BGPT

pytest.importorskip("huggingface_hub")
ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_home(tmp_path) -> Path:
    """HF_HOME with sander-wood/bgpt's weights-cpu.pth cached at `main` (a tiny model)."""
    torch.manual_seed(0)
    model = BGPT(
        BGPTConfig(patch_size=16, max_patches=8, hidden_size=64, patch_layers=1, byte_layers=1)
    )
    repo = tmp_path / "hf" / "hub" / "models--sander-wood--bgpt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    torch.save({"model": to_reference_state_dict(model), "epoch": 3}, snap / "weights-cpu.pth")
    return tmp_path / "hf"


def bgpt_cli(args: list[str], hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "bgpt", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_hub_path_loads_from_the_cache_offline(hf_home):
    r = bgpt_cli(["info", "hf://sander-wood/bgpt/weights-cpu.pth", "--json"], hf_home)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["config"]["hidden_size"] == 64 and info["kind"] == "generative"
    assert info["published_task"].startswith("CPU states")
    r = bgpt_cli(["info", f"hf://sander-wood/bgpt/weights-cpu.pth@{COMMIT}", "--json"], hf_home)
    assert r.returncode == 0, r.stderr


def test_hub_path_not_cached_offline_is_one_line(hf_home):
    r = bgpt_cli(["info", "hf://sander-wood/bgpt/weights-text.pth"], hf_home)
    lines = r.stderr.strip().splitlines()
    assert (
        r.returncode == 2 and len(lines) == 1 and "not in the local Hugging Face cache" in lines[0]
    )
    r = bgpt_cli(["info", "hf://sander-wood/bgpt"], hf_home)
    assert r.returncode == 2 and "hf://OWNER/REPO/FILE" in r.stderr


def test_parse_and_published_names():
    assert parse("hf://sander-wood/bgpt/weights-cpu.pth") == (
        "sander-wood/bgpt",
        "weights-cpu.pth",
        None,
    )
    assert parse("hf://a/b/sub/w.pth@v1.0") == ("a/b", "sub/w.pth", "v1.0")
    assert published_task("hf://sander-wood/bgpt/weights-audio.pth@main").startswith("audio")
    assert published_task("/data/mine.pth") is None

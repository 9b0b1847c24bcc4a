"""`bgpt inspect`: the bits it shows are `bgpt eval`'s, the page is self-contained and complete,
and a real browser renders it."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from bgpt.checkpoint import save_pretrained
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.data import StreamDataset
from bgpt.evaluate import evaluate_generative
from bgpt.inspect import TOP, analyse, analyse_pair, render, surprising_spans

from .conftest import random_bgpt

pytestmark = pytest.mark.usefixtures("one_thread")


class OneFile:
    def __init__(self, name: str, data: bytes):
        self.names, self.data = [name], data

    def __len__(self):
        return 1

    def read(self, i):
        return self.data

    def size(self, i):
        return len(self.data)


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_bits_are_the_evaluation_bits(byte_context):
    """Over a file longer than the context (several windows), the page's bits per byte equal
    `bgpt eval`'s, and each position's top-5 holds the most likely symbols in order."""
    config = BGPTConfig(
        patch_size=4,
        max_patches=6,
        hidden_size=32,
        heads=2,
        patch_layers=1,
        byte_layers=1,
        byte_context=byte_context,
    )
    model = random_bgpt(config, 1, 0.3)
    data = np.random.default_rng(0).integers(0, 256, 75, dtype=np.uint8).tobytes()
    part = analyse(model, data, "bin")
    r = evaluate_generative(model, StreamDataset(OneFile("x.bin", data), 4, 6), batch_size=4)
    assert len(part.bits) == len(data) + 1 and part.bpb == pytest.approx(r["bpb"], rel=1e-6)
    assert part.top.shape == (len(data) + 1, TOP) and (np.diff(part.top_p, axis=1) <= 0).all()
    surprise = -np.log2(np.take_along_axis(part.top_p, np.zeros((len(part.bits), 1), int), 1)[:, 0])
    assert (part.bits >= surprise - 1e-6).all()  # no byte is likelier than the top choice


def test_pair_parts_and_spans():
    config = BGPTConfig(
        patch_size=4, max_patches=16, hidden_size=32, heads=2, patch_layers=1, byte_layers=1
    )
    model = random_bgpt(config, 2, 0.3)
    x, y = b"X:1\nK:C\nCDEF|", b"MThd\x00\x00\x00\x06"
    parts = analyse_pair(model, x, "abc", y, "mid")
    assert [p.data for p in parts] == [x, y] and [len(p.bits) for p in parts] == [
        len(x) + 1,
        len(y) + 1,
    ]
    bits = np.array([0, 0, 5, 5, 0, 0, 0, 9, 1, 0.0])
    assert surprising_spans(bits, width=2, count=3) == [
        (2, 4, 10.0),
        (7, 9, 10.0),
        (0, 2, 0.0),
    ]  # no overlaps


def test_cli_page_has_every_byte_and_no_network(tmp_path, capsys):
    torch.manual_seed(0)
    config = BGPTConfig(
        patch_size=16, max_patches=80, hidden_size=32, heads=2, patch_layers=1, byte_layers=1
    )
    save_pretrained(random_bgpt(config, 0, 0.1), tmp_path / "m")
    (tmp_path / "p.asm").write_text("LOADI 7\nINC\nPOP A\nHLT\n")
    assert main(["cpu", "assemble", str(tmp_path / "p.asm"), "--out", str(tmp_path / "p.bin")]) == 0
    (tmp_path / "t.txt").write_bytes(b'<b>tags & quotes " stay text</b>\n')
    page = tmp_path / "page.html"
    assert (
        main(
            [
                "inspect",
                str(tmp_path / "m"),
                str(tmp_path / "p.bin"),
                str(tmp_path / "t.txt"),
                "--html",
                str(page),
            ]
        )
        == 0
    )
    text = page.read_text()
    n = (tmp_path / "p.bin").stat().st_size + (tmp_path / "t.txt").stat().st_size
    assert (
        len(re.findall(r'<span class="b"', text)) == n + 2
    )  # every byte and each file's end symbol
    assert (
        "&lt;" in text and "&amp;" in text and "<b>tags" not in text
    )  # the file's bytes never become markup
    assert not re.search(r"(src|href)=\"?https?:", text)  # nothing fetched from anywhere
    assert "CPU states" in text and text.count("<tr><td>") >= 5 + 10  # 5 states + the spans tables
    assert main(["inspect", str(tmp_path / "m"), str(tmp_path / "t.txt"), "--html", str(page)]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
def test_page_renders_in_a_real_browser(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (make test installs Debian's chromium)")
    config = BGPTConfig(
        patch_size=4, max_patches=16, hidden_size=32, heads=2, patch_layers=1, byte_layers=1
    )
    part = analyse(random_bgpt(config, 3, 0.3), b"hello, browser: " * 8, "txt", title="hello.txt")
    page = tmp_path / "page.html"
    page.write_text(render("test page", [part]))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (800, 1000)
    colours = {tuple(c) for c in img.reshape(-1, 3)[::97]}
    assert len(colours) > 20  # text and coloured cells, not a blank page
    reds = ((img[..., 0] > 200) & (img[..., 1] < 200) & (img[..., 2] < 200)).sum()
    assert reds > 500  # the byte cells are painted by their bits

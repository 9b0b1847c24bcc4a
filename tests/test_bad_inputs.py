"""Every command against bad input, as a hostile user would try it (docs/reliability.md).

Each case must end with a non-zero exit, exactly one line on stderr that names the problem,
no traceback, and no file created, changed or removed anywhere in the workspace (the whole
folder is snapshotted before and after: sizes, modes, contents, symlinks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bgpt.checkpoint import save_pretrained
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.model import BGPT, BGPTClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_UTF8 = os.fsdecode(b"caf\xe9_1.txt")  # a Latin-1 file name: not valid UTF-8


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A workspace with good and bad material for every command."""
    w = tmp_path_factory.mktemp("template")
    torch.manual_seed(0)
    gen = BGPT(
        BGPTConfig(
            patch_size=16, max_patches=80, hidden_size=32, patch_layers=1, byte_layers=1, heads=2
        )
    )
    save_pretrained(gen.eval(), w / "model")
    clf = BGPTClassifier(
        BGPTConfig(
            patch_size=16,
            max_patches=8,
            hidden_size=32,
            patch_layers=1,
            byte_layers=0,
            heads=2,
            num_classes=2,
            labels=["a", "b"],
        )
    )
    save_pretrained(clf.eval(), w / "clf")
    nan = BGPT(gen.config)
    with torch.no_grad():
        for p in nan.parameters():
            p.fill_(float("nan"))
    save_pretrained(nan, w / "nan_model")
    data = w / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        (data / f"{'ab'[i % 2]}_{i}.txt").write_bytes(
            rng.integers(97, 123, 50 + 7 * i, dtype=np.uint8).tobytes()
        )
    (w / "empty").mkdir()
    (w / "file.txt").write_text("hello\n")
    (w / "junk.pth").write_bytes(b"not a checkpoint at all")
    torch.save(
        {"model": {"x": torch.zeros(1)}, "obj": argparse.Namespace(a=1)}, w / "foreign.pth"
    )  # not weights-only
    (w / "prog.asm").write_text("LOADI 7\nINC\nPOP A\nHLT\n")
    (w / "bad.asm").write_text("FLY A B\n")
    (w / "tune.abc").write_text("X:1\nT:t\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n")
    (w / "c.json").write_text(json.dumps({"hidden_size": 32, "num_classes": "x"}))
    (w / "c2.json").write_text("{not json")
    (w / "other").mkdir()
    (w / "other" / "z_1.txt").write_text("zzz")
    assert main(["pack", str(data), "--out", str(w / "packed")]) == 0
    assert (
        main(
            ["compress", str(w / "model"), str(w / "file.txt"), "-o", str(w / "file.txt.bgz"), "-q"]
        )
        == 0
    )
    blob = (w / "file.txt.bgz").read_bytes()
    (w / "cut.bgz").write_bytes(blob[:-3])
    (w / "flipped.bgz").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    # damaged packed sets: a shard named outside the folder, negative offsets, a bad index
    (w / "secret.bin").write_bytes(b"secret" * 10)
    for name, edit in (
        ("pack-escape", "shards"),
        ("pack-negative", "index"),
        ("pack-badindex", "badindex"),
        ("pack-json", "json"),
    ):
        shutil.copytree(w / "packed", w / name)
        meta = json.loads((w / name / "pack.json").read_text())
        if edit == "shards":
            meta["shards"] = ["../secret.bin"]
        elif edit == "json":
            meta = {"format": "bgpt-pack", "version": 1, "files": "x", "shards": 3}
        (w / name / "pack.json").write_text(json.dumps(meta))
        if edit == "index":
            index = np.load(w / name / "index.npy")
            index[1, 1] = -5
            np.save(w / name / "index.npy", index)
        elif edit == "badindex":
            np.save(w / name / "index.npy", np.zeros((6, 2), np.float32))
    # a run whose resume state is damaged, and one whose config is broken
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(w / "trained"),
                "--hidden-size",
                "32",
                "--patch-layers",
                "1",
                "--byte-layers",
                "1",
                "--max-patches",
                "8",
                "--steps",
                "2",
                "--no-progress",
                "--dtype",
                "fp32",
            ]
        )
        == 0
    )
    shutil.copytree(w / "trained", w / "run-cut", symlinks=True)
    trainer = w / "run-cut" / "latest" / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[:100])
    shutil.copytree(w / "trained", w / "run-config", symlinks=True)
    (w / "run-config" / "config.json").write_text('{"train": {"lr": "fast"}}')
    shutil.copytree(w / "trained", w / "run-foreign", symlinks=True)
    torch.save({"hello": 1}, w / "run-foreign" / "latest" / "trainer.pt")
    # an output name that is a symlink to a file outside the output folder
    (w / "gen").mkdir()
    (w / "gen" / "sample-0000.txt").symlink_to(w / "file.txt")
    (w / "gen2").mkdir()
    (w / "gen2" / "sample-0000.txt").write_text("mine")
    return w


@pytest.fixture
def ws(template, tmp_path) -> Path:
    """A fresh copy of the template for each case: one case's damage never hides another's."""
    w = tmp_path / "ws"
    shutil.copytree(template, w, symlinks=True)
    return w


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mode)
            else:
                out[str(p)] = (
                    "file",
                    st.st_mode,
                    st.st_size,
                    hashlib.sha1(p.read_bytes()).hexdigest(),
                )
    return out


# (id, argv with {w} for the workspace, what the error line must say)
CASES = [
    # models and checkpoints
    ("info-missing", ["info", "{w}/nope"], "no such"),
    ("info-junk-pth", ["info", "{w}/junk.pth"], "junk.pth"),
    ("info-foreign-pth", ["info", "{w}/foreign.pth"], "weights-only"),
    ("info-junk-message", ["info", "{w}/junk.pth"], "not a torch.save archive"),
    ("info-empty-folder", ["info", "{w}/empty"], "empty"),
    ("import-junk", ["import", "{w}/junk.pth", "--out", "{w}/imported"], "junk.pth"),
    ("import-over-model", ["import", "{w}/junk.pth", "--out", "{w}/model"], "--force"),
    # training settings
    ("train-no-folder", ["train", "{w}/nope", "--out", "{w}/run"], "no such"),
    ("train-empty", ["train", "{w}/empty", "--out", "{w}/run"], "no files"),
    ("train-minutes-inf", ["train", "{w}/data", "--out", "{w}/run", "--minutes", "inf"], "minutes"),
    ("train-epochs-inf", ["train", "{w}/data", "--out", "{w}/run", "--epochs", "inf"], "epochs"),
    ("train-lr-nan", ["train", "{w}/data", "--out", "{w}/run", "--lr", "nan"], "lr"),
    (
        "train-wd-inf",
        ["train", "{w}/data", "--out", "{w}/run", "--weight-decay", "inf"],
        "weight-decay",
    ),
    (
        "train-wd-huge",
        ["train", "{w}/data", "--out", "{w}/r2", "--weight-decay", "1e9"],
        "weight_decay",
    ),
    (
        "train-minutes-huge",
        ["train", "{w}/data", "--out", "{w}/r2", "--minutes", "1e300"],
        "minutes",
    ),
    (
        "train-batch-huge",
        ["train", "{w}/data", "--out", "{w}/run", "--batch-size", "10000000000"],
        "batch_size",
    ),
    ("train-steps-negative", ["train", "{w}/data", "--out", "{w}/run", "--steps", "-3"], "steps"),
    ("train-dropout-2", ["train", "{w}/data", "--out", "{w}/run", "--dropout", "2"], "dropout"),
    (
        "train-hidden-0",
        ["train", "{w}/data", "--out", "{w}/run", "--hidden-size", "0"],
        "hidden_size",
    ),
    (
        "train-config-type",
        ["train", "{w}/data", "--out", "{w}/run", "--config", "{w}/c.json"],
        "num_classes",
    ),
    (
        "train-config-json",
        ["train", "{w}/data", "--out", "{w}/run", "--config", "{w}/c2.json"],
        "c2.json",
    ),
    (
        "train-config-ext",
        ["train", "{w}/data", "--out", "{w}/run", "--config", "{w}/file.txt"],
        "file.txt",
    ),
    (
        "train-init-junk",
        ["train", "{w}/data", "--out", "{w}/run", "--init", "{w}/junk.pth"],
        "junk.pth",
    ),
    (
        "train-conversion-bad",
        ["train", "{w}/data", "--out", "{w}/run", "--conversion", "abc"],
        "conversion",
    ),
    (
        "train-conversion-nopairs",
        ["train", "{w}/data", "--out", "{w}/run", "--conversion", "abc->mid"],
        "pairs",
    ),
    ("train-resume-nothing", ["train", "{w}/data", "--out", "{w}/r2", "--resume"], "resume"),
    ("train-out-is-file", ["train", "{w}/data", "--out", "{w}/file.txt"], "file.txt"),
    ("train-out-is-data", ["train", "{w}/data", "--out", "{w}/data"], "data"),
    (
        "train-unknown-flag",
        ["train", "{w}/data", "--out", "{w}/run", "--hidden", "3"],
        "unrecognized",
    ),
    ("train-int-not-number", ["train", "{w}/data", "--out", "{w}/run", "--steps", "many"], "steps"),
    (
        "classifier-no-labels",
        ["train-classifier", "{w}/packed", "--out", "{w}/run", "--init", "{w}/junk.pth"],
        "junk.pth",
    ),
    # evaluation and inference
    ("eval-no-folder", ["eval", "{w}/model", "{w}/nope"], "no such"),
    ("eval-empty", ["eval", "{w}/model", "{w}/empty"], "no files"),
    ("eval-batch-0", ["eval", "{w}/model", "{w}/data", "--batch-size", "0"], "batch-size"),
    ("eval-clf-wrong-labels", ["eval", "{w}/clf", "{w}/other"], "label"),
    ("eval-pack-escape", ["eval", "{w}/model", "{w}/pack-escape"], "not a file of this folder"),
    ("eval-pack-negative", ["eval", "{w}/model", "{w}/pack-negative"], "negative"),
    ("eval-pack-badindex", ["eval", "{w}/model", "{w}/pack-badindex"], "index"),
    ("eval-pack-json", ["eval", "{w}/model", "{w}/pack-json"], "packed set"),
    (
        "train-pack-escape",
        ["train", "{w}/pack-escape", "--out", "{w}/r2"],
        "not a file of this folder",
    ),
    (
        "train-resume-cut",
        ["train", "{w}/data", "--out", "{w}/run-cut", "--resume"],
        "trainer state",
    ),
    (
        "train-resume-foreign",
        ["train", "{w}/data", "--out", "{w}/run-foreign", "--resume"],
        "trainer state",
    ),
    (
        "train-resume-config",
        ["train", "{w}/data", "--out", "{w}/run-config", "--resume"],
        "config.json",
    ),
    ("train-over-run", ["train", "{w}/data", "--out", "{w}/trained"], "already holds a run"),
    (
        "import-over-run-folder",
        ["import", "{w}/foreign.pth", "--out", "{w}/trained"],
        "holds other files",
    ),
    ("decompress-cut", ["decompress", "{w}/model", "{w}/cut.bgz", "-o", "{w}/o.txt"], "truncated"),
    (
        "decompress-flipped",
        ["decompress", "{w}/model", "{w}/flipped.bgz", "-o", "{w}/o.txt", "-q"],
        "corrupt",
    ),
    (
        "generate-symlink-out",
        ["generate", "{w}/model", "--ext", "txt", "--out", "{w}/gen", "-f", "-q"],
        "symbolic link",
    ),
    (
        "generate-exists",
        ["generate", "{w}/model", "--ext", "txt", "--out", "{w}/gen2", "-q"],
        "--force",
    ),
    ("eval-dtype", ["eval", "{w}/model", "{w}/data", "--dtype", "fp8"], "fp8"),
    ("classify-generative", ["classify", "{w}/model", "{w}/file.txt"], "classifier"),
    ("classify-missing-file", ["classify", "{w}/clf", "{w}/nope.txt"], "nope.txt"),
    ("generate-no-ext", ["generate", "{w}/model", "--out", "{w}/gen"], "ext"),
    (
        "generate-n-huge",
        ["generate", "{w}/model", "--ext", "txt", "-n", "100000000", "--out", "{w}/gen"],
        "num-samples",
    ),
    (
        "generate-n-0",
        ["generate", "{w}/model", "--ext", "txt", "-n", "0", "--out", "{w}/gen"],
        "num-samples",
    ),
    (
        "generate-top-p-nan",
        ["generate", "{w}/model", "--ext", "txt", "--top-p", "nan", "--out", "{w}/gen"],
        "top",
    ),
    (
        "generate-temp-neg",
        ["generate", "{w}/model", "--ext", "txt", "--temperature", "-1", "--out", "{w}/gen"],
        "temperature",
    ),
    (
        "generate-temp-inf",
        ["generate", "{w}/model", "--ext", "txt", "--temperature", "inf", "--out", "{w}/gen"],
        "temperature",
    ),
    (
        "generate-classifier",
        ["generate", "{w}/clf", "--ext", "txt", "--out", "{w}/gen"],
        "classifier",
    ),
    (
        "generate-nan-model",
        ["generate", "{w}/nan_model", "--ext", "txt", "--out", "{w}/gen", "-q"],
        "not finite",
    ),
    ("info-nan-model", ["info", "{w}/nan_model"], "not finite"),
    (
        "generate-prompt-missing",
        ["generate", "{w}/model", "--ext", "txt", "--prompt", "{w}/nope", "--out", "{w}/gen"],
        "nope",
    ),
    (
        "generate-out-is-file",
        ["generate", "{w}/model", "--ext", "txt", "--out", "{w}/file.txt", "-q"],
        "file.txt",
    ),
    (
        "convert-missing-input",
        ["convert", "{w}/model", "{w}/nope.abc", "--to", "mid", "--out", "{w}/conv"],
        "nope.abc",
    ),
    (
        "convert-classifier",
        ["convert", "{w}/clf", "{w}/tune.abc", "--to", "mid", "--out", "{w}/conv"],
        "classifier",
    ),
    (
        "convert-out-is-input-folder",
        ["convert", "{w}/model", "{w}/file.txt", "--to", "txt", "--out", "{w}", "-q"],
        "file.txt",
    ),
    # compression
    ("compress-missing", ["compress", "{w}/model", "{w}/nope.txt"], "nope.txt"),
    (
        "compress-exists",
        ["compress", "{w}/model", "{w}/file.txt", "-o", "{w}/file.txt.bgz"],
        "exists",
    ),
    (
        "compress-onto-input",
        ["compress", "{w}/model", "{w}/file.txt", "-o", "{w}/file.txt", "-f"],
        "file.txt",
    ),
    (
        "compress-nan-model",
        ["compress", "{w}/nan_model", "{w}/file.txt", "-o", "{w}/n.bgz", "-q"],
        "not finite",
    ),
    (
        "compress-classifier",
        ["compress", "{w}/clf", "{w}/file.txt", "-o", "{w}/c.bgz"],
        "classifier",
    ),
    (
        "decompress-not-bgz",
        ["decompress", "{w}/model", "{w}/file.txt", "-o", "{w}/out.txt"],
        "file.txt",
    ),
    (
        "decompress-exists",
        ["decompress", "{w}/model", "{w}/file.txt.bgz", "-o", "{w}/file.txt"],
        "exists",
    ),
    (
        "decompress-other-model",
        ["decompress", "{w}/clf", "{w}/file.txt.bgz", "-o", "{w}/o.txt"],
        "classifier",
    ),
    # packs
    ("pack-empty", ["pack", "{w}/empty", "--out", "{w}/p2"], "no files"),
    ("pack-into-input", ["pack", "{w}/data", "--out", "{w}/data"], "data"),
    ("pack-into-input-child", ["pack", "{w}/data", "--out", "{w}/data/p"], "data"),
    ("pack-over-existing", ["pack", "{w}/data", "--out", "{w}/packed"], "exists"),
    # CPU task
    (
        "cpu-assemble-over-source",
        ["cpu", "assemble", "{w}/prog.asm", "--out", "{w}/prog.asm"],
        "prog.asm",
    ),
    ("cpu-assemble-bad", ["cpu", "assemble", "{w}/bad.asm", "--out", "{w}/p.bin"], "FLY"),
    (
        "cpu-assemble-state",
        ["cpu", "assemble", "{w}/prog.asm", "--out", "{w}/p.bin", "--state", "Q=1"],
        "Q",
    ),
    ("cpu-translate-short", ["cpu", "translate", "{w}/file.txt"], "file.txt"),
    ("cpu-run-wrong-ext", ["cpu", "run", "{w}/model", "{w}/file.txt"], "file.txt"),
    ("cpu-generate-len", ["cpu", "generate", "--out", "{w}/cpu", "--max-len", "999"], "max"),
    ("cpu-generate-neg", ["cpu", "generate", "--out", "{w}/cpu", "--train", "-5"], "train"),
    # media and music
    (
        "media-audio-offset-nan",
        ["media", "audio", "{w}/file.txt", "--out", "{w}/au", "--offset", "nan"],
        "offset",
    ),
    ("media-image-in-place", ["media", "image", "{w}/data", "--out", "{w}/data"], "data"),
    ("music-check-timeout", ["music", "check", "{w}/data", "--timeout", "-1"], "timeout"),
    ("music-check-tolerance", ["music", "check", "{w}/data", "--tolerance", "nan"], "tolerance"),
    ("demo-minutes-nan", ["demo", "--out", "{w}/demo", "--minutes", "nan"], "minutes"),
    ("demo-out-foreign", ["demo", "--out", "{w}/data"], "data"),
    ("bench-steps-0", ["bench", "train", "--steps", "0"], "steps"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_touches_nothing(ws, case, capsys):
    _, argv, words = case
    argv = [a.replace("{w}", str(ws)) for a in argv]
    before = snapshot(ws)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code not in (0, None), f"exit {code}: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert words.lower() in lines[0].lower(), lines[0]
    assert snapshot(ws) == before


def test_file_names_that_are_not_utf8_work_in_every_command(tmp_path, capsys):
    """Not bad input: a Latin-1 file name trains, evaluates, packs, compresses and classifies,
    and is printed escaped (the audit saw tracebacks in train, eval, pack and compress)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / NOT_UTF8).write_bytes(b"coffee " * 20)
    (d / "tea_2.txt").write_bytes(b"tea " * 20)
    tiny = [
        "--hidden-size",
        "32",
        "--patch-layers",
        "1",
        "--max-patches",
        "16",
        "--steps",
        "2",
        "--no-progress",
        "--dtype",
        "fp32",
        "--eval",
        str(d),
    ]
    assert main(["pack", str(d), "--out", str(tmp_path / "p")]) == 0
    assert (
        main(
            [
                "train",
                str(tmp_path / "p"),
                "--out",
                str(tmp_path / "run"),
                "--byte-layers",
                "1",
                *tiny,
            ]
        )
        == 0
    )
    assert main(["eval", str(tmp_path / "run"), str(d)]) == 0
    assert (
        main(
            [
                "compress",
                str(tmp_path / "run"),
                str(d / NOT_UTF8),
                "-o",
                str(tmp_path / "c.bgz"),
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "decompress",
                str(tmp_path / "run"),
                str(tmp_path / "c.bgz"),
                "-o",
                str(tmp_path / "back"),
                "-q",
            ]
        )
        == 0
    )
    assert (tmp_path / "back").read_bytes() == (d / NOT_UTF8).read_bytes()
    assert main(["train-classifier", str(d), "--out", str(tmp_path / "clf"), *tiny]) == 0
    assert main(["classify", str(tmp_path / "clf"), str(d / NOT_UTF8)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "caf\\udce9" in out.out

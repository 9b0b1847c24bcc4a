"""What docs/reliability.md promises about run folders: a writer killed at any step of a
checkpoint save leaves a run that loads and resumes to the same weights; two writers never
share a run folder; a run that goes NaN stops before its weights do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bgpt
from bgpt.cli import main
from bgpt.errors import BGPTError
from bgpt.files import FolderLock
from bgpt.train import TrainConfig, run_training

from .test_train import TINY, make_text_folder

ROOT = Path(__file__).resolve().parents[1]

# Runs `bgpt` with every file-system step of one checkpoint save counted (the renames, links,
# syncs and removals that make a save), and the process killed (os._exit, as SIGKILL would:
# no cleanup, no flush) at step KILL_AT of save number SAVE.
CRASHER = """
import os, shutil, sys
import bgpt.train as T
from bgpt.cli import main

save_no, kill_at = int(sys.argv[1]), int(sys.argv[2])
state = {"save": 0, "ops": 0}

def counted(f):
    def g(*a, **kw):
        if state["save"] == save_no:
            state["ops"] += 1
            if state["ops"] == kill_at:
                os._exit(137)
        return f(*a, **kw)
    return g

for mod, name in ((os, "replace"), (os, "symlink"), (os, "fsync"), (shutil, "rmtree")):
    setattr(mod, name, counted(getattr(mod, name)))
save = T.save_checkpoint

def one_save(*a, **kw):
    state["save"] += 1
    return save(*a, **kw)

T.save_checkpoint = one_save
code = main(sys.argv[3:])
print("ops", state["ops"], file=sys.stderr)
sys.exit(code)
"""


def train_args(data: Path, run: Path, steps: int) -> list[str]:
    return [
        "train",
        str(data),
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--save-every",
        "2",
        "--batch-size",
        "4",
        "--dtype",
        "fp32",
        "--no-progress",
        "--hidden-size",
        "32",
        "--patch-layers",
        "1",
        "--byte-layers",
        "1",
        "--max-patches",
        "32",
        "--patch-size",
        "4",
        "--log-every",
        "1",
        "--eval-max-files",
        "2",
    ]


def crash(save_no: int, kill_at: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", CRASHER, str(save_no), str(kill_at), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The weights behind both links of a run folder."""
    return {link: bgpt.load(run / link).state_dict() for link in ("latest", "best")}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[link][k], b[link][k]) for link in a for k in a[link])


@pytest.mark.slow
def test_killed_at_every_step_of_a_save_resumes_to_the_same_weights(tmp_path):
    data = make_text_folder(tmp_path / "d", 12)
    ref = tmp_path / "ref"
    whole = crash(99, 1, train_args(data, ref, 4))  # no kill: count the steps of one save
    assert whole.returncode == 0, whole.stderr
    expected = weights(ref)
    run = tmp_path / "run"
    probe = crash(2, 10**6, train_args(data, run, 4))  # the second save (step 4), never killed
    steps = int(probe.stderr.split("ops")[-1])
    assert steps >= 8  # rmtree, weights and config (sync, rename), trainer state, rename, links
    for k in range(1, steps + 1):
        run = tmp_path / f"run{k}"
        killed = crash(2, k, train_args(data, run, 4))
        assert killed.returncode == 137, killed.stderr
        step = int(os.readlink(run / "latest").split("-")[1])  # step 2 or 4, never a half-save
        assert step in (2, 4)
        bgpt.load(run)  # loads, whatever step the writer died at
        resumed = crash(
            99, 1, train_args(data, run, 4) + ["--resume"]
        )  # never killed: one thread, as the rest
        assert resumed.returncode == 0, resumed.stderr
        assert same(weights(run), expected), f"killed at step {k}"


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken(tmp_path, capsys):
    data = make_text_folder(tmp_path / "d", 6)
    run = tmp_path / "run"
    args = train_args(data, run, 2)
    with FolderLock(run, "run folder"):  # another writer holds the folder
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"PID {os.getpid()}" in err and "another process" in err
    assert not (run / "latest").exists()
    # a writer killed while holding the lock: the kernel drops it, the next run takes it over
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from bgpt.files import FolderLock; "
            f"FolderLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BGPTError, match=f"PID {holder.pid}"):
        FolderLock(run).acquire()
    holder.kill()
    holder.wait()
    assert main(args) == 0 and (run / "latest").exists()


def test_a_run_that_goes_nan_stops_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch):
    from bgpt import train as T

    data = make_text_folder(tmp_path / "d", 8)
    real = T.GenerativeTask.loss_sum
    calls = {"n": 0}

    def poisoned(self, model, batch, labels):
        calls["n"] += 1
        loss, stats = real(self, model, batch, labels)
        return (loss * float("nan") if calls["n"] > 2 else loss), stats

    monkeypatch.setattr(T.GenerativeTask, "loss_sum", poisoned)
    cfg = TrainConfig(
        data=[str(data)],
        out=str(tmp_path / "run"),
        model_overrides=TINY,
        steps=6,
        batch_size=4,
        save_every=2,
        seed=1,
        dtype="fp32",
        progress=False,
        eval_max_files=2,
    )
    with pytest.raises(BGPTError, match="diverged at step 3.*last good checkpoint"):
        run_training(cfg)
    assert os.readlink(tmp_path / "run" / "latest") == "ckpt-00000002"
    model = bgpt.load(tmp_path / "run")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())

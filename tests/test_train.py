import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import bgpt
from bgpt.cli import main
from bgpt.config import BGPTConfig
from bgpt.data import (
    PackedSet,
    PackWriter,
    open_files,
    pair_by_stem,
    parse_conversion,
    split_holdout,
)
from bgpt.errors import BGPTError
from bgpt.train import TrainConfig, items_for_step, lr_at, read_metrics, run_training

TINY = {
    "patch_size": 4,
    "max_patches": 32,
    "hidden_size": 32,
    "patch_layers": 2,
    "byte_layers": 1,
    "heads": 2,
    "dropout": 0.0,
}


def make_text_folder(root: Path, n: int = 24, seed: int = 0) -> Path:
    """Small files with learnable structure: repeated words from a tiny vocabulary."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "one", "two", "three"]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        text = " ".join(rng.choice(words, size=rng.integers(8, 30))) + "\n"
        (root / f"f{i:03d}.txt").write_text(text)
    return root


def cfg(tmp_path: Path, data: Path, **kw) -> TrainConfig:
    base = dict(
        data=[str(data)],
        out=str(tmp_path / "run"),
        model_overrides=TINY,
        steps=20,
        batch_size=4,
        lr=3e-3,
        save_every=10,
        log_every=1,
        seed=1,
        dtype="fp32",
        progress=False,
        eval_max_files=8,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_is_a_pure_function():
    assert lr_at(0, 100, 1.0) == pytest.approx(0.1)  # warm-up: 10 steps
    assert lr_at(9, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(55, 100, 1.0) == pytest.approx(0.1 + 0.9 * 0.5)  # half way
    assert lr_at(100, 100, 1.0) == pytest.approx(0.1)  # ends at min_ratio
    assert lr_at(5, 100, 2.0, warmup_frac=0.0, min_ratio=0.0) == pytest.approx(
        2.0 * 0.5 * (1 + math.cos(math.pi * 0.05))
    )


def test_data_order_is_epochs_of_permutations():
    slots = [it for s in range(5) for it in items_for_step(s, 4, 10, seed=3)]
    assert sorted(i for e, i in slots[:10]) == list(range(10))  # epoch 0 is a permutation
    assert sorted(i for e, i in slots[10:20]) == list(range(10))
    assert [e for e, _ in slots] == [0] * 10 + [1] * 10
    assert items_for_step(2, 4, 10, 3) == slots[8:12]  # a pure function of the step


def test_folder_scan_skips_hidden_and_reports_loops(tmp_path, caplog):
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / ".hidden").write_text("h")
    (root / ".git").mkdir()
    (root / ".git" / "x").write_text("x")
    (root / "sub" / "b.bin").write_bytes(b"\x00")
    os.symlink(root, root / "sub" / "loop")
    (tmp_path / "secret.txt").write_text("not data")
    os.symlink(tmp_path / "secret.txt", root / "sub" / "out.txt")  # a link out of the data folder
    os.symlink(root / "a.txt", root / "sub" / "in.txt")  # a link within it
    with caplog.at_level(logging.WARNING, logger="bgpt"):
        files = open_files([root])
    assert files.names == ["a.txt", "sub/b.bin", "sub/in.txt"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("symlink loop" in m for m in messages) and any(
        "out.txt: a link to a file outside" in m for m in messages
    )


def test_pack_round_trip_and_truncation(tmp_path):
    data = make_text_folder(tmp_path / "d", 10)
    files = open_files([data])
    with PackWriter(tmp_path / "p", shard_bytes=200) as w:
        for i in range(len(files)):
            w.add(files.names[i], files.read(i))
    packed = PackedSet(tmp_path / "p")
    assert len(packed.shards) > 1
    assert packed.names == files.names
    assert all(packed.read(i) == files.read(i) for i in range(len(files)))
    shard = tmp_path / "p" / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(BGPTError, match="truncated"):
        PackedSet(tmp_path / "p")


def test_holdout_split_is_deterministic_and_disjoint(tmp_path):
    files = open_files([make_text_folder(tmp_path / "d", 40)])
    a_train, a_eval = split_holdout(files, 0.2, seed=0)
    b_train, b_eval = split_holdout(files, 0.2, seed=0)
    assert a_eval.names == b_eval.names and a_train.names == b_train.names
    assert not set(a_train.names) & set(a_eval.names)
    assert len(a_train) + len(a_eval) == 40 and len(a_eval) > 0


@pytest.mark.parametrize("n", [3, 8, 200])
def test_holdout_split_keeps_conversion_pairs_together(tmp_path, n):
    """x.abc and x.mid fall on the same side, in large sets (hash) and tiny ones (every k-th)."""
    root = tmp_path / "pairs"
    root.mkdir()
    for i in range(n):
        (root / f"t{i}.abc").write_text("X:1")
        (root / f"t{i}.mid").write_bytes(b"MThd")
    train, held = split_holdout(open_files([root]), 0.1, seed=3)
    stems = {
        side: {name.rsplit(".", 1)[0] for name in fs.names}
        for side, fs in (("train", train), ("held", held))
    }
    assert not stems["train"] & stems["held"] and stems["held"]
    assert len(train) == 2 * len(stems["train"]) and len(held) == 2 * len(stems["held"])


def test_conversion_pairs_by_stem(tmp_path):
    root = tmp_path / "pairs"
    (root / "x").mkdir(parents=True)
    for stem in ("a", "b", "x/c"):
        (root / f"{stem}.abc").write_text(f"X:{stem}")
        (root / f"{stem}.mid").write_bytes(b"MThd" + stem.encode())
    (root / "lonely.abc").write_text("X:1")
    files = open_files([root])
    pairs = pair_by_stem(files, "abc", "mid")
    assert [(files.names[x], files.names[y]) for x, y in pairs] == [
        ("a.abc", "a.mid"),
        ("b.abc", "b.mid"),
        ("x/c.abc", "x/c.mid"),
    ]
    assert parse_conversion("abc&mid") == [("abc", "mid"), ("mid", "abc")]
    with pytest.raises(BGPTError):
        parse_conversion("abc")


def test_training_cuts_bpb(tmp_path):
    """250 steps on a tiny vocabulary of words: BPB from ~8 (untrained) to under 1.5 held out."""
    data = make_text_folder(tmp_path / "d", 40)
    report, _ = run_training(cfg(tmp_path, data, steps=250, save_every=250, log_every=1))
    first = read_metrics(tmp_path / "run")[0]
    assert first["step"] == 1 and first["bpb"] > 7.0  # untrained: ~8 bits per byte
    assert report["eval_bpb"] < 1.5, report
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    model = bgpt.load(tmp_path / "run")
    assert model.config.hidden_size == 32


def test_grad_accumulation_matches_one_batch(tmp_path):
    data = make_text_folder(tmp_path / "d", 16)
    a, _ = run_training(cfg(tmp_path, data, steps=3, out=str(tmp_path / "a")))
    b, _ = run_training(cfg(tmp_path, data, steps=3, grad_accum=2, out=str(tmp_path / "b")))
    la = [r["loss"] for r in read_metrics(tmp_path / "a") if "loss" in r]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b") if "loss" in r]
    assert la == pytest.approx(lb, abs=1e-5)


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    data = make_text_folder(tmp_path / "d", 16)
    run_training(
        cfg(tmp_path, data, out=str(tmp_path / "full"), model_overrides={**TINY, "dropout": 0.1})
    )
    full = [r for r in read_metrics(tmp_path / "full") if "loss" in r]

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dying_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 14:  # after the checkpoint at step 10, before the one at 20
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    c = cfg(tmp_path, data, out=str(tmp_path / "cut"), model_overrides={**TINY, "dropout": 0.1})
    with pytest.raises(KeyboardInterrupt):
        run_training(c)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert os.readlink(tmp_path / "cut" / "latest") == "ckpt-00000010"
    run_training(TrainConfig(out=c.out, resume=True, progress=False))
    resumed = [r for r in read_metrics(tmp_path / "cut") if "loss" in r]
    assert [r["step"] for r in resumed] == list(range(1, 21))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]  # exactly, dropout included


@pytest.mark.slow
def test_classifier_learns_toy_separable_set(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "cls"
    root.mkdir()
    for i in range(30):  # "low" files use bytes 0..63, "high" files 192..255
        (root / f"low_{i}.bin").write_bytes(
            rng.integers(0, 64, rng.integers(10, 60)).astype(np.uint8).tobytes()
        )
        (root / f"high_{i}.bin").write_bytes(
            rng.integers(192, 256, rng.integers(10, 60)).astype(np.uint8).tobytes()
        )
    gen, _ = run_training(cfg(tmp_path, root, steps=5, out=str(tmp_path / "gen")))
    report, _ = run_training(
        cfg(
            tmp_path,
            root,
            task="classify",
            init=str(tmp_path / "gen"),
            steps=60,
            save_every=60,
            out=str(tmp_path / "clf"),
            model_overrides={},
        )
    )
    assert report["eval_accuracy"] >= 0.95
    model = bgpt.load(tmp_path / "clf")
    assert model.config.labels == ["high", "low"]
    (tmp_path / "x.bin").write_bytes(bytes([200, 210, 220] * 10))
    assert main(["classify", str(tmp_path / "clf"), str(tmp_path / "x.bin"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["label"] == "high" and out["probability"] > 0.5
    assert main(["eval", str(tmp_path / "clf"), str(root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["accuracy"] >= 0.95 and np.array(r["confusion"]).sum() == 60


def test_classifier_from_scratch_via_cli(tmp_path, capsys):
    """No --init: a random classifier from --config (the paper's bGPT_random baseline)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cls"
    root.mkdir()
    for i in range(20):
        (root / f"low_{i}.bin").write_bytes(rng.integers(0, 64, 30).astype(np.uint8).tobytes())
        (root / f"high_{i}.bin").write_bytes(rng.integers(192, 256, 30).astype(np.uint8).tobytes())
    args = [
        "train-classifier",
        str(root),
        "--eval",
        str(root),
        "--out",
        str(tmp_path / "clf"),
        "--hidden-size",
        "32",
        "--patch-layers",
        "1",
        "--max-patches",
        "8",
        "--steps",
        "40",
        "--save-every",
        "40",
        "--lr",
        "3e-3",
        "--no-progress",
        "--dtype",
        "fp32",
    ]
    assert main(args) == 0
    model = bgpt.load(tmp_path / "clf")
    assert model.config.hidden_size == 32 and model.config.labels == ["high", "low"]
    assert main(["eval", str(tmp_path / "clf"), str(root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["accuracy"] >= 0.95
    # baselines fitted on the run's own training files (its --data), scored on the same files
    assert r["baselines"]["majority"] == 0.5 and r["baselines"]["ngram_logreg"] == 1.0
    assert main(["eval", str(tmp_path / "clf"), str(root)]) == 0
    out = capsys.readouterr().out
    assert "majority class" in out and "model vs best baseline" in out
    assert main(["eval", str(tmp_path / "clf"), str(root), "--json", "--no-baselines"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["baselines"] is None


def test_eval_json_counts_and_breakdown(tmp_path, capsys):
    data = make_text_folder(tmp_path / "d", 6)
    (data / "long.bin").write_bytes(bytes(range(256)) * 2)  # 512 bytes: several windows
    run_training(cfg(tmp_path, data, steps=2))
    assert main(["eval", str(tmp_path / "run"), str(data), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sizes = sum(p.stat().st_size for p in data.iterdir())
    assert r["files"] == 7 and r["bytes"] == sizes
    assert set(r["by_ext"]) == {"txt", "bin"} and r["by_ext"]["bin"]["bytes"] == 512
    assert 5 < r["bpb"] < 9 and 3 < r["reference_loss"] < 6


def test_eval_single_file_reference_loss(tmp_path, capsys):
    """For one file, reference_loss is the reference model's own loss on it."""
    from bgpt.stream import collate, encode

    data = tmp_path / "d"
    data.mkdir()
    (data / "f000.txt").write_text("alpha beta gamma alpha beta\n" * 3)  # 84 bytes: 23 patches
    run_training(cfg(tmp_path, data, steps=1, eval_fraction=0.5, eval=[str(data)]))
    model = bgpt.load(tmp_path / "run").eval()
    batch = collate([encode((data / "f000.txt").read_bytes(), "txt", 4)])
    with torch.no_grad():
        expect = model(batch.patches, batch.mask).loss.item()
    main(["eval", str(tmp_path / "run"), str(data), "--json"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["reference_loss"] == pytest.approx(expect, abs=1e-5)


def test_conversion_eval_reports_both_parts(tmp_path, capsys):
    root = tmp_path / "pairs"
    root.mkdir()
    for i in range(6):
        (root / f"t{i}.abc").write_text(f"X:{i}\nabcabc\n")
        (root / f"t{i}.mid").write_bytes(bytes([i]) * (10 + i))
    run_training(cfg(tmp_path, root, steps=2, conversion="abc->mid", eval=[str(root)]))
    assert (
        main(["eval", str(tmp_path / "run"), str(root), "--conversion", "abc->mid", "--json"]) == 0
    )
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["bytes_input"] == sum(len(f"X:{i}\nabcabc\n") for i in range(6))
    assert r["bytes_target"] == sum(10 + i for i in range(6))
    assert r["bpb_input"] > 0 and r["bpb_target"] > 0
    assert set(r["by_ext"]) == {"abc->mid"}
    assert r["by_ext"]["abc->mid"]["bpb_target"] == pytest.approx(r["bpb_target"])
    assert (
        main(["eval", str(tmp_path / "run"), str(root), "--conversion", "abc&mid", "--json"]) == 0
    )
    both = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert both["by_ext"]["abc->mid"]["bpb_target"] == pytest.approx(
        r["bpb_target"]
    )  # per direction
    assert both["by_ext"]["mid->abc"]["bytes"] == r["bytes"]


def one_line_error(capsys, argv, match):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_bad_inputs_one_line_errors(tmp_path, capsys):
    data = make_text_folder(tmp_path / "d", 4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.pth").write_bytes(b"junk")
    out = ["--out", str(tmp_path / "run")]
    one_line_error(capsys, ["train", str(tmp_path / "nope")] + out, "no such file or folder")
    one_line_error(capsys, ["train", str(tmp_path / "empty")] + out, "no files")
    one_line_error(
        capsys, ["train", str(tmp_path / "file.txt")] + out, "too few files"
    )  # one file, nothing held out
    one_line_error(capsys, ["train", str(data), "--batch-size", "0"] + out, "absurd setting")
    one_line_error(capsys, ["train", str(data), "--lr", "5"] + out, "absurd setting")
    one_line_error(
        capsys, ["train", str(data), "--hidden-size", "100", "--heads", "3"] + out, "divisible"
    )
    one_line_error(
        capsys,
        ["train", str(data), "--init", str(tmp_path / "bad.pth")] + out,
        "PyTorch checkpoint",
    )
    one_line_error(capsys, ["train", str(data), "--resume"] + out, "no checkpoint to resume")
    one_line_error(
        capsys, ["train", str(data), "--conversion", "abc->mid"] + out, "no .abc/.mid pairs"
    )
    one_line_error(capsys, ["train", str(data), "--conversion", "abc"] + out, "expected 'X->Y'")
    one_line_error(capsys, ["train", str(data), "--config", "giant"] + out, "neither a preset")
    one_line_error(
        capsys,
        ["train-classifier", str(data), "--init", str(tmp_path / "bad.pth")] + out,
        "no label",
    )
    one_line_error(capsys, ["eval", str(tmp_path / "bad.pth"), str(data)], "PyTorch checkpoint")
    one_line_error(
        capsys,
        ["classify", str(tmp_path / "bad.pth"), str(tmp_path / "file.txt")],
        "PyTorch checkpoint",
    )
    one_line_error(
        capsys, ["pack", str(tmp_path / "empty"), "--out", str(tmp_path / "p")], "no files"
    )
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_existing_run_needs_resume(tmp_path, capsys):
    data = make_text_folder(tmp_path / "d", 6)
    run_training(cfg(tmp_path, data, steps=1))
    one_line_error(
        capsys, ["train", str(data), "--out", str(tmp_path / "run")], "already holds a run"
    )


def _ddp_worker(rank: int, world: int, init_file: str, config: dict, result_dir: str):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1"
    )
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    _, model = run_training(TrainConfig(**config))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save(flat, Path(result_dir) / f"params{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    data = make_text_folder(tmp_path / "d", 16)
    base = cfg(
        tmp_path,
        data,
        steps=4,
        save_every=4,
        model_overrides={**TINY, "dropout": 0.0},
        device="cpu",
    )  # gloo
    single, model = run_training(base)
    single_losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    config = dict(base.__dict__, out=str(tmp_path / "ddp"))
    mp.spawn(
        _ddp_worker, args=(2, str(tmp_path / "init"), config, str(tmp_path)), nprocs=2, join=True
    )
    p0, p1 = torch.load(tmp_path / "params0.pt"), torch.load(tmp_path / "params1.pt")
    assert torch.equal(p0, p1)  # ranks stay in sync
    ddp_losses = [r["loss"] for r in read_metrics(tmp_path / "ddp") if "loss" in r]
    assert ddp_losses == pytest.approx(single_losses, abs=1e-5)
    ref = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (p0 - ref).abs().max() < 1e-4


def test_eval_max_files_spreads_over_the_sorted_files():
    from bgpt.evaluate import spread

    assert spread(10, None) == list(range(10)) and spread(3, 5) == [0, 1, 2]
    assert spread(10, 4) == [0, 3, 6, 9]  # first and last file, not a head of the list
    assert len(spread(1000, 200)) == 200 and spread(1000, 1) == [0]


def test_loss_from_patch_trains_on_later_patches_only(tiny_config):
    """loss_from_patch=K: the step's loss is the model's own cross-entropy of the patches from
    index K on (the earlier ones are context), and its unit count is theirs."""
    from bgpt.model import BGPT
    from bgpt.stream import collate, encode
    from bgpt.train import GenerativeTask

    s = tiny_config.patch_size
    g = np.random.default_rng(0)
    batch = collate(
        [encode(g.integers(0, 256, n, dtype=np.uint8).tobytes(), "bin", s) for n in (40, 13)]
    )
    model = BGPT(tiny_config).eval()
    with torch.no_grad():
        lp = model.symbol_logprobs(batch.patches, batch.mask)  # (B, P-1, S): row i is patch i+1
        for k in (0, 5, 9):
            task = GenerativeTask(0, loss_from_patch=k)
            loss_sum, _ = task.loss_sum(model, batch, None)
            first = max(k, 1)
            assert task.units(batch) == int(batch.mask[:, first:].sum()) * s
            torch.testing.assert_close(loss_sum, -lp[:, first - 1 :].sum(), rtol=1e-5, atol=1e-4)
    with pytest.raises(BGPTError, match="loss_from_patch"):
        TrainConfig(loss_from_patch=-1)


def test_classification_baselines():
    """Majority: the most frequent training label's share of the test files; the n-gram model
    separates labels that differ only in which byte pairs they use."""
    from bgpt.baselines import classification_baselines, format_baselines

    rng = np.random.default_rng(0)

    def sample(label: str) -> bytes:  # same byte histogram, different bigrams
        pairs = [b"ab", b"cd"] if label == "x" else [b"ac", b"bd"]
        return b"zz" + b"".join(pairs[int(i)] for i in rng.integers(0, 2, 40))

    train = [(sample(y), y) for y in ["x"] * 30 + ["y"] * 20]
    test = [(sample(y), y) for y in ["x"] * 5 + ["y"] * 15]
    r = classification_baselines(train, test)
    assert r["majority"] == 0.25 and r["ngram_logreg"] == 1.0
    assert (
        classification_baselines(train, test, max_bytes=2)["ngram_logreg"] == 0.25
    )  # heads alike: majority
    lines = format_baselines(0.9, r)
    assert lines[-1].strip() == "model vs best baseline: -10.00 points"
    with pytest.raises(ValueError):
        classification_baselines([], test)


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    """With tensorboard installed, the run folder holds TensorBoard events with the same values
    as metrics.jsonl: train/loss, train/lr, train/bytes_per_s at each logged step, eval/bpb."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    data = make_text_folder(tmp_path / "d", 8)
    run_training(cfg(tmp_path, data, steps=4, save_every=2, log_every=2))
    acc = ea_mod.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/lr",
        "train/bpb",
        "train/bytes_per_s",
        "eval/bpb",
        "eval/loss",
    } <= tags
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == [r["step"] for r in rows] == [2, 4]
    assert [e.value for e in events] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    evals = [r for r in read_metrics(tmp_path / "run") if "eval_bpb" in r]
    assert [e.value for e in acc.Scalars("eval/bpb")] == pytest.approx(
        [r["eval_bpb"] for r in evals], rel=1e-6
    )


def test_data_arguments_take_single_files(tmp_path, capsys):
    """Every DATA argument takes files as well as folders: `bgpt eval MODEL a.txt b.txt`."""
    data = make_text_folder(tmp_path / "d", 6)
    run_training(cfg(tmp_path, data, steps=2))
    files = sorted(str(p) for p in data.iterdir())[:2]
    assert main(["eval", str(tmp_path / "run"), *files, "--json"]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert one["files"] == 2 and one["bytes"] == sum(Path(f).stat().st_size for f in files)
    assert main(["eval", str(tmp_path / "run"), files[0], str(data), "--json"]) == 0  # mixed
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["files"] == 7


def test_golden_loss_curve(tmp_path, one_thread):
    """30 steps of a tiny fp32 run reproduce the recorded loss curve (tests/golden/loss_tiny.txt)
    within 0.2 %: the same data order, initialisation, schedule and arithmetic. A silent change in
    any of them moves the curve by far more (one learning-rate step: several %)."""
    golden = [
        tuple(map(float, line.split()))
        for line in (Path(__file__).parent / "golden" / "loss_tiny.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    data = make_text_folder(tmp_path / "d", 16)
    run_training(cfg(tmp_path, data, steps=30, save_every=1000, eval_max_files=2))
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in rows] == [int(s) for s, _ in golden]
    np.testing.assert_allclose([r["loss"] for r in rows], [loss for _, loss in golden], rtol=2e-3)


def test_bf16_training_step_same_with_and_without_kernels(monkeypatch):
    """One bf16 CPU training step (dropout on, so every kernel runs: linear, bias-GELU, LayerNorm,
    dropout, residual, attention probabilities) gives the loss and gradients of the plain ATen
    ops within bf16 rounding."""
    pytest.importorskip("numba")
    from bgpt import kernels
    from bgpt.model import BGPT
    from bgpt.stream import collate, encode

    config = BGPTConfig(
        patch_size=16,
        max_patches=8,
        hidden_size=64,
        heads=2,
        patch_layers=2,
        byte_layers=1,
        dropout=0.1,
    )
    g = np.random.default_rng(0)
    batch = collate(
        [encode(g.integers(0, 256, n, dtype=np.uint8).tobytes(), "bin", 16) for n in (70, 40, 90)]
    )
    results = []
    for on in (True, False):
        if not on:
            monkeypatch.setattr(kernels, "supports", lambda t: False)
        torch.manual_seed(0)
        model = BGPT(config).train()
        torch.manual_seed(1)  # the same dropout seeds drawn on both paths
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch.patches, batch.mask).loss
        loss.backward()
        results.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_k, grads_k), (loss_p, grads_p) = results
    assert any(not torch.equal(grads_k[n], grads_p[n]) for n in grads_k)  # two computations ran
    assert loss_k == pytest.approx(loss_p, rel=2**-7)
    for name, gk in grads_k.items():
        gp = grads_p[name]
        scale = gp.abs().max().clamp_min(1e-12)
        assert float((gk - gp).abs().max() / scale) < 0.05, (
            name
        )  # a few bf16 ulps of the largest entry


def test_replan_fills_the_time_left_at_the_measured_pace():
    from bgpt.train import _replan

    # 20 steps in 10 s; 90 s left at 0.5 s a step: 180 more
    assert _replan(20, 0, 100.0, 110.0, 200.0) == 200
    # a resumed segment counts only its own steps; a run past its deadline takes one more
    assert _replan(120, 100, 0.0, 40.0, 60.0) == 130
    assert _replan(20, 0, 0.0, 50.0, 40.0) == 21


def test_minutes_run_replans_when_the_trial_misjudges_the_pace(tmp_path, monkeypatch, caplog):
    """A trial that reports a step 10x slower than it is plans too few steps; after a tenth
    of them the run measures its own pace and fills its minutes."""
    import bgpt.train as train_mod

    monkeypatch.setattr(train_mod, "_time_trial_steps", lambda *a, **k: 0.15)
    data = make_text_folder(tmp_path / "data")
    c = cfg(tmp_path, data, steps=0, minutes=0.1, save_every=1000)
    with caplog.at_level(logging.INFO, logger="bgpt"):
        report, _ = run_training(c)
    planned = int(caplog.text.split(" steps fit in 0.1 minutes")[0].rsplit(" ", 1)[1])
    assert planned >= 21  # so the re-plan happens (at step max(20, planned // 10))
    assert "re-planned from the measured pace" in caplog.text
    assert report["steps"] > 2 * planned
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r][-1] == report["steps"]


def test_shift_bytes_crops_start_at_random_byte_offsets(tmp_path):
    """shift_bytes=K: a training example is its file less its first k bytes, k drawn in
    0..K-1 from (seed, epoch, item) (the same example again on resume), at least one byte kept;
    evaluation and shift_bytes=0 read whole files."""
    from bgpt.data import StreamDataset
    from bgpt.stream import encode

    for i, n in enumerate((200, 37, 1)):
        (tmp_path / f"a_{i}.txt").write_bytes(bytes(range(n)))
    files = open_files([tmp_path])
    plain = StreamDataset(files, 16, 64, labels=["a"])
    shifted = StreamDataset(files, 16, 64, labels=["a"], shift_bytes=16)
    seen = set()
    for item in range(3):
        data = files.read(item)
        assert (
            plain.train_example(item, 0, 0).stream.to_bytes() == encode(data, "txt", 16).to_bytes()
        )
        assert (
            shifted.eval_examples(item)[0].stream.to_bytes() == encode(data, "txt", 16).to_bytes()
        )
        for epoch in range(20):
            ex = shifted.train_example(item, 0, epoch)
            again = shifted.train_example(item, 0, epoch)
            assert ex.stream.to_bytes() == again.stream.to_bytes() and ex.label == 0
            k = next(k for k in range(16) if ex.stream.to_bytes()
                     == encode(data[min(k, len(data) - 1):], "txt", 16).to_bytes())  # fmt: skip
            seen.add(k) if len(data) > 16 else None
    assert len(seen) >= 8  # offsets spread over the patch
    with pytest.raises(BGPTError, match="shift_bytes"):
        TrainConfig(shift_bytes=-1)


def test_label_smoothing_is_torch_cross_entropy_with_smoothing(tiny_config):
    """The classifier's loss with label_smoothing=e is (1-e) * NLL + e * mean over labels of
    -log p, summed over the batch."""
    from bgpt.model import BGPTClassifier
    from bgpt.stream import collate, encode
    from bgpt.train import ClassifyTask

    g = np.random.default_rng(0)
    s = tiny_config.patch_size
    batch = collate([encode(g.integers(0, 256, n, dtype=np.uint8).tobytes(), "bin", s)
                     for n in (40, 13, 50)])  # fmt: skip
    model = BGPTClassifier(tiny_config.replace(num_classes=4, labels=list("abcd"))).eval()
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        logp = model(batch.patches, batch.mask).float().log_softmax(-1)
        nll = -logp[torch.arange(3), labels]
        for e in (0.0, 0.1, 0.5):
            loss, stats = ClassifyTask(e).loss_sum(model, batch, labels)
            want = ((1 - e) * nll + e * -logp.mean(-1)).sum()
            torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
            assert stats["count"] == 3
    with pytest.raises(BGPTError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)

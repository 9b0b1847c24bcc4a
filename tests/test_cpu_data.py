"""The CPU-states dataset generator, true traces and the `cpu` command line."""

import hashlib
from pathlib import Path

import pytest

from bgpt.errors import BGPTError
from bgpt.tasks.cpu import data
from bgpt.tasks.cpu import simulator as sim
from bgpt.tasks.cpu.assembler import assemble


def read_split(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu") / "set"
    report = data.generate_dataset(out, 300, 40, min_len=1, max_len=30, seed=3, progress=False)
    return report, read_split(out / "train"), read_split(out / "test")


def test_counts_names_and_contents(small_set):
    report, train, test = small_set
    assert (report.n_train, report.n_test) == (300, 40)
    assert len(train) == 300 and len(test) == 40
    assert not set(train) & set(test)  # disjoint
    for name, blob in {**train, **test}.items():
        memory = blob[:1024]
        lines = sim.program_lines(memory)
        assert 1 <= len(lines) <= 30
        assert name == hashlib.md5("".join(lines).encode()).hexdigest() + ".bin"
        assert blob == memory + b"".join(
            data.true_trace(blob)
        )  # the states are the program's trace
        assert len(blob) == 1024 + 16 * (len(lines) + 1)


def test_same_seed_same_bytes(small_set, tmp_path):
    _, train, test = small_set
    data.generate_dataset(
        tmp_path / "again", 300, 40, min_len=1, max_len=30, seed=3, progress=False
    )
    assert read_split(tmp_path / "again" / "train") == train
    assert read_split(tmp_path / "again" / "test") == test
    data.generate_dataset(
        tmp_path / "other", 300, 40, min_len=1, max_len=30, seed=4, progress=False
    )
    # another seed: other programs, but for a few short ones that any seed draws (e.g. HLT alone)
    assert len(set(read_split(tmp_path / "other" / "train")) & set(train)) < 10


def test_more_train_extends_less(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK", 64)  # many chunks, cheaply
    data.generate_dataset(
        tmp_path / "small", 100, 30, min_len=1, max_len=30, seed=3, progress=False
    )
    data.generate_dataset(tmp_path / "big", 700, 30, min_len=1, max_len=30, seed=3, progress=False)
    small, big = read_split(tmp_path / "small" / "train"), read_split(tmp_path / "big" / "train")
    assert len(small) == 100 and len(big) == 700 and small.items() <= big.items()
    assert read_split(tmp_path / "small" / "test") == read_split(tmp_path / "big" / "test")


def test_duplicates_are_dropped(tmp_path):
    # 8344 distinct programs have 2 instructions, so draws repeat often: every name stays unique
    report = data.generate_dataset(
        tmp_path / "d", 3000, 500, min_len=1, max_len=2, seed=0, progress=False
    )
    names = list((tmp_path / "d" / "train").iterdir()) + list((tmp_path / "d" / "test").iterdir())
    assert len({p.name for p in names}) == 3500 == report.n_train + report.n_test
    assert sum(len(p.read_bytes()) == 1024 + 32 for p in names) == 1  # HLT alone, once


def test_packed_matches_folders(small_set, tmp_path):
    from bgpt.data import PackedSet

    _, train, test = small_set
    data.generate_dataset(
        tmp_path / "p", 300, 40, min_len=1, max_len=30, seed=3, packed=True, progress=False
    )
    for split, files in (("train", train), ("test", test)):
        packed = PackedSet(tmp_path / "p" / split)
        assert {packed.names[i]: packed.read(i) for i in range(len(packed))} == files


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_train": -1}, "counts must be >= 0"),
        ({"min_len": 0}, "1 <= min-len <= max-len <= 255"),
        ({"max_len": 256}, "1 <= min-len <= max-len <= 255"),
        ({"min_len": 9, "max_len": 8}, "1 <= min-len <= max-len <= 255"),
        ({"seed": -5}, "seed must be >= 0"),
        ({"n_train": 2.5}, "must be an integer"),
        ({"min_len": 1, "max_len": 1, "n_train": 2, "n_test": 0}, "only 1 distinct programs"),
    ],
)
def test_bad_settings(tmp_path, kwargs, message):
    args = {"n_train": 10, "n_test": 2, "min_len": 1, "max_len": 10, "seed": 0, **kwargs}
    with pytest.raises(BGPTError, match=message):
        data.generate_dataset(tmp_path / "x", progress=False, **args)
    assert not (tmp_path / "x").exists()


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "old.bin").write_bytes(b"x")
    with pytest.raises(BGPTError, match="not an empty folder"):
        data.generate_dataset(tmp_path, 1, 1, progress=False)


def test_true_trace():
    memory = assemble("LOADI 3\nPOP B\nINC")
    states = sim.run_program(memory, 9, list(range(10)))
    instance = memory + b"".join(states)
    assert data.true_trace(instance) == states
    assert data.true_trace(instance[:1040]) == states  # only memory and the first state are needed
    assert data.true_trace(memory, states[0]) == states
    broken = bytearray(instance)
    broken[1024 + 16 * 2 :] = bytes(len(broken) - 1024 - 32)  # wrong predictions do not matter
    assert data.true_trace(bytes(broken)) == states
    with pytest.raises(sim.InvalidInstanceError):
        data.true_trace(memory)


# ----------------------------------------------------------------------------- command line


def run_cli(*argv: str) -> int:
    """The `bgpt` parser's command, run without the entry point's error handling (BGPTError
    propagates to the test)."""
    from bgpt.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return args._run(args)


def test_cli_assemble_and_translate(tmp_path, capsys):
    src = tmp_path / "p.asm"
    src.write_text("LOADI 7\nADD A B C\n")
    out = tmp_path / "p.bin"
    assert run_cli("cpu", "assemble", str(src), "--out", str(out), "--state", "ACC=5,A=1 b=2") == 0
    blob = out.read_bytes()
    assert blob[:1024] == assemble("LOADI 7\nADD A B C")
    assert blob[1024:1040] == bytes([0, 5, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0])
    assert blob[-16:] == bytes([3, 7, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0])
    assert run_cli("cpu", "translate", str(out)) == 0
    text = capsys.readouterr().out
    assert "ADD A B C" in text and "all states match the simulator" in text
    assert (
        run_cli(
            "cpu",
            "assemble",
            str(src),
            "--out",
            str(out),
            "--seed",
            "1",
            "--state",
            "A=0",
            "--force",
        )
        == 0
    )
    random_start = out.read_bytes()[1024:1040]
    assert random_start[6] == 0 and any(random_start[7:])


def test_cli_generate(tmp_path, capsys):
    assert (
        run_cli(
            "cpu",
            "generate",
            "--out",
            str(tmp_path / "g"),
            "--train",
            "5",
            "--test",
            "2",
            "--max-len",
            "8",
            "--quiet",
        )
        == 0
    )
    assert "wrote 5 train and 2 test instances" in capsys.readouterr().out
    assert len(list((tmp_path / "g" / "train").iterdir())) == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["translate", "missing.bin"], "no such file: missing.bin"),
        (["assemble", "missing.asm", "--out", "x.bin"], "no such file"),
        (["assemble", "bad.asm", "--out", "x.bin"], "bad.asm: line 2: bad register 'Q'"),
        (
            ["assemble", "good.asm", "--out", "x.bin", "--state", "K=1"],
            "--state: expected NAME=VALUE",
        ),
        (
            ["assemble", "good.asm", "--out", "x.bin", "--state", "A=300"],
            "--state: A must be 0..255",
        ),
        (["translate", "good.asm"], "good.asm is not a CPU instance"),
        (["generate", "--out", "g", "--train", "-1"], "counts must be >= 0"),
        (["generate", "--out", "g", "--min-len", "0"], "min-len"),
        (["generate", "--out", "g", "--max-len", "300"], "max-len"),
    ],
)
def test_cli_errors(tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    Path("bad.asm").write_text("INC\nINC Q\n")
    Path("good.asm").write_text("INC\n")
    with pytest.raises(BGPTError, match=message):
        run_cli("cpu", *argv)


def test_cpu_errors_are_one_line(tmp_path, capsys):
    from bgpt.cli import main

    argv = ["cpu", "generate", "--out", str(tmp_path / "g"), "--min-len", "5", "--max-len", "4"]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "bgpt cpu: error: program lengths must satisfy 1 <= min-len <= max-len <= 255, got min-len=5 max-len=4"
    ]

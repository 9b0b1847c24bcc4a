"""Invariants that must hold for every input, checked on inputs hypothesis draws (and shrinks
to the smallest failing one): stream layout, conversion pairing, compression round trips,
assemble -> disassemble, pack -> read, and file names that are not UTF-8."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgpt.config import BGPTConfig
from bgpt.data import PackedSet, PackWriter, open_files, pair_by_stem
from bgpt.stream import PAD, ROLE_INPUT, ROLE_NONE, ROLE_TARGET, encode, encode_pair, header_patch

from .conftest import random_bgpt

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SLOW = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
patch_sizes = st.sampled_from([1, 2, 4, 16])
exts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0."), max_size=20
)


def decode(symbols: np.ndarray, s: int) -> tuple[str, bytes]:
    """The reading of a stream, written independently of encode: extension from the header
    patch, data up to the first PAD after it."""
    head = bytes(int(x) for x in symbols[:s] if x != PAD)
    body = symbols[s:]
    end = int(np.argmax(body == PAD)) if (body == PAD).any() else len(body)
    return head.decode("utf-8", errors="ignore"), bytes(body[:end].astype(np.uint8))


@FAST
@given(data=st.binary(max_size=300), ext=exts, s=patch_sizes)
def test_stream_layout_round_trips(data, ext, s):
    st_ = encode(data, ext, s)
    sym = st_.symbols
    assert len(sym) % s == 0 and sym.min() >= 0 and sym.max() <= PAD
    assert st_.num_patches == 2 + -(-len(data) // s)  # header, data, end patch
    assert (sym[-s:] == PAD).all()  # the end patch
    assert np.array_equal(sym[:s], header_patch(ext, s))
    got_ext, got = decode(sym, s)
    assert got == data and ext.encode()[:s].decode("utf-8", errors="ignore") == got_ext
    # roles: every data byte and the symbol that ends them are scored, nothing else
    assert (st_.roles[s : s + len(data) + 1] == ROLE_INPUT).all() and (
        st_.roles[s + len(data) + 1 :] == ROLE_NONE
    ).all()


@FAST
@given(x=st.binary(max_size=100), y=st.binary(max_size=100), s=patch_sizes)
def test_conversion_pair_layout(x, y, s):
    pair = encode_pair(x, "abc", y, "mid", s)
    xs = encode(x, "abc", s)
    ys = encode(y, "mid", s)
    assert np.array_equal(pair.symbols, np.concatenate([xs.symbols[:-s], ys.symbols]))
    assert (pair.roles == ROLE_TARGET).sum() == len(y) + 1 and (
        pair.roles == ROLE_INPUT
    ).sum() == len(x) + (
        1 if len(x) % s else 0
    )  # X's end symbol is scored only where a padded patch holds it (no end patch for X)


@FAST
@given(
    stems=st.lists(
        st.text("abcdefgh", min_size=1, max_size=6), min_size=1, max_size=8, unique=True
    ),
    lonely=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_pairing_by_stem(tmp_path_factory, stems, lonely):
    root = tmp_path_factory.mktemp("pairs")
    expected = set()
    for stem, alone in zip(stems, lonely, strict=False):
        (root / f"{stem}.abc").write_text(stem)
        if not alone:
            (root / f"{stem}.mid").write_bytes(stem.encode())
            expected.add(stem)
    files = open_files([root])
    if not expected:
        with pytest.raises(Exception, match="no .abc/.mid pairs"):
            pair_by_stem(files, "abc", "mid")
        return
    pairs = pair_by_stem(files, "abc", "mid")
    assert {files.names[i].rsplit(".", 1)[0] for i, _ in pairs} == expected
    for i, j in pairs:
        assert files.names[i][:-4] == files.names[j][:-4] and files.read(i) == files.read(j)


@FAST
@given(
    contents=st.lists(st.binary(max_size=200), min_size=1, max_size=12), shard=st.integers(1, 400)
)
def test_pack_then_read(tmp_path_factory, contents, shard):
    root = tmp_path_factory.mktemp("pack")
    names = [f"d{k % 3}/f_{k}.bin" for k in range(len(contents))]
    with PackWriter(root, shard_bytes=shard) as w:
        for name, data in zip(names, contents, strict=True):
            w.add(name, data)
    ps = PackedSet(root)
    assert ps.names == names and [ps.read(i) for i in range(len(ps))] == contents
    assert [ps.size(i) for i in range(len(ps))] == [len(c) for c in contents]


def test_names_that_are_not_utf8_pack_and_read(tmp_path):
    """A Latin-1 file name (not UTF-8) is a name like any other: scanned, packed, read back."""
    root = tmp_path / "d"
    root.mkdir()
    odd = os.fsdecode(b"caf\xe9_1.txt")
    (root / odd).write_bytes(b"coffee")
    (root / "tea_2.txt").write_bytes(b"tea")
    with PackWriter(tmp_path / "p") as w:
        files = open_files([root])
        for i in range(len(files)):
            w.add(files.names[i], files.read(i))
    ps = PackedSet(tmp_path / "p")
    assert sorted(ps.names) == sorted([odd, "tea_2.txt"])
    assert ps.read(ps.names.index(odd)) == b"coffee"


# ----------------------------------------------------------------------------- compression


@pytest.fixture(scope="module")
def coder_model():
    torch.manual_seed(0)
    config = BGPTConfig(
        patch_size=4, max_patches=6, hidden_size=32, heads=2, patch_layers=1, byte_layers=1
    )
    return random_bgpt(config, 0, 0.3, matrices_only=True)


@SLOW
@given(data=st.binary(max_size=70), ext=st.sampled_from(["", "txt", "mid", "a.b", "é", "x" * 20]))
def test_compress_round_trip(coder_model, data, ext):
    pytest.importorskip("constriction")
    from bgpt.compress import compress, decompress, read_header

    threads = torch.get_num_threads()
    blob = compress(coder_model, data, ext)
    assert decompress(coder_model, blob) == data
    assert read_header(blob).length == len(data) and torch.get_num_threads() == threads


# ----------------------------------------------------------------------------- CPU programs


@FAST
@given(
    words=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 2)), max_size=40),
    seed=st.integers(0, 2**16),
)
def test_assemble_disassemble(words, seed):
    """Random programs from the instruction table: disassemble(assemble(text)) is canonical,
    and the simulator's trace of the memory translates without a mismatch."""
    from bgpt.tasks.cpu.assembler import assemble, disassemble, translate
    from bgpt.tasks.cpu.isa import OPS
    from bgpt.tasks.cpu.simulator import make_instance, run_program

    rng = np.random.default_rng(seed)
    lines = []
    for code, pick in words:
        op = OPS[code]
        k = op.counts[pick % len(op.counts)]
        if op.name == "LOADI":
            lines.append(f"LOADI {int(rng.integers(0, 256))}")
        else:
            lines.append(
                " ".join([op.name, *("ABCDEFGHIJ"[int(r)] for r in rng.integers(0, 10, k))])
            )
    memory = assemble("\n".join(lines))
    text = disassemble(memory)
    assert assemble(text) == memory and disassemble(assemble(text)) == text
    instance = make_instance(memory, run_program(memory, 0, [0] * 10))
    assert "!" not in translate(instance)

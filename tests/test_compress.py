"""Compression: exact round trips (random, empty, 1-byte, patch-boundary and multi-window files),
the cost against `bgpt eval`'s bits per byte, and one clear error line for every bad input.
Tiny models (patch size 4, context 8 patches = 32 bytes, so 100 bytes already need windows)."""

import json
import struct
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("constriction")

from bgpt.checkpoint import save_pretrained  # noqa: E402
from bgpt.cli import main  # noqa: E402
from bgpt.compress import (  # noqa: E402
    MAGIC,
    PRECISION,
    Codec,
    FormatError,
    Header,
    compress,
    decompress,
    fingerprint,
    quantize,
    read_header,
)
from bgpt.config import BGPTConfig  # noqa: E402
from bgpt.errors import BGPTError  # noqa: E402
from bgpt.model import BGPT, BGPTClassifier  # noqa: E402
from bgpt.stream import PAD, collate, encode, eval_windows  # noqa: E402

from .conftest import random_bgpt  # noqa: E402

S, L = 4, 8
CONTEXT = S * L  # bytes of context, header and end patch included


def tiny(seed: int = 0, std: float = 0.3, byte_context: bool = False) -> BGPT:
    config = BGPTConfig(
        patch_size=S,
        max_patches=L,
        hidden_size=32,
        heads=2,
        patch_layers=1,
        byte_layers=1,
        byte_context=byte_context,
    )
    return random_bgpt(config, seed, std, matrices_only=True)


TEXT = (
    b"the cat sat on the mat. the dog sat on the log. the cat and the dog sat on the mat.\n"
    b"a cat is not a dog, and a dog is not a cat; the mat is not a log.\n"
)


def corpus(k: int, rng: np.random.Generator) -> list[bytes]:
    """Slices of TEXT of assorted lengths: predictable for a briefly trained model."""
    out = []
    for _ in range(k):
        a = int(rng.integers(0, len(TEXT) - 8))
        out.append(TEXT[a : a + int(rng.integers(8, len(TEXT) - a + 1))])
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained() -> BGPT:
    """A tiny model trained for 150 steps (about a second) on windows of TEXT."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: set up before the per-test fixture
    torch.manual_seed(0)
    config = BGPTConfig(
        patch_size=S,
        max_patches=L,
        hidden_size=64,
        heads=2,
        patch_layers=2,
        byte_layers=1,
        dropout=0.0,
    )
    model = BGPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        streams = []
        for data in corpus(8, rng):
            st = encode(data, "txt", S)
            streams.append(st.window(int(rng.integers(0, max(1, st.num_patches - L + 1))), L))
        batch = collate(streams)
        loss = model(batch.patches, batch.mask).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(before)
    return model.eval()


def roundtrip(model: BGPT, data: bytes, ext: str = "bin") -> bytes:
    blob = compress(model, data, ext)
    assert decompress(model, blob) == data
    return blob


# ----------------------------------------------------------------------------- quantisation


def test_quantize_is_integer_total_and_never_zero():
    rng = np.random.default_rng(0)
    cases = [torch.zeros(1, 257), torch.randn(1, 257) * 5, torch.full((1, 257), -1e4)]
    peaked = torch.zeros(1, 257)
    peaked[0, 7] = 1e4  # every other symbol far below 2**-24: still codable
    cases.append(peaked)
    cases.append(torch.from_numpy(rng.standard_normal((1, 257)).astype(np.float32)) * 40)
    for logits in cases:
        f = quantize(logits)
        assert f.dtype == np.int64 and f.shape == (257,)
        assert f.sum() == 1 << PRECISION and f.min() >= 1
        assert np.array_equal(f, quantize(logits.clone()))  # a pure function of the logits
    assert quantize(peaked).argmax() == 7
    u = quantize(torch.zeros(1, 257))
    assert u.max() - u.min() <= 257  # uniform stays uniform up to the rounding remainder


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "n",
    [0, 1, S - 1, S, S + 1, 2 * S, CONTEXT - S - 1, CONTEXT - S, CONTEXT - S + 1],
    ids=lambda n: f"{n}B",
)
def test_roundtrip_short_and_patch_boundaries(n):
    """Empty, 1 byte, exactly S and S +- 1 bytes, and files ending at the context edge (the
    end-of-file symbol is then the first symbol of the end patch, or of the next window)."""
    model = tiny()
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    blob = roundtrip(model, data)
    h = read_header(blob)
    assert (h.length, h.ext, h.crc32) == (n, "bin", zlib.crc32(data))


def test_roundtrip_random_bytes():
    model = tiny()
    values = np.repeat(np.arange(256, dtype=np.uint8), 2)
    roundtrip(model, np.random.default_rng(1).permutation(values).tobytes()[:211])


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
@pytest.mark.parametrize("n", [3 * CONTEXT, 3 * CONTEXT + 1, 5 * CONTEXT - 2])
def test_roundtrip_multi_window(n, byte_context):
    """Longer than the context: coded window by window (stream.eval_windows)."""
    model = tiny(seed=1, byte_context=byte_context)
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert len(eval_windows(2 + -(-n // S), L)) >= 3
    roundtrip(model, data)


def test_roundtrip_trained_and_extension_is_kept(trained):
    data = TEXT * 2  # 306 bytes: ten windows
    blob = roundtrip(trained, data, "txt")
    assert read_header(blob).ext == "txt"
    assert len(blob) < len(data) / 2  # it learned something
    long_ext = "a" * 40  # longer than S: the header patch holds its first S bytes, as in training
    assert read_header(roundtrip(trained, TEXT[:50], long_ext)).ext == long_ext


def test_deterministic_and_thread_count_restored():
    model = tiny()
    torch.set_num_threads(2)
    data = TEXT[:77]
    assert compress(model, data, "txt") == compress(model, data, "txt")
    assert torch.get_num_threads() == 2


def test_model_left_as_it_was():
    model = tiny()
    model.train()
    roundtrip(model, b"abc")
    assert model.training


@pytest.mark.parametrize("byte_context", [False, True], ids=["paper", "ctx"])
def test_incremental_probabilities_match_teacher_forced(byte_context):
    """The coder's distributions (incremental, cached) against one teacher-forced forward."""
    model = tiny(byte_context=byte_context)
    data = TEXT[: CONTEXT - 2 * S - 3]  # one window
    st = encode(data, "txt", S)
    b = collate([st])
    with torch.no_grad():
        lp = model.symbol_logprobs(b.patches, b.mask)  # (1, P-1, S) natural log
    bits_tf = -float(lp.flatten()[: len(data) + 1].double().sum()) / np.log(2)
    out = Codec(model).compress(data, "txt")
    assert out.model_bits == pytest.approx(bits_tf, rel=1e-5)


# ----------------------------------------------------------------------------- cost vs BPB


def test_size_matches_bgpt_eval(trained, tmp_path, capsys):
    """Payload within 1 % + 4 bytes of what `bgpt eval` says (BPB x bytes / 8), per file and in
    total, with single- and multi-window files; the header is a fixed, small extra."""
    model_dir = save_pretrained(trained, tmp_path / "model")
    rng = np.random.default_rng(5)
    files = corpus(6, rng) + [TEXT, TEXT * 3, b"x"]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i, d in enumerate(files):
        (data_dir / f"f{i}.txt").write_bytes(d)
    assert main(["eval", str(model_dir), str(data_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    codec = Codec(trained)
    total_payload = total_bits = 0.0
    for d in files:
        out = codec.compress(d, "txt")
        total_payload += out.payload_bytes
        total_bits += out.model_bits
        assert out.payload_bytes <= out.model_bits / 8 * 1.01 + 4
        assert out.payload_bytes >= out.model_bits / 8 * 0.99 - 4
        assert out.header_bytes <= 32
        assert codec.decompress(out.data) == d
    assert report["bytes"] == sum(map(len, files))
    claim = report["bpb"] * report["bytes"] / 8
    assert total_bits / 8 == pytest.approx(claim, rel=1e-4)  # the same bits, summed alike
    assert abs(total_payload - claim) <= 0.01 * claim + 4 * len(files)
    assert report["bpb"] < 4  # trained: well below 8 bits per byte


# ----------------------------------------------------------------------------- errors


def test_quantised_overhead_is_tiny(trained):
    out = Codec(trained).compress(TEXT * 2, "txt")
    assert out.quantized_bits - out.model_bits < 1e-3 * out.model_bits + 0.01


def test_library_errors():
    model = tiny()
    blob = compress(model, TEXT[:40], "txt")
    with pytest.raises(FormatError, match="different model"):
        decompress(tiny(seed=3), blob)
    with pytest.raises(FormatError, match="truncated"):
        decompress(model, blob[:-4])
    with pytest.raises(FormatError, match="unexpected bytes"):
        decompress(model, blob + b"\0\0\0\0")
    with pytest.raises(FormatError, match="not a bgpt compressed file"):
        decompress(model, b"\x1f\x8b\x08\x00 a gzip file, say")
    with pytest.raises(FormatError, match="empty file"):
        decompress(model, b"")
    with pytest.raises(FormatError, match="truncated"):
        decompress(model, b"BG")
    with pytest.raises(FormatError, match="version"):
        decompress(model, MAGIC + b"\x09" + blob[4:])
    with pytest.raises(BGPTError, match="generative"):
        Codec(
            BGPTClassifier(
                BGPTConfig(
                    patch_size=S,
                    max_patches=L,
                    hidden_size=32,
                    patch_layers=1,
                    byte_layers=0,
                    num_classes=2,
                )
            )
        )


def test_forged_length_is_refused_before_decoding():
    """A header whose length cannot fit the payload (even with its checksum fixed up) would make
    the decoder run for nothing: refused at once."""
    model = tiny()
    blob = compress(model, b"abcdefgh", "txt")
    h = read_header(blob)
    payload = blob[h.size :]
    forged = Header(
        h.fingerprint, h.patch_size, h.max_patches, 1 << 40, h.crc32, h.payload_bytes, h.ext
    ).to_bytes()
    with pytest.raises(FormatError, match="maximum"):
        decompress(model, forged + payload)
    fits = (8 * h.payload_bytes + 128) << 16  # the most the payload could hold, plus one
    forged = Header(
        h.fingerprint, h.patch_size, h.max_patches, fits, h.crc32, h.payload_bytes, h.ext
    ).to_bytes()
    with pytest.raises(FormatError, match="cannot fit"):
        decompress(model, forged + payload)
    wrong_length = Header(
        h.fingerprint, h.patch_size, h.max_patches, 9, h.crc32, h.payload_bytes, h.ext
    ).to_bytes()
    with pytest.raises(FormatError, match="corrupt data|checksum"):
        decompress(model, wrong_length + payload)


def test_forged_length_costs_no_memory_up_front():
    """A header claiming the most its payload could hold (millions of bytes) gets no buffer of
    that size: memory grows only with the bytes really decoded, and the corrupt data is found."""
    import tracemalloc

    model = tiny()
    blob = compress(model, b"abcdefgh", "txt")
    h = read_header(blob)
    n = ((8 * h.payload_bytes + 128) << 16) - 2
    forged = Header(
        h.fingerprint, h.patch_size, h.max_patches, n, h.crc32, h.payload_bytes, h.ext
    ).to_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="corrupt data|checksum"):
            decompress(model, forged + blob[h.size :])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n > 10_000_000 and peak < 8 * 1024 * 1024  # an n-symbol buffer alone: 8n bytes


def test_every_payload_bit_flip_is_caught():
    model = tiny()
    data = TEXT[:40]
    blob = compress(model, data, "txt")
    h = read_header(blob)
    caught = 0
    for k in range(h.size, len(blob)):
        bad = bytearray(blob)
        bad[k] ^= 1 << (k % 8)
        try:
            back = decompress(model, bytes(bad))
        except FormatError:
            caught += 1
            continue
        # never wrong output (a flip in the coder's unused last bits is harmless)
        assert back == data
    assert caught >= h.payload_bytes - 4


def test_every_header_byte_flip_is_caught():
    model = tiny()
    blob = compress(model, TEXT[:30], "txt")
    for k in range(read_header(blob).size):
        bad = bytearray(blob)
        bad[k] ^= 0x10
        with pytest.raises(FormatError):
            decompress(model, bytes(bad))


# ----------------------------------------------------------------------------- command line


@pytest.fixture
def model_dir(tmp_path):
    return str(save_pretrained(tiny(), tmp_path / "model"))


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, command: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bgpt {command}: error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def test_cli_roundtrip_several_files(model_dir, tmp_path, capsys):
    files = {"a.txt": TEXT[:50], "b.mid": b"MThd\0\0\0\x06" * 5, "empty": b"", "one.bin": b"\x00"}
    for name, d in files.items():
        (tmp_path / name).write_bytes(d)
    paths = [str(tmp_path / n) for n in files]
    code, out, _ = run(["compress", model_dir, *paths, "-q"], capsys)
    assert code == 0 and "4 files" in out
    for name in files:
        (tmp_path / name).rename(tmp_path / f"{name}.orig")
    code, out, _ = run(["decompress", model_dir, *[p + ".bgz" for p in paths], "-q"], capsys)
    assert code == 0
    for name, d in files.items():
        assert (tmp_path / name).read_bytes() == d
        assert (tmp_path / f"{name}.bgz").exists()  # inputs are kept


def test_cli_output_names(model_dir, tmp_path, capsys):
    src, packed, y = tmp_path / "x.txt", str(tmp_path / "packed"), str(tmp_path / "y")
    src.write_bytes(TEXT[:20])
    assert run(["compress", model_dir, str(src), "-o", packed, "-q"], capsys)[0] == 0
    code, _, err = run(["decompress", model_dir, packed, "-q"], capsys)
    one_error(code, err, "decompress", "does not end in .bgz", "-o")
    assert run(["decompress", model_dir, packed, "-o", y, "-q"], capsys)[0] == 0
    assert (tmp_path / "y").read_bytes() == TEXT[:20]
    code, _, err = run(["decompress", model_dir, packed, "-o", y, "-q"], capsys)
    one_error(code, err, "decompress", "exists; pass --force", "--force")
    assert run(["decompress", model_dir, packed, "-o", y, "-f", "-q"], capsys)[0] == 0
    code, _, err = run(["compress", model_dir, str(src), str(src), "-o", y, "-q"], capsys)
    one_error(code, err, "compress", "-o names one output file")
    code, _, err = run(["compress", model_dir, str(tmp_path / "missing"), "-q"], capsys)
    one_error(code, err, "compress", "no such file")


@pytest.fixture
def packed(model_dir, tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_bytes(TEXT[:64])
    assert run(["compress", model_dir, str(src), "-q"], capsys)[0] == 0
    return (tmp_path / "t.txt.bgz").read_bytes()


@pytest.mark.parametrize(
    "case, words",
    [
        ("other model", ["different model", "fingerprint"]),
        ("truncated", ["truncated file"]),
        ("truncated header", ["truncated file", "header"]),
        ("corrupt payload", ["corrupt data"]),
        ("corrupt header", ["corrupt header"]),
        ("foreign", ["not a bgpt compressed file"]),
        ("empty", ["empty file"]),
    ],
)
def test_cli_errors_are_one_line(case, words, packed, model_dir, tmp_path, capsys):
    model = model_dir
    bad = tmp_path / "bad.bgz"
    if case == "other model":
        model = str(save_pretrained(tiny(seed=7), tmp_path / "other"))
        bad.write_bytes(packed)
    elif case == "truncated":
        bad.write_bytes(packed[:-5])
    elif case == "truncated header":
        bad.write_bytes(packed[:12])
    elif case == "corrupt payload":
        b = bytearray(packed)
        b[read_header(packed).size + 1] ^= 0x40
        bad.write_bytes(bytes(b))
    elif case == "corrupt header":
        b = bytearray(packed)
        b[14] ^= 0x01  # inside the length / checksum fields
        bad.write_bytes(bytes(b))
    elif case == "foreign":
        bad.write_bytes(zlib.compress(TEXT))
    else:
        bad.write_bytes(b"")
    out = tmp_path / "restored"
    code, _, err = run(["decompress", model, str(bad), "-o", str(out), "-q"], capsys)
    one_error(code, err, "decompress", str(bad), *words)
    assert not out.exists()  # never a wrong or partial output


def test_header_layout():
    """The documented layout: magic+version, flags, fingerprint, varints, CRCs."""
    model = tiny()
    blob = compress(model, (TEXT * 2)[:200], "txt")
    assert blob[:4] == b"BGZ\x01" and blob[4] == 0x01  # scheme 1, CPU
    assert blob[5:13] == fingerprint(model)
    assert blob[13] == S and blob[14] == L
    assert blob[15:17] == bytes([200 & 0x7F | 0x80, 200 >> 7])  # LEB128 of 200
    assert struct.unpack("<I", blob[17:21])[0] == zlib.crc32((TEXT * 2)[:200])
    h = read_header(blob)
    assert h.size + h.payload_bytes == len(blob) and h.payload_bytes % 4 == 0
    assert PAD == 256  # the end-of-file symbol coded after the data

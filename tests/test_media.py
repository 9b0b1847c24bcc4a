"""Media converters (WAV 8044 bytes, BMP 3126 bytes, spectrograms) and the local labelled sets."""

import hashlib
import io
import json
import logging
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bgpt.cli import main
from bgpt.errors import BGPTError
from bgpt.tasks import media
from bgpt.tasks.media import convert, filetypes, sets

PIL = pytest.importorskip("PIL.Image", reason="media tests need Pillow (pip install 'bgpt[media]')")
pytest.importorskip("scipy.signal", reason="media tests need scipy")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """PCM WAV with the standard library; samples int (frames, channels) or (frames,)."""
    x = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(x.astype("<i2" if width == 2 else np.uint8).tobytes())
    return path


def check_wav(path_or_bytes) -> np.ndarray:
    """The paper's WAV: 8044 bytes, 1 channel, 8-bit, 8000 Hz, 8000 frames; returns the samples."""
    data = (
        Path(path_or_bytes).read_bytes() if not isinstance(path_or_bytes, bytes) else path_or_bytes
    )
    assert len(data) == media.WAV_BYTES == 8044
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            1,
            1,
            8000,
            8000,
        )
        assert w.getcomptype() == "NONE"
        return np.frombuffer(w.readframes(8000), np.uint8)


def check_bmp(path_or_bytes) -> np.ndarray:
    """The paper's BMP: 3126 bytes, 32 x 32, 24-bit RGB, uncompressed; returns the pixels."""
    data = (
        Path(path_or_bytes).read_bytes() if not isinstance(path_or_bytes, bytes) else path_or_bytes
    )
    assert len(data) == media.BMP_BYTES == 3126
    assert data[:2] == b"BM"
    width, height, planes, bpp, compression = struct.unpack("<iiHHI", data[18:34])
    assert (abs(width), abs(height), planes, bpp, compression) == (32, 32, 1, 24, 0)
    img = Image.open(io.BytesIO(data))
    assert (img.format, img.size, img.mode) == ("BMP", (32, 32), "RGB")
    return np.asarray(img)


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- audio


def test_audio_exact_8bit_values_and_padding(tmp_path):
    x = np.array([0, 16384, -16384, 32767, -32768, 256, -256], dtype=np.int16)
    src = write_wav(tmp_path / "v.wav", x, 8000)
    u8 = check_wav(media.audio_to_wav(src))
    # round(x * 128) + 128 clipped to 0..255; then silence (128) up to exactly 1 s
    assert u8[:7].tolist() == [128, 192, 64, 255, 0, 129, 127]
    assert (u8[7:] == 128).all()


def test_audio_resamples_mixes_and_cuts(tmp_path):
    left = tone(440, 22050, 2.0)
    stereo = np.stack([left, left], axis=1)  # identical channels: the mean is the same tone
    src = write_wav(tmp_path / "stereo.wav", np.round(stereo * 32767), 22050)
    u8 = check_wav(media.audio_to_wav(src)).astype(np.float64) - 128
    assert 60 <= np.abs(u8).max() <= 66  # amplitude 0.5 -> +-64
    # the 440 Hz tone survives 22,050 -> 8,000 Hz resampling
    spectrum = np.abs(np.fft.rfft(u8))
    assert abs(np.argmax(spectrum) - 440) <= 1


def test_audio_offset_and_normalize(tmp_path):
    ramp = np.concatenate([np.zeros(8000), np.full(8000, 0.25)])
    src = write_wav(tmp_path / "r.wav", np.round(ramp * 32767), 8000)
    assert (check_wav(media.audio_to_wav(src, offset=1.0)) == 160).all()
    assert (
        check_wav(media.audio_to_wav(src, offset=1.0, normalize=True)) == 243
    ).all()  # 0.9 * 128 + 128
    with pytest.raises(media.MediaError, match="past the end"):
        media.audio_to_wav(src, offset=3.0)


def test_audio_reads_other_formats_with_soundfile(tmp_path):
    sf = pytest.importorskip("soundfile")
    sf.write(tmp_path / "t.flac", tone(1000, 16000, 0.5), 16000)
    sf.write(tmp_path / "f.wav", tone(1000, 44100, 1.5).astype(np.float32), 44100, subtype="FLOAT")
    for name in ("t.flac", "f.wav"):
        u8 = check_wav(media.audio_to_wav(tmp_path / name)).astype(float) - 128
        assert abs(np.argmax(np.abs(np.fft.rfft(u8[:4000]))) * 2 - 1000) <= 2


def test_convert_one_error_per_bad_file_rest_converts(tmp_path, capsys):
    good = [
        write_wav(
            tmp_path / f"good_{i}.wav", np.round(tone(300 + 100 * i, 16000, 0.3) * 20000), 16000
        )
        for i in range(2)
    ]
    (tmp_path / "text_0.wav").write_text("this is not audio\n")
    (tmp_path / "empty_0.wav").write_bytes(b"")
    missing = tmp_path / "missing_0.wav"
    out = tmp_path / "out"
    rc = main(["media", "audio", str(good[0]), str(tmp_path / "text_0.wav"), str(tmp_path / "empty_0.wav"),
               str(missing), str(good[1]), "--out", str(out)])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "text_0.wav" in err[0] and "empty_0.wav" in err[1] and "missing_0.wav" in err[2]
    assert "Traceback" not in "".join(err)
    assert sorted(p.name for p in out.iterdir()) == ["good_0.wav", "good_1.wav"]
    for p in out.iterdir():
        check_wav(p)


def test_convert_folder_keeps_names_and_subfolders(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_wav(src / "yes_1.wav", np.round(tone(500, 8000, 0.2) * 1000), 8000)
    write_wav(src / "sub" / "no_2.wav", np.round(tone(500, 11025, 0.2) * 1000), 11025)
    written, errors = media.convert_files("audio", [src], tmp_path / "out")
    assert errors == []
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "sub/no_2.wav",
        "yes_1.wav",
    ]


def test_same_output_name_is_one_error(tmp_path):
    write_wav(tmp_path / "a.wav", np.zeros(100, np.int16), 8000)
    d = tmp_path / "d"
    d.mkdir()
    write_wav(d / "a.wav", np.zeros(100, np.int16), 8000)
    written, errors = media.convert_files(
        "audio", [tmp_path / "a.wav", d / "a.wav"], tmp_path / "out"
    )
    assert len(written) == 1 and len(errors) == 1 and "same output name" in errors[0]


# ----------------------------------------------------------------------------- images


def test_image_formats_to_exact_bmp(tmp_path):
    Image.new("RGBA", (100, 50), (255, 0, 0, 128)).save(tmp_path / "a.png")
    Image.new("P", (7, 300), 3).save(tmp_path / "b.gif")
    Image.new("L", (640, 480), 77).save(tmp_path / "c.jpg", quality=95)
    Image.new("I;16", (40, 40), 1000).save(tmp_path / "d.tif")
    Image.new("CMYK", (33, 65), (0, 0, 0, 0)).save(tmp_path / "e.jpg")
    for name in ("a.png", "b.gif", "c.jpg", "d.tif", "e.jpg"):
        check_bmp(media.image_to_bmp(tmp_path / name))
    # half-transparent red is composited on white
    assert tuple(check_bmp(media.image_to_bmp(tmp_path / "a.png"))[16, 16]) == (255, 127, 127)
    assert abs(int(check_bmp(media.image_to_bmp(tmp_path / "c.jpg"))[5, 5, 0]) - 77) <= 1


def test_image_fit_modes(tmp_path):
    img = Image.new("RGB", (96, 32), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 32, 32))  # red | blue | blue
    img.save(tmp_path / "w.png")
    crop = check_bmp(media.image_to_bmp(tmp_path / "w.png", fit="crop"))
    assert (crop[:, :, 2] > 250).all()  # the centre square is all blue
    stretch = check_bmp(media.image_to_bmp(tmp_path / "w.png", fit="stretch"))
    assert tuple(stretch[16, 2]) == (255, 0, 0) and tuple(stretch[16, 30]) == (0, 0, 255)
    pad = check_bmp(media.image_to_bmp(tmp_path / "w.png", fit="pad"))
    assert tuple(pad[0, 16]) == (0, 0, 0) and tuple(pad[16, 30]) == (0, 0, 255)


def test_image_errors_and_cli(tmp_path, capsys):
    Image.new("RGB", (10, 10), (1, 2, 3)).save(tmp_path / "ok_0.png")
    (tmp_path / "bad_0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "txt_0.jpg").write_text("hello")
    out = tmp_path / "out"
    assert (
        main(
            [
                "media",
                "image",
                str(tmp_path / "bad_0.png"),
                str(tmp_path / "ok_0.png"),
                str(tmp_path / "txt_0.jpg"),
                "--out",
                str(out),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "bad_0.png" in err[0] and "txt_0.jpg" in err[1]
    assert [p.name for p in out.iterdir()] == ["ok_0.bmp"]
    assert tuple(check_bmp(out / "ok_0.bmp")[0, 0]) == (1, 2, 3)


# ----------------------------------------------------------------------------- spectrograms


def test_spectrogram_tone_lands_in_its_band(tmp_path):
    for freq in (250, 1000, 3000):
        px = check_bmp(media.spectrogram_bmp(tone(freq, 8000, 1.0)))
        assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()  # grey
        band = int(np.argmax(convert._mel_filters(32, 512, 8000)[:, round(freq / 8000 * 512)]))
        rows = px[..., 0].astype(int).sum(axis=1)
        assert abs(int(np.argmax(rows)) - (31 - band)) <= 1  # low frequencies at the bottom
    silence = check_bmp(media.spectrogram_bmp(np.zeros(8000, np.float32)))
    assert (silence == 0).all()
    check_bmp(media.spectrogram_bmp(tone(500, 8000, 1.0), colormap="viridis"))
    with pytest.raises(BGPTError, match="colormap"):
        media.spectrogram_bmp(tone(500, 8000, 1.0), colormap="no-such-map")


def test_spectrogram_cli(tmp_path):
    write_wav(tmp_path / "go_0.wav", np.round(tone(700, 22050, 1.2) * 9000), 22050)
    assert (
        main(["media", "spectrogram", str(tmp_path / "go_0.wav"), "--out", str(tmp_path / "out")])
        == 0
    )
    check_bmp(tmp_path / "out" / "go_0.bmp")


# ----------------------------------------------------------------------------- sets


def test_split_helpers_are_deterministic():
    assert [sets._test_count(n, 0.2) for n in (1, 2, 5, 10, 100)] == [0, 1, 1, 2, 20]
    assert sets._unit("a", 1) == sets._unit("a", 1) != sets._unit("a", 2)
    keys = {"x": list(range(50)), "y": list(range(7))}
    a = sets._stratified(keys, 0.2, 0, "t", None)
    assert a == sets._stratified(keys, 0.2, 0, "t", None)
    assert a != sets._stratified(keys, 0.2, 1, "t", None)
    for train, test in a.values():
        assert not set(train) & set(test)
    assert [len(a[k][1]) for k in "xy"] == [10, 1]


def check_set(out: Path, ext: str) -> dict:
    """LABEL_N.ext names, unique N per label across splits, counts = manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    seen = {}
    for split in ("train", "test"):
        for p in (out / split).iterdir():
            assert p.suffix == ext
            label, n = p.stem.split("_")
            assert n.isdigit() and label in manifest["labels"]
            assert (label, n) not in seen
            seen[label, n] = split
        for label in manifest["labels"]:
            assert manifest["counts"][split][label] == len(
                list((out / split).glob(f"{label}_*{ext}"))
            )
    return manifest


def test_digits_set(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits"
    s = media.build_set("digits", out, per_label=5, labels=["0", "1", "7"])
    assert s["counts"] == {"train": {"0": 4, "1": 4, "7": 4}, "test": {"0": 1, "1": 1, "7": 1}}
    m = check_set(out, ".bmp")
    for p in out.rglob("*.bmp"):
        check_bmp(p)
    idx = {
        split: {v["index"] for k, v in m["files"].items() if k.startswith(split)}
        for split in ("train", "test")
    }
    assert not idx["train"] & idx["test"]
    # deterministic: same seed, same bytes; another seed, another selection
    media.build_set("digits", tmp_path / "again", per_label=5, labels=["0", "1", "7"])
    assert digest(out) == digest(tmp_path / "again")
    media.build_set(
        "digits",
        tmp_path / "seed1",
        per_label=5,
        labels=["0", "1", "7"],
        seed=1,
    )
    assert digest(out) != digest(tmp_path / "seed1")
    # the image is the digit: white ink on black, each pixel 4 x 4
    from sklearn.datasets import load_digits

    k = next(iter(m["files"]))
    px = check_bmp(out / k)
    ref = load_digits().images[m["files"][k]["index"]]
    assert (px[::4, ::4, 0] == np.round(ref * 255 / 16)).all()


def test_full_digits_counts(tmp_path):
    pytest.importorskip("sklearn")
    s = media.build_set("digits", tmp_path / "d")
    assert sum(s["counts"]["train"].values()) + sum(s["counts"]["test"].values()) == 1797
    assert sum(s["counts"]["test"].values()) == 359


def test_build_refuses_to_mix_sets(tmp_path, capsys):
    pytest.importorskip("sklearn")
    args = [
        "media",
        "build",
        "digits",
        "--out",
        str(tmp_path / "d"),
        "--per-label",
        "3",
        "--labels",
        "1,2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "total" in out and "majority class" in out and "byte 1-4-gram" in out
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["test"] == {"1": 1, "2": 1}
    assert (
        summary["baselines"]["majority"] == 0.5 and 0 <= summary["baselines"]["ngram_logreg"] <= 1
    )
    assert main(["media", "build", "digits", "--out", str(tmp_path / "x"), "--labels", "11"]) == 2
    assert (
        main(["media", "build", "digits", "--out", str(tmp_path / "x"), "--test-fraction", "1.5"])
        == 2
    )


def test_text_set(tmp_path):
    out = tmp_path / "text"
    s = media.build_set("text", out, per_label=6, labels=["asyncio", "email", "logging"])
    assert s["counts"]["train"] == {"asyncio": 5, "email": 5, "logging": 5}
    m = check_set(out, ".txt")
    for p in out.rglob("*.txt"):
        text = p.read_text(encoding="utf-8")
        assert len(text) > media.TEXT_MIN_CHARS
    sources = {
        split: {v["source"] for k, v in m["files"].items() if k.startswith(split)}
        for split in ("train", "test")
    }
    assert not sources["train"] & sources["test"]
    for k, v in m["files"].items():  # the label is the package the docstring comes from
        assert v["source"].startswith(k.split("/")[1].split("_")[0] + "/")
    media.build_set(
        "text",
        tmp_path / "again",
        per_label=6,
        labels=["asyncio", "email", "logging"],
    )
    assert digest(out) == digest(tmp_path / "again")


@pytest.mark.machine
def test_text_labels_are_stdlib_packages():
    docs = media.stdlib_docstrings()
    big = [p for p, v in docs.items() if len(v) >= media.TEXT_MIN_PER_LABEL]
    assert len(big) >= 8 and "asyncio" in big and "test" not in docs


@needs_espeak
def test_speech_set(tmp_path):
    out = tmp_path / "speech"
    s = media.build_set("speech", out, per_label=3, labels=["yes", "no", "stop"], jobs=2)
    assert s["counts"] == {
        "train": {"no": 2, "stop": 2, "yes": 2},
        "test": {"no": 1, "stop": 1, "yes": 1},
    }
    m = check_set(out, ".wav")
    for p in out.rglob("*.wav"):
        u8 = check_wav(p).astype(int) - 128
        assert np.abs(u8).max() > 100  # peak-normalised speech, not silence
        assert (np.abs(u8) > 8).mean() > 0.02  # a short word at speed is ~0.2 s
    voices = {
        split: {v["variant"] for k, v in m["files"].items() if k.startswith(split)}
        for split in ("train", "test")
    }
    assert not voices["train"] & voices["test"]
    media.build_set(
        "speech",
        tmp_path / "again",
        per_label=3,
        labels=["yes", "no", "stop"],
        jobs=1,
    )
    assert digest(out) == digest(tmp_path / "again")


@needs_espeak
def test_speech_speakers_split_and_spectrograms(tmp_path):
    variants = media.espeak_variants()
    assert len(variants) >= 50
    out = tmp_path / "sp"
    media.build_set("speech", out, per_label=2, labels=["left", "nine"], spectrogram=True)
    check_set(out, ".bmp")
    for p in out.rglob("*.bmp"):
        px = check_bmp(p)
        assert px.max() == 255
    with pytest.raises(BGPTError, match="lower-case"):
        media.build_set("speech", tmp_path / "bad", per_label=2, labels=["Bad_word"])


def test_filetype_checks_and_groups(tmp_path):
    head = {
        "elf": b"\x7fELF" + bytes(60),
        "png": b"\x89PNG\r\n\x1a\n" + bytes(56),
        "pdf": b"%PDF-1.5\n" + b"x" * 60,
    }
    for label, data in head.items():
        assert media.FILETYPES[label][1](data, tmp_path)
        assert not media.FILETYPES[label][1](b"plain text" * 8, tmp_path)
    py = tmp_path / "m.py"
    py.write_text("def f(x):\n    return x + 1\n" * 5)
    assert media.FILETYPES["python"][1](py.read_bytes(), py)
    py.write_text("print 'python 2'\n" * 5)
    assert not media.FILETYPES["python"][1](py.read_bytes(), py)
    assert filetypes._text_ok("é".encode() * 40 + "é".encode()[:1])  # a character cut at the end
    assert not filetypes._text_ok(b"abc\x00def")
    assert filetypes._candidate_label("/x/libfoo.so.6.0.1", "libfoo.so.6.0.1", "lib") == "elf"
    assert filetypes._candidate_label("/x/a.JSON", "a.JSON", "x") == "json"
    g = media.SourceGroups(dpkg_root=str(tmp_path / "no-dpkg"))
    assert (
        g.of("/usr/lib/python3.11/email/parser.py")
        == g.of("/opt/py/lib/python3.11/email/__pycache__/x.pyc")
        == "py-stdlib:email"
    )
    assert g.of("/usr/lib/python3.11/__pycache__/os.cpython-311.pyc") == "py-stdlib:os"
    assert g.of("/v/lib/python3.11/site-packages/six.py") == "py:six"
    assert g.of("/usr/lib/node_modules/npm/lib/x.js") == "npm:npm"
    assert g.of("/srv/a/b/c/d.txt") == "dir:srv/a/b"


@pytest.fixture(scope="module")
def filetypes_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "set"
    handler = _Collect()
    log = logging.getLogger("bgpt")
    log.addHandler(handler)
    try:
        summary = media.build_set("filetypes", out, per_label=3)
    finally:
        log.removeHandler(handler)
    return out, summary, handler.messages


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_filetypes_set(filetypes_set):
    out, summary, _ = filetypes_set
    m = check_set(out, ".bin")
    assert len(m["labels"]) >= 12, m["labels"]
    for lab in m["labels"]:
        assert m["counts"]["train"][lab] >= 1 and m["counts"]["test"][lab] >= 1
    for rel, info in m["files"].items():
        data = (out / rel).read_bytes()
        assert filetypes.FT_MIN_BYTES <= len(data) <= media.DEFAULT_MAX_BYTES == 8160
        with open(info["source"], "rb") as f:
            assert data == f.read(8160)  # the head of the real file
        assert media.FILETYPES[rel.split("/")[1].split("_")[0]][1](data, Path(info["source"]))
    groups = {
        split: {v["group"] for k, v in m["files"].items() if k.startswith(split)}
        for split in ("train", "test")
    }
    assert not groups["train"] & groups["test"]  # no source package on both sides
    hashes = [hashlib.sha256((out / rel).read_bytes()).digest() for rel in m["files"]]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.slow
def test_filetypes_set_is_deterministic(filetypes_set, tmp_path):
    out, _, _ = filetypes_set
    media.build_set("filetypes", tmp_path / "again", per_label=3)
    assert digest(out) == digest(tmp_path / "again")


@pytest.mark.machine
def test_filetypes_tools_benchmark_runs(filetypes_set, tmp_path):
    pytest.importorskip("magic", reason="python-magic is not installed")
    out, _, _ = filetypes_set
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "filetypes_tools.py"), str(out / "test"), "--tools", "libmagic",
                        "--json", str(tmp_path / "r.json")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    tool = report["tools"]["libmagic (python-magic)"]
    assert report["files"] == sum(report["counts"].values()) > 0
    assert 0.3 < tool["accuracy"] <= 1.0 and tool["files_per_s"] > 0
    assert tool["per_type"]["elf"] == 1.0

"""Digital media in the paper's formats, and labelled sets built from this machine alone.

Converters (one file in, the bytes of one file out):
- `audio_to_wav`: anything `soundfile` reads (WAV, FLAC, OGG, ...) -> 8 kHz mono unsigned 8-bit
  PCM WAV of exactly 1 s: 44-byte header + 8000 samples = 8044 bytes.
- `image_to_bmp`: anything Pillow reads -> 32 x 32 RGB 24-bit BMP: 54 + 32*32*3 = 3126 bytes.
- `spectrogram_to_bmp`: a 1 s clip -> 32 x 32 BMP log-mel spectrogram (the cross-modal probe).

Set builders (`build_set(name, out, ...)`) write `out/train/LABEL_N.ext` and `out/test/...`
plus `out/manifest.json` (options, counts, where each file came from); all are
deterministic for a given seed and machine:
- `speech`: espeak-ng speaking command words, many voice x speed x pitch variants; the
  espeak variants (the "speakers") of train and test are disjoint.
- `digits`: scikit-learn's bundled 8 x 8 handwritten digits as 32 x 32 BMP.
- `text`: docstrings of the Python standard library labelled by their package.
- `filetypes`: real files from this machine cut to the model's context, label = type,
  one source package never split across train and test.

Heavy dependencies (Pillow, scipy, scikit-learn, soundfile) are imported only when used.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import wave
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Hz: the paper's audio format
CLIP_SAMPLES = 8000  # exactly 1 s
WAV_BYTES = 44 + CLIP_SAMPLES  # 8044
IMAGE_SIZE = 32
BMP_BYTES = 54 + IMAGE_SIZE * IMAGE_SIZE * 3  # 3126 (rows of 96 bytes need no padding)
# Filetypes are cut to 510 patches of 16 bytes: with the header patch and the end patch
# a file is exactly the paper's 512-patch (8 KiB) context, so nothing is cropped.
DEFAULT_MAX_BYTES = 8192 - 2 * 16
SETS = ("speech", "digits", "text", "filetypes")


class MediaError(BGPTError):
    """One input file that cannot be converted (unreadable, not audio, not an image...)."""


def _need(module: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise BGPTError(
            f"{what} needs the {module.split('.')[0]} package: pip install 'bgpt[media]'"
        ) from None


# ----------------------------------------------------------------------------- audio


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples of any file `soundfile` reads (stdlib `wave` without it): float32 mono
    (channel mean) in [-1, 1], and the sample rate."""
    path = Path(path)
    try:
        import soundfile
    except ImportError:
        soundfile = None
    with open(path, "rb") as f:  # OSError (missing, unreadable) surfaces as itself
        if soundfile is not None:
            try:
                data, rate = soundfile.read(f, dtype="float32", always_2d=True)
            except (RuntimeError, TypeError, ValueError, EOFError) as e:
                msg = str(e).replace(f"Error opening {f!r}: ", "").strip() or type(e).__name__
                raise MediaError(f"not a readable audio file ({msg})") from None
        else:
            data, rate = _read_wave(f)
    if data.shape[0] == 0:
        raise MediaError("the audio has no samples")
    if rate <= 0:
        raise MediaError(f"bad sample rate {rate}")
    return data.mean(axis=1, dtype=np.float32), int(rate)


def _read_wave(f) -> tuple[np.ndarray, int]:
    """PCM WAV with the standard library (the fallback without soundfile): (frames, channels)."""
    try:
        with wave.open(f) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise MediaError(
            f"not a readable PCM WAV file ({e}; install soundfile for more formats)"
        ) from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width in (2, 4):
        x = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(1 << (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    else:
        raise MediaError(f"unsupported sample width {width} bytes")
    return x[: len(x) // channels * channels].reshape(-1, channels), rate


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy `resample_poly`, e.g. 160/441 for 22,050 Hz)."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    signal = _need("scipy.signal", "resampling audio")
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    if max(up, down) <= 2000:
        y = signal.resample_poly(x, up, down)
    else:  # a rate coprime with 8000 would need an enormous polyphase filter: use the FFT
        y = signal.resample(x, max(1, round(len(x) * target / rate)))
    return y.astype(np.float32)


def fit_clip(x: np.ndarray, start: int = 0) -> np.ndarray:
    """Samples start..start+8000 of an 8 kHz signal, padded with silence to exactly 1 s."""
    out = np.zeros(CLIP_SAMPLES, np.float32)
    part = x[start : start + CLIP_SAMPLES]
    out[: len(part)] = part
    return out


def to_u8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> unsigned 8-bit PCM (128 = silence), clipped."""
    return np.clip(np.round(x * 128.0) + 128, 0, 255).astype(np.uint8)


def wav_bytes(clip: np.ndarray) -> bytes:
    """An 8 kHz mono 8-bit WAV of a 1 s float clip: 8044 bytes."""
    if clip.shape != (CLIP_SAMPLES,):
        raise ValueError(f"a clip is {CLIP_SAMPLES} samples, got shape {clip.shape}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(to_u8(clip).tobytes())
    return buf.getvalue()


def load_clip(path: str | Path, offset: float = 0.0, normalize: bool = False) -> np.ndarray:
    """1 s at 8 kHz from `offset` seconds into any audio file: float32, shape (8000,)."""
    x, rate = read_audio(path)
    if offset < 0:
        raise MediaError("offset must be >= 0")
    if offset and round(offset * rate) >= len(x):
        raise MediaError(f"offset {offset} s is past the end ({len(x) / rate:.3f} s of audio)")
    x = resample(x[round(offset * rate) :], rate)
    clip = fit_clip(x)
    if normalize:
        clip = _peak_normalize(clip)
    return clip


def _peak_normalize(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.abs(x).max())
    return x * (peak / m) if m > 0 else x


def audio_to_wav(path: str | Path, offset: float = 0.0, normalize: bool = False) -> bytes:
    """Any audio file -> the paper's 8044-byte WAV (8 kHz, mono, unsigned 8-bit, 1 s)."""
    return wav_bytes(load_clip(path, offset, normalize))


# ----------------------------------------------------------------------------- images


def _bmp(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="BMP")
    return buf.getvalue()


def image_to_bmp(path: str | Path, fit: str = "crop") -> bytes:
    """Anything Pillow reads -> 32 x 32 RGB 24-bit BMP (3126 bytes).

    fit: 'crop' (centre square, then resize), 'stretch' (resize the whole image) or 'pad'
    (whole image, black borders). Transparency is composited on white; the first frame of
    an animation is used; EXIF orientation is applied.
    """
    Image = _need("PIL.Image", "converting images")
    ImageOps = _need("PIL.ImageOps", "converting images")
    if fit not in ("crop", "stretch", "pad"):
        raise BGPTError(f"fit must be crop, stretch or pad, not {fit!r}")
    with open(path, "rb") as f:  # OSError (missing, unreadable) surfaces as itself
        try:
            img = Image.open(f)
            img.load()
            img = ImageOps.exif_transpose(img)
        except Image.DecompressionBombError as e:
            raise MediaError(f"image too large ({e})") from None
        except Image.UnidentifiedImageError:
            raise MediaError("not an image format Pillow can read") from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
            raise MediaError(f"not a readable image ({e})") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB")
    size = (IMAGE_SIZE, IMAGE_SIZE)
    resample = Image.Resampling.LANCZOS
    if fit == "crop":
        img = ImageOps.fit(img, size, method=resample)
    elif fit == "stretch":
        img = img.resize(size, resample)
    else:
        img = ImageOps.pad(img, size, method=resample, color=(0, 0, 0))
    return _bmp(img)


# ----------------------------------------------------------------------------- spectrograms


def _mel_filters(n_mels: int, n_fft: int, rate: int) -> np.ndarray:
    """Triangular mel filterbank (HTK mel scale) from 0 Hz to Nyquist: (n_mels, n_fft//2+1)."""

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(0, mel(rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs[None] - lo) / (mid - lo)
    fall = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rise, fall))


def spectrogram(clip: np.ndarray, size: int = IMAGE_SIZE, top_db: float = 80.0) -> np.ndarray:
    """Log-mel spectrogram of a 1 s 8 kHz clip as a (size, size) uint8 image: rows are mel
    bands (highest at the top), columns are frames (hop 8000/size, Hann window of 512)."""
    n_fft, hop = 512, CLIP_SAMPLES // size
    padded = np.pad(clip.astype(np.float64), n_fft // 2)
    centres = hop // 2 + hop * np.arange(size)  # frame k centred at sample centre_k
    frames = padded[centres[:, None] + np.arange(n_fft)[None]]  # (T, n_fft)
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2  # (T, n_fft/2+1)
    mel = power @ _mel_filters(size, n_fft, SAMPLE_RATE).T  # (T, M)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    low = max(float(db.max()) - top_db, -100.0)  # silence stays black
    v = np.clip((db - low) / top_db, 0.0, 1.0)
    return np.round(v.T[::-1] * 255).astype(np.uint8)  # (M, T), low frequencies at the bottom


def spectrogram_bmp(clip: np.ndarray, colormap: str = "gray") -> bytes:
    """A 1 s clip -> 32 x 32 RGB BMP spectrogram (3126 bytes); colormap 'gray' or any
    matplotlib colormap name (e.g. 'viridis')."""
    Image = _need("PIL.Image", "writing spectrograms")
    v = spectrogram(clip)
    if colormap == "gray":
        rgb = np.repeat(v[..., None], 3, axis=2)
    else:
        import matplotlib

        try:
            cmap = matplotlib.colormaps[colormap]
        except KeyError:
            raise BGPTError(f"unknown colormap {colormap!r} (try gray or viridis)") from None
        rgb = np.round(cmap(v / 255.0)[..., :3] * 255).astype(np.uint8)
    return _bmp(Image.fromarray(rgb, "RGB"))


def spectrogram_to_bmp(path: str | Path, offset: float = 0.0, colormap: str = "gray") -> bytes:
    """Any audio file (1 s from `offset`, at 8 kHz) -> 32 x 32 BMP spectrogram."""
    return spectrogram_bmp(load_clip(path, offset), colormap)


# ----------------------------------------------------------------------------- converting files

CONVERTERS: dict[str, tuple[Callable[..., bytes], str]] = {
    "audio": (audio_to_wav, ".wav"),
    "image": (image_to_bmp, ".bmp"),
    "spectrogram": (spectrogram_to_bmp, ".bmp"),
}


def _expand(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """(file, output path relative to --out): files as themselves, folders recursively
    (hidden entries skipped) keeping their sub-folders."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        f = Path(dirpath) / name
                        out.append((f, f.relative_to(p)))
        else:
            out.append((p, Path(p.name)))
    return out


def convert_files(
    kind: str, inputs: Iterable[str | Path], out: str | Path, force: bool = False, **options
) -> tuple[list[Path], list[str]]:
    """Convert every input file (folders recursively) into `out`, keeping each file's name
    with the new extension. A file that fails gets one message in the returned error list
    (also logged as an error) and the rest still convert. Returns (written paths, errors).
    `out` is never an input folder nor inside one; an existing output file is an error for
    that file unless `force`, and never an input or a symlink."""
    from bgpt.files import atomic_write_bytes, check_output_file, check_output_folder

    convert, ext = CONVERTERS[kind]
    inputs = [str(i) for i in inputs]
    out = check_output_folder(out, inputs)
    written: list[Path] = []
    errors: list[str] = []
    claimed: dict[Path, Path] = {}
    for src, rel in _expand(inputs):
        target = out / rel.with_suffix(ext)
        try:
            if target in claimed:
                raise MediaError(f"same output name {target} as {claimed[target]}")
            check_output_file(target, [src], force)
            data = convert(src, **options)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        except (MediaError, BGPTError, OSError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            errors.append(f"{src}: {reason}")
            logger.error(f"{src}: {reason}")
            continue
        claimed[target] = src
        written.append(target)
    return written, errors


# ----------------------------------------------------------------------------- set plumbing


def _unit(*parts) -> float:
    """A deterministic number in [0, 1) from its arguments (SHA-256, independent of
    PYTHONHASHSEED and platform)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _test_count(n: int, fraction: float) -> int:
    """How many of n items go to test: round(n * fraction), but both splits non-empty when n >= 2."""
    k = round(n * fraction)
    return min(max(k, 1), n - 1) if n >= 2 else 0


def _stratified(
    keys: dict[str, list], fraction: float, seed: int, name: str, per_label: int | None
) -> dict[str, tuple[list, list]]:
    """Per label, order items by hash, keep the first `per_label`, send the first
    `_test_count` of those to test: (train, test) per label."""
    out = {}
    for label, items in keys.items():
        ordered = sorted(items, key=lambda k: (_unit(name, seed, label, k), str(k)))
        if per_label is not None:
            ordered = ordered[:per_label]
        k = _test_count(len(ordered), fraction)
        out[label] = (ordered[k:], ordered[:k])
    return out


@dataclass
class Item:
    """One file of a set before it is written: split, label, extension, bytes, provenance."""

    split: str
    label: str
    ext: str
    data: bytes
    meta: dict = field(default_factory=dict)


def _prepare_out(out: Path, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    held = [d for d in (out / "train", out / "test") if d.exists() and any(d.iterdir())]
    if held and not overwrite:
        raise BGPTError(
            f"{out} already holds a set ({held[0].name}/ is not empty); pass --overwrite to replace it"
        )
    for d in held:
        shutil.rmtree(d)


def write_set(name: str, out: str | Path, items: list[Item], options: dict) -> dict:
    """Write items as out/{train,test}/LABEL_N.ext (N counts per label over train then
    test, so names are unique across the whole set) and out/manifest.json; return the
    manifest (without its per-file list)."""
    out = Path(out)
    counters: dict[str, int] = defaultdict(int)
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    files = {}
    order = sorted(range(len(items)), key=lambda i: (items[i].label, items[i].split != "train", i))
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for i in order:
        it = items[i]
        if "_" in it.label or "/" in it.label or not it.label:
            raise BGPTError(f"bad label {it.label!r}: labels cannot be empty or contain '_' or '/'")
        rel = f"{it.split}/{it.label}_{counters[it.label]}{it.ext}"
        counters[it.label] += 1
        (out / rel).write_bytes(it.data)
        counts[it.split][it.label] = counts[it.split].get(it.label, 0) + 1
        files[rel] = {"bytes": len(it.data), **it.meta}
    labels = sorted(set(counts["train"]) | set(counts["test"]))
    manifest = {
        "set": name,
        "options": options,
        "labels": labels,
        "counts": {s: {lab: counts[s].get(lab, 0) for lab in labels} for s in ("train", "test")},
        "files": files,
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8"
    )
    return {k: v for k, v in manifest.items() if k != "files"}


def _select_labels(available: list[str], wanted: list[str] | None, what: str) -> list[str]:
    if not wanted:
        return available
    missing = [w for w in wanted if w not in available]
    if missing:
        raise BGPTError(f"unknown {what} {', '.join(missing)} (available: {', '.join(available)})")
    return [w for w in available if w in wanted]


# ----------------------------------------------------------------------------- speech

SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # fmt: skip
SPEECH_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")  # fmt: skip
SPEECH_SPEED = (120, 220)  # words per minute, sampled uniformly (espeak's default is 175)
SPEECH_PITCH = (10, 90)  # espeak pitch 0..99 (default 50)
SPEECH_MAX_VOICED = 0.95  # s: a slower clip is re-spoken 40 wpm faster until it fits


def espeak_variants() -> list[str]:
    """espeak-ng's voice variants ('+NAME' speakers), sorted; names with spaces and the
    'fast' test variant are left out."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BGPTError("the speech set needs espeak-ng (Debian: apt-get install espeak-ng)")
    listing = subprocess.run(
        [exe, "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    # the File column ends at two spaces (a language list can follow) or at the line's end
    names = {m.group(1) for m in re.finditer(r"!v/(\S+(?: \S+)*?)(?: {2,}|[ \t]*$)", listing, re.M)}
    return sorted((n for n in names if " " not in n and n != "fast"), key=str.lower)


def speak(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of a word: float32 samples and rate (22,050 Hz)."""
    r = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                       capture_output=True, check=False)  # fmt: skip
    b = r.stdout
    # espeak streams its WAV, so the RIFF and data sizes are placeholders: find the chunks.
    fmt, data = b.find(b"fmt "), b.find(b"data")
    if r.returncode or fmt < 0 or data < 0:
        raise BGPTError(
            f"espeak-ng failed for {word!r} with voice {voice}: {r.stderr.decode(errors='replace').strip()}"
        )
    rate = int.from_bytes(b[fmt + 12 : fmt + 16], "little")
    pcm = b[data + 8 :]
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    return x, rate


def _voiced(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """The part of x between the first and last sample above threshold x peak."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    idx = np.nonzero(np.abs(x) > threshold * peak)[0] if peak > 0 else []
    return x[idx[0] : idx[-1] + 1] if len(idx) else x[:0]


def speech_clip(
    word: str, accent: str, variant: str, speed: int, pitch: int, place: float
) -> tuple[np.ndarray, int]:
    """One 1 s clip: speak, trim silence, re-speak faster if too long, resample to 8 kHz,
    peak-normalise to 0.9, place the word at fraction `place` of the free time.
    Returns (clip, speed actually used)."""
    while True:
        x, rate = speak(word, f"{accent}+{variant}", speed, pitch)
        x = _voiced(x)
        if len(x) <= SPEECH_MAX_VOICED * rate or speed >= 450:
            break
        speed += 40
    if not len(x):
        raise BGPTError(f"espeak-ng produced silence for {word!r} ({accent}+{variant})")
    x = _peak_normalize(resample(x, rate))[:CLIP_SAMPLES]
    start = int(place * (CLIP_SAMPLES - len(x)))
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    clip[start : start + len(x)] = x
    return clip, speed


def build_speech(
    out, test_fraction=0.2, per_label=100, labels=None, seed=0, jobs=2, spectrogram=False, **_
) -> list[Item]:
    """Words spoken by espeak-ng. Speakers (espeak variants) are split by hash: test
    speakers never occur in train (in any accent); every word has round(n*fraction) test
    clips. Each clip draws accent, variant, speed and pitch with a seeded generator."""
    words = list(labels) if labels else list(SPEECH_WORDS)
    for w in words:
        if not re.fullmatch(r"[a-z][a-z'-]*", w):
            raise BGPTError(f"speech labels must be lower-case words without '_', not {w!r}")
    n = per_label or 100
    if n < 2:
        raise BGPTError(
            "--per-label must be at least 2 for the speech set (one train and one test clip)"
        )
    variants = sorted(espeak_variants(), key=lambda v: (_unit("speech-voice", seed, v), v))
    k = _test_count(len(variants), test_fraction)
    speakers = {
        "test": sorted(variants[:k], key=str.lower),
        "train": sorted(variants[k:], key=str.lower),
    }
    jobs_list = []
    for word in words:
        n_test = _test_count(n, test_fraction)
        for split, count in (("train", n - n_test), ("test", n_test)):
            rng = random.Random(f"bgpt-speech:{seed}:{word}:{split}")
            seen = set()
            while len(seen) < count:
                combo = (rng.choice(SPEECH_ACCENTS), rng.choice(speakers[split]),
                         rng.randint(*SPEECH_SPEED), rng.randint(*SPEECH_PITCH))  # fmt: skip
                place = rng.random()
                if combo not in seen:
                    seen.add(combo)
                    jobs_list.append((split, word, *combo, place))

    def render(job):
        split, word, accent, variant, speed, pitch, place = job
        clip, used = speech_clip(word, accent, variant, speed, pitch, place)
        data = spectrogram_bmp(clip) if spectrogram else wav_bytes(clip)
        meta = {"accent": accent, "variant": variant, "speed": used, "pitch": pitch}
        return Item(split, word, ".bmp" if spectrogram else ".wav", data, meta)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(render, jobs_list))


# ----------------------------------------------------------------------------- digits


def build_digits(out, test_fraction=0.2, per_label=None, labels=None, seed=0, **_) -> list[Item]:
    """scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, ink 0..16) as
    32 x 32 RGB BMP: white ink on black, each pixel repeated 4 x 4. Stratified hash split."""
    datasets = _need("sklearn.datasets", "the digits set")
    Image = _need("PIL.Image", "the digits set")
    d = datasets.load_digits()
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(d.target):
        by_label[str(int(t))].append(i)
    chosen = _select_labels(sorted(by_label), labels, "digits")
    split = _stratified(
        {lab: by_label[lab] for lab in chosen}, test_fraction, seed, "digits", per_label
    )
    items = []
    for lab in chosen:
        for part, idx in zip(("train", "test"), split[lab], strict=True):
            for i in sorted(idx):
                pixels = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)  # (8, 8)
                img = Image.fromarray(pixels, "L").resize(
                    (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST
                )
                items.append(Item(part, lab, ".bmp", _bmp(img), {"index": int(i)}))
    return items


# ----------------------------------------------------------------------------- text

TEXT_MIN_CHARS = 60  # shorter docstrings ("Return self.") carry no topic
TEXT_MIN_PER_LABEL = 60  # a package becomes a class with at least this many docstrings
TEXT_SKIP_PACKAGES = {"test", "encodings", "turtledemo", "site-packages", "dist-packages",
                      "lib-dynload", "__pycache__", "pydoc_data"}  # fmt: skip
TEXT_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__"}


def stdlib_docstrings(stdlib: str | Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """Docstrings (module, class, function) of the standard library's packages, test
    suites left out, exact duplicates and ones under TEXT_MIN_CHARS dropped:
    package -> [(where, text)] in file order. Parsed once per process."""
    return _stdlib_docstrings(str(stdlib or sysconfig.get_paths()["stdlib"]))


@functools.cache
def _stdlib_docstrings(stdlib: str) -> dict[str, list[tuple[str, str]]]:
    root = Path(stdlib)
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for top in sorted(os.listdir(root)):
        pkg = root / top
        if (
            top in TEXT_SKIP_PACKAGES
            or top.startswith("config-")
            or not (pkg / "__init__.py").is_file()
        ):
            continue
        for dirpath, dirnames, filenames in os.walk(pkg):
            dirnames[:] = sorted(d for d in dirnames if d not in TEXT_SKIP_DIRS)
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = Path(dirpath) / name
                try:
                    tree = ast.parse(path.read_bytes())
                except (SyntaxError, ValueError, OSError):
                    continue
                rel = path.relative_to(root).as_posix()
                for node in ast.walk(tree):
                    if isinstance(
                        node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
                    ):
                        doc = ast.get_docstring(node)
                        if doc and len(doc) >= TEXT_MIN_CHARS and doc not in seen:
                            seen.add(doc)
                            out[top].append((f"{rel}:{getattr(node, 'lineno', 0)}", doc))
    return dict(out)


def build_text(out, test_fraction=0.2, per_label=None, labels=None, seed=0, **_) -> list[Item]:
    """Docstrings of the running Python's standard library labelled by package (asyncio,
    email, tkinter, ...): English prose with a natural topic label, like AG News.
    Packages with fewer than TEXT_MIN_PER_LABEL docstrings are left out."""
    docs = stdlib_docstrings()
    available = sorted(p for p, v in docs.items() if len(v) >= TEXT_MIN_PER_LABEL and "_" not in p)
    chosen = _select_labels(available, labels, "packages")
    split = _stratified(
        {p: [w for w, _ in docs[p]] for p in chosen}, test_fraction, seed, "text", per_label
    )
    text = {(p, w): t for p in chosen for w, t in docs[p]}
    items = []
    for p in chosen:
        for part, keys in zip(("train", "test"), split[p], strict=True):
            for w in sorted(keys):
                items.append(
                    Item(part, p, ".txt", (text[p, w] + "\n").encode("utf-8"), {"source": w})
                )
    return items


# ----------------------------------------------------------------------------- file types

FT_MIN_BYTES = 64


def _text_ok(head: bytes) -> bool:
    """UTF-8 without NUL bytes (a multi-byte character cut at the end is allowed)."""
    if b"\x00" in head:
        return False
    for cut in range(4):
        try:
            head[: len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _py_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head) or path.stat().st_size > 1 << 20:
        return False
    try:
        ast.parse(path.read_bytes())
        return True
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return False


def _json_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head) or path.stat().st_size > 4 << 20:
        return False
    try:
        json.loads(path.read_bytes())
        return True
    except (ValueError, OSError, RecursionError):
        return False


def _starts(*magics: bytes) -> Callable[[bytes, Path], bool]:
    return lambda head, path: head.startswith(magics)


def _text_with(pattern: str) -> Callable[[bytes, Path], bool]:
    rx = re.compile(pattern.encode(), re.I | re.M)
    return lambda head, path: _text_ok(head) and rx.search(head) is not None


def _text(head: bytes, path: Path) -> bool:
    return _text_ok(head)


def _shell_ok(head: bytes, path: Path) -> bool:
    if not _text_ok(head):
        return False
    return (
        not head.startswith(b"#!")
        or re.match(rb"#![ \t]*\S*/(?:env[ \t]+)?(?:ba|da|z)?sh\b", head) is not None
    )


# label -> (extensions, ground-truth check on the file's first bytes (the path for a full
# parse)). A file is taken only when its extension says the type AND its content agrees.
FILETYPES: dict[str, tuple[tuple[str, ...], Callable[[bytes, Path], bool]]] = {
    "elf": ((".so", ".o"), _starts(b"\x7fELF")),  # + shared objects .so.N and programs in bin/
    "python": ((".py",), _py_ok),
    "pyc": ((".pyc",), lambda h, p: len(h) >= 16 and h[2:4] == b"\r\n"),
    "c": (
        (".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh"),
        _text,
    ),  # C and C++, sources and headers
    "html": ((".html", ".htm"), _text_with(r"<(?:!doctype\s+html|html|head|body)\b")),
    "json": ((".json",), _json_ok),
    "xml": ((".xml",), _text_with(r"\A(?:\xef\xbb\xbf)?\s*<[?!a-z]")),
    "svg": ((".svg",), _text_with(r"<svg\b")),
    "png": ((".png",), _starts(b"\x89PNG\r\n\x1a\n")),
    "gif": ((".gif",), _starts(b"GIF87a", b"GIF89a")),
    "jpeg": ((".jpg", ".jpeg"), _starts(b"\xff\xd8\xff")),
    "gzip": ((".gz", ".tgz"), _starts(b"\x1f\x8b\x08")),
    "zip": ((".zip", ".whl", ".jar"), _starts(b"PK\x03\x04")),
    "pdf": ((".pdf",), _starts(b"%PDF-")),
    "postscript": ((".ps", ".eps"), _starts(b"%!PS")),
    "ttf": ((".ttf",), _starts(b"\x00\x01\x00\x00", b"true")),
    "mo": ((".mo",), _starts(b"\xde\x12\x04\x95", b"\x95\x04\x12\xde")),  # gettext catalogues
    "shell": ((".sh", ".bash"), _shell_ok),  # + '#!/bin/sh' programs in bin/
    "markdown": ((".md",), _text),
    "rst": ((".rst",), _text),
    "javascript": ((".js", ".mjs"), _text),
    "css": ((".css",), _text),
    "perl": ((".pl", ".pm"), _text),
    "yaml": ((".yaml", ".yml"), _text_with(r"^[\w\"'-][^\n:]*:(?:\s|$)|^---")),
    "cmake": ((".cmake",), _text),
}
FT_BY_EXT = {ext: label for label, (exts, _) in FILETYPES.items() for ext in exts}
_SO = re.compile(r"\.so(?:\.\d+)+$")
_BIN_DIRS = {"bin", "sbin", "libexec"}


def default_roots() -> list[Path]:
    """/usr, the running Python's standard library and headers, and its site-packages.
    /etc and home folders are left out on purpose (configuration can hold secrets)."""
    import site

    paths = sysconfig.get_paths()
    cands = [
        "/usr",
        paths["stdlib"],
        paths["platstdlib"],
        paths["include"],
        paths["purelib"],
        paths["platlib"],
    ]
    try:
        cands += site.getsitepackages()
    except AttributeError:  # old virtualenv's site module
        pass
    roots: list[Path] = []
    for c in sorted({os.path.realpath(c) for c in cands if c and os.path.isdir(c)}):
        if not any(c == str(r) or c.startswith(str(r) + os.sep) for r in roots):
            roots.append(Path(c))
    return roots


class SourceGroups:
    """The source package a file comes from, so that no package is split across train
    and test:
    - Python trees: 'py:<distribution>' for site-/dist-packages (the distribution from
      RECORD or top_level.txt, else the top-level name), 'py-stdlib:<top-level module>'
      for the standard library (any copy of it: Debian's and the running Python's),
      'py-stdlib:include' for its C headers;
    - the Debian source package that owns the file ('deb:<source>', from /var/lib/dpkg),
      or, for a file dpkg does not list (generated .pyc, caches), the owner of its nearest
      folder that only one source package lists (at least three levels deep, e.g.
      /usr/lib/google-cloud-sdk);
    - 'npm:<package>' under node_modules;
    - otherwise 'dir:' + the first three folders of its path.
    """

    _PY = re.compile(
        r"/lib/python\d(?:\.\d+)?/(?:(site-packages|dist-packages)/)?([^/]+)(?:/([^/]+))?"
    )
    _PY_INCLUDE = re.compile(r"/include/python\d\.\d+")
    _NPM = re.compile(r"/node_modules/((?:@[^/]+/)?[^/]+)")

    def __init__(self, dpkg_root: str = "/var/lib/dpkg"):
        self.owner = self._dpkg_owners(Path(dpkg_root))
        self._dists: dict[str, dict[str, str]] = {}

    @staticmethod
    def _dpkg_owners(root: Path) -> dict[str, str]:
        """Listed path -> Debian source package ('' when several source packages list it)."""
        source: dict[str, str] = {}
        try:
            status = (root / "status").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
        for block in status.split("\n\n"):
            fields = dict(re.findall(r"^(Package|Source): *(\S+)", block, re.M))
            if "Package" in fields:
                source[fields["Package"]] = fields.get("Source", fields["Package"])
        owner: dict[str, str] = {}
        info = root / "info"
        for lst in sorted(info.glob("*.list")) if info.is_dir() else []:
            pkg = lst.stem.split(":")[0]
            src = source.get(pkg, pkg)
            try:
                for line in lst.read_text(encoding="utf-8", errors="replace").splitlines():
                    owner[line] = src if owner.get(line, src) == src else ""
            except OSError:
                continue
        return owner

    def _owned(self, path: str) -> str | None:
        for p in (path, path[4:]) if path.startswith("/usr/") else (path,):
            if p in self.owner:
                return self.owner[p]
        return None

    def _dist_map(self, site_dir: str) -> dict[str, str]:
        """top-level name -> distribution name, from *.dist-info/RECORD and *.egg-info/top_level.txt."""
        if site_dir in self._dists:
            return self._dists[site_dir]
        m: dict[str, str] = {}
        try:
            entries = sorted(os.listdir(site_dir))
        except OSError:
            entries = []
        for e in entries:
            if not e.endswith((".dist-info", ".egg-info")):
                continue
            dist = _norm(e.rsplit(".", 1)[0].split("-")[0])
            base = Path(site_dir) / e
            try:
                if (base / "RECORD").is_file():
                    for line in (
                        (base / "RECORD").read_text(encoding="utf-8", errors="replace").splitlines()
                    ):
                        top = line.split(",", 1)[0].split("/", 1)[0]
                        if (
                            top
                            and not top.endswith((".dist-info", ".egg-info", ".data"))
                            and top != ".."
                        ):
                            m.setdefault(_norm(_module_name(top)), dist)
                elif (base / "top_level.txt").is_file():
                    for top in (
                        (base / "top_level.txt")
                        .read_text(encoding="utf-8", errors="replace")
                        .split()
                    ):
                        m.setdefault(_norm(top), dist)
            except OSError:
                continue
        self._dists[site_dir] = m
        return m

    def of(self, path: str) -> str:
        m = self._PY.search(path)
        if m:
            kind, top, sub = m.groups()
            if kind:  # site-packages / dist-packages
                site_dir = path[: m.end(1)]
                if top.endswith((".dist-info", ".egg-info")):
                    return "py:" + _norm(top.rsplit(".", 1)[0].split("-")[0])
                name = _norm(_module_name(top))
                return "py:" + self._dist_map(site_dir).get(name, name)
            if top == "__pycache__" and sub:
                top = sub
            return "py-stdlib:" + _module_name(top)
        if self._PY_INCLUDE.search(path):
            return "py-stdlib:include"
        src = self._owned(path)
        if src:
            return "deb:" + src
        if src is None:  # not listed: the nearest folder one source package owns
            parent = os.path.dirname(path)
            while len(Path(parent).parts) >= 4:  # '/', 'usr', 'lib', 'x'
                src = self._owned(parent)
                if src is not None:
                    if src:
                        return "deb:" + src
                    break
                parent = os.path.dirname(parent)
        m = self._NPM.search(path)
        if m:
            return "npm:" + m.group(1)
        return "dir:" + "/".join(Path(path).parts[1:4])


def _module_name(name: str) -> str:
    """'six.py' -> 'six', '_ssl.cpython-311-x86_64-linux-gnu.so' -> '_ssl', 'email' -> 'email'."""
    return name.split(".", 1)[0] if "." in name else name


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _candidate_label(path: str, name: str, parent: str) -> str | None:
    """The type a file claims by its name (None: not a candidate). Programs without an
    extension in a bin/ folder are looked at by their first bytes (ELF or shell script)."""
    dot = name.rfind(".")
    if dot > 0:
        label = FT_BY_EXT.get(name[dot:].lower())
        if label:
            return label
        return "elf" if _SO.search(name) else None
    if dot < 0 and parent in _BIN_DIRS:
        try:
            with open(path, "rb") as f:
                head = f.read(64)
        except OSError:
            return None
        if head.startswith(b"\x7fELF"):
            return "elf"
        if head.startswith(b"#!") and _shell_ok(head, Path(path)):
            return "shell"
    return None


def scan_filetypes(
    roots: Iterable[str | Path], exclude: Iterable[str | Path] = ()
) -> dict[str, dict[str, list[str]]]:
    """Candidate files under roots by name: label -> group -> sorted paths. Symbolic links
    are skipped; nothing is opened or stat'ed except extension-less programs in bin/
    (sizes and contents are checked when files are taken)."""
    groups = SourceGroups()
    skip = {os.path.realpath(e) for e in exclude}
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    stack = [str(r) for r in reversed(list(roots))]
    while stack:
        folder = stack.pop()
        if folder in skip:
            continue
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        parent = os.path.basename(folder)
        subdirs = []
        for e in entries:
            try:
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(e.path)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            label = _candidate_label(e.path, e.name, parent)
            if label:
                found[label][groups.of(e.path)].append(e.path)
        stack.extend(reversed(subdirs))
    return {lab: {g: sorted(p) for g, p in gs.items()} for lab, gs in found.items()}


FT_MARGIN = 1.5  # candidates wanted per file to take: some fail the content check


def _assign_groups(
    found: dict[str, dict[str, list[str]]],
    quotas: tuple[int, int],
    fraction: float,
    seed: int,
) -> tuple[set[str], list[str]]:
    """Which source packages go to test. All start in train; in hash order (seeded, so the
    choice is random but repeatable) a package moves to test when one of its types still
    lacks test candidates (FT_MARGIN x its test quota) and moving it leaves every one of
    its types enough train candidates (FT_MARGIN x the train quota, or half of a rare
    type's candidates, so a rare type's test side can reach half its files). Types found
    in one package only, or
    that end with an empty side, are left out. Returns (test packages, kept types)."""
    q_train, q_test = quotas
    total = {lab: sum(map(len, gs.values())) for lab, gs in found.items()}
    labels = []
    for lab in sorted(found):
        if len(found[lab]) >= 2:
            labels.append(lab)
        else:
            logger.warning(
                f"type {lab} left out: found in one source package only ({next(iter(found[lab]))})"
            )
    in_group: dict[str, dict[str, int]] = defaultdict(dict)
    for lab in labels:
        for g, paths in found[lab].items():
            in_group[g][lab] = len(paths)
    train = dict(total)
    test = dict.fromkeys(total, 0)
    keep = {lab: min(FT_MARGIN * q_train, 0.5 * total[lab]) for lab in labels}
    test_groups: set[str] = set()
    for g in sorted(in_group, key=lambda g: (_unit("filetypes-group", seed, g), g)):
        counts = in_group[g]
        wanted = any(test[lab] < FT_MARGIN * q_test for lab in counts)
        if wanted and all(train[lab] - c >= keep[lab] for lab, c in counts.items()):
            test_groups.add(g)
            for lab, c in counts.items():
                train[lab] -= c
                test[lab] += c
    kept = []
    for lab in labels:
        if train[lab] and test[lab]:
            kept.append(lab)
        else:
            logger.warning(f"type {lab} left out: its source packages cannot be put on both sides")
    return test_groups, kept


def build_filetypes(
    out,
    test_fraction=0.2,
    per_label=100,
    labels=None,
    seed=0,
    max_bytes=DEFAULT_MAX_BYTES,
    roots=None,
    **_,
) -> list[Item]:
    """Real files of this machine, cut to `max_bytes`, labelled by type.

    Ground truth: the extension AND a content check (magic bytes; UTF-8 text; a full
    parse for Python and JSON). Source packages (SourceGroups) are split by
    `_assign_groups`, so no package has files on both sides; within a side files are taken
    round-robin over packages (hash order), so no package dominates a type. A test file is
    skipped when its cut bytes or its (type, file name) equal a train file's (vendored
    copies such as doctools.js or six.py across packages), and any file whose cut bytes
    repeat an earlier one is skipped. Files get the neutral extension .bin: the header
    patch must not give the type away."""
    if max_bytes < FT_MIN_BYTES:
        raise BGPTError(f"--max-bytes must be at least {FT_MIN_BYTES}")
    n = per_label or 100
    if n < 2:
        raise BGPTError("--per-label must be at least 2 (one train and one test file)")
    found = scan_filetypes([Path(r) for r in roots] if roots else default_roots(), exclude=[out])
    if labels:
        _select_labels(sorted(FILETYPES), labels, "file types")
        found = {lab: gs for lab, gs in found.items() if lab in labels}
    n_test = _test_count(n, test_fraction)
    test_groups, kept = _assign_groups(found, (n - n_test, n_test), test_fraction, seed)
    seen: set[bytes] = set()
    train_names: set[tuple[str, str]] = set()
    items: list[Item] = []
    for split, quota in (
        ("train", n - n_test),
        ("test", n_test),
    ):  # train first: test never repeats it
        for lab in kept:
            check = FILETYPES[lab][1]
            groups = sorted((g for g in found[lab] if (g in test_groups) == (split == "test")),
                            key=lambda g: (_unit("filetypes-group", seed, g), g))  # fmt: skip
            queues = [
                sorted(found[lab][g], key=lambda p: (_unit("filetypes-file", seed, p), p))
                for g in groups
            ]
            taken, pos = 0, [0] * len(queues)
            while taken < quota and any(pos[i] < len(q) for i, q in enumerate(queues)):
                for i, q in enumerate(queues):  # one file per package per round
                    while taken < quota and pos[i] < len(q):
                        path = q[pos[i]]
                        pos[i] += 1
                        if split == "test" and (lab, os.path.basename(path)) in train_names:
                            continue
                        try:
                            with open(path, "rb") as f:
                                head = f.read(max_bytes)
                            ok = len(head) >= FT_MIN_BYTES and check(head, Path(path))
                        except OSError:
                            ok = False
                        digest = hashlib.sha256(head).digest() if ok else b""
                        if ok and digest not in seen:
                            seen.add(digest)
                            if split == "train":
                                train_names.add((lab, os.path.basename(path)))
                            meta = {
                                "source": path,
                                "group": groups[i],
                                "size": os.path.getsize(path),
                            }
                            items.append(Item(split, lab, ".bin", head, meta))
                            taken += 1
                            break
            if taken < quota:
                logger.warning(f"type {lab}: {taken} of {quota} {split} files found")
    return items


# ----------------------------------------------------------------------------- build


DEFAULT_PER_LABEL: dict[str, int | None] = {
    "speech": 100,
    "digits": None,
    "text": None,
    "filetypes": 100,
}
BUILDERS: dict[str, Callable[..., list[Item]]] = {
    "speech": build_speech,
    "digits": build_digits,
    "text": build_text,
    "filetypes": build_filetypes,
}


def build_set(name: str, out: str | Path, *, test_fraction: float = 0.2, per_label: int | None = None,
              labels: list[str] | None = None, seed: int = 0, overwrite: bool = False,
              **options) -> dict:  # fmt: skip
    """Build the labelled set `name` into out/train and out/test (+ out/manifest.json);
    return the manifest summary (options, labels, counts per split and label)."""
    if name not in BUILDERS:
        raise BGPTError(f"unknown set {name!r} (choose from {', '.join(SETS)})")
    if not 0.0 < test_fraction < 1.0:
        raise BGPTError("--test-fraction must be between 0 and 1")
    if per_label is not None and per_label < 1:
        raise BGPTError("--per-label must be >= 1")
    if per_label is None:
        per_label = DEFAULT_PER_LABEL[name]
    out = Path(out)
    _prepare_out(out, overwrite)
    items = BUILDERS[name](
        out,
        test_fraction=test_fraction,
        per_label=per_label,
        labels=labels,
        seed=seed,
        **options,
    )
    if not items:
        raise BGPTError(f"the {name} set came out empty")
    record = {"test_fraction": test_fraction, "per_label": per_label, "labels": labels, "seed": seed,
              **{k: v for k, v in options.items() if k != "jobs"},
              "python": sys.version.split()[0]}  # fmt: skip
    if "roots" in record and record["roots"] is not None:
        record["roots"] = [str(r) for r in record["roots"]]
    return write_set(name, out, items, record)


def format_counts(manifest: dict) -> str:
    """A table of files per label and split."""
    c = manifest["counts"]
    width = max(8, *(len(lab) for lab in manifest["labels"]))
    lines = [f"{'label':<{width}} {'train':>7} {'test':>7}"]
    for lab in manifest["labels"]:
        lines.append(f"{lab:<{width}} {c['train'][lab]:>7} {c['test'][lab]:>7}")
    tr, te = sum(c["train"].values()), sum(c["test"].values())
    lines.append(f"{'total':<{width}} {tr:>7} {te:>7}")
    return "\n".join(lines)

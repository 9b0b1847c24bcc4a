"""Converters into the paper's media formats (one file in, the bytes of one file out).

- `audio_to_wav`: anything `soundfile` reads (WAV, FLAC, OGG, ...) -> 8 kHz mono unsigned 8-bit
  PCM WAV of exactly 1 s: 44-byte header + 8000 samples = 8044 bytes.
- `image_to_bmp`: anything Pillow reads -> 32 x 32 RGB 24-bit BMP: 54 + 32*32*3 = 3126 bytes.
- `spectrogram_to_bmp`: a 1 s clip -> 32 x 32 BMP log-mel spectrogram (the cross-modal probe).
- `convert_files`: any of them over files and folders, one error line per failing file.

Heavy dependencies (Pillow, scipy, soundfile) are imported only when used.
"""

from __future__ import annotations

import io
import logging
import math
import os
import wave
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from bgpt.errors import BGPTError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Hz: the paper's audio format
CLIP_SAMPLES = 8000  # exactly 1 s
WAV_BYTES = 44 + CLIP_SAMPLES  # 8044
IMAGE_SIZE = 32
BMP_BYTES = 54 + IMAGE_SIZE * IMAGE_SIZE * 3  # 3126 (rows of 96 bytes need no padding)


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

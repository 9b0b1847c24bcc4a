"""The `speech` set: espeak-ng speaking command words, many voice x speed x pitch variants;
the espeak variants (the "speakers") of train and test are disjoint."""

from __future__ import annotations

import logging
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bgpt.errors import BGPTError
from bgpt.tasks.media.convert import (
    CLIP_SAMPLES,
    _peak_normalize,
    resample,
    spectrogram_bmp,
    wav_bytes,
)
from bgpt.tasks.media.sets import Item, _test_count, _unit

logger = logging.getLogger(__name__)

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

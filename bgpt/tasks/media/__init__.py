"""Digital media in the paper's formats, and labelled sets built from this machine alone.

- `convert`: one file in, the bytes of one file out (`audio_to_wav`, `image_to_bmp`,
  `spectrogram_to_bmp`) and `convert_files` over files and folders.
- `sets`: the plumbing every set shares (deterministic splits, `Item`, `write_set`).
- one module per set builder: `speech`, `digits`, `text`, `filetypes`.
- `build`: `build_set(name, out, ...)` writes `out/train/LABEL_N.ext`, `out/test/...` and
  `out/manifest.json` (options, counts, where each file came from), deterministic for a
  given seed and machine.

Heavy dependencies (Pillow, scipy, scikit-learn, soundfile) are imported only when used.
"""

from bgpt.tasks.media.build import BUILDERS, DEFAULT_PER_LABEL, SETS, build_set, format_counts
from bgpt.tasks.media.convert import (
    BMP_BYTES,
    CLIP_SAMPLES,
    CONVERTERS,
    IMAGE_SIZE,
    SAMPLE_RATE,
    WAV_BYTES,
    MediaError,
    audio_to_wav,
    convert_files,
    image_to_bmp,
    load_clip,
    read_audio,
    spectrogram,
    spectrogram_bmp,
    spectrogram_to_bmp,
    wav_bytes,
)
from bgpt.tasks.media.filetypes import DEFAULT_MAX_BYTES, FILETYPES, SourceGroups, scan_filetypes
from bgpt.tasks.media.sets import Item, write_set
from bgpt.tasks.media.speech import espeak_variants
from bgpt.tasks.media.text import TEXT_MIN_CHARS, TEXT_MIN_PER_LABEL, stdlib_docstrings

__all__ = [
    "BMP_BYTES", "BUILDERS", "CLIP_SAMPLES", "CONVERTERS", "DEFAULT_MAX_BYTES", "DEFAULT_PER_LABEL",
    "FILETYPES", "IMAGE_SIZE", "SAMPLE_RATE", "SETS", "TEXT_MIN_CHARS", "TEXT_MIN_PER_LABEL",
    "WAV_BYTES", "Item", "MediaError", "SourceGroups", "audio_to_wav", "build_set",
    "convert_files", "espeak_variants", "format_counts", "image_to_bmp", "load_clip",
    "read_audio", "scan_filetypes", "spectrogram", "spectrogram_bmp", "spectrogram_to_bmp",
    "stdlib_docstrings", "wav_bytes", "write_set",
]  # fmt: skip

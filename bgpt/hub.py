"""Models by name from the Hugging Face Hub: `hf://OWNER/REPO/FILE[@REVISION]`.

Everywhere a MODEL is taken (`bgpt.load`, every command), such a path is fetched with
`huggingface_hub` (the `hub` extra) into its standard cache (`HF_HOME`, `HF_HUB_CACHE`),
offline from that cache when `HF_HUB_OFFLINE=1`, and then loaded exactly like a local file:
a `.pth` weights-only. Nothing is downloaded unless a path asks for it.

The paper's five checkpoints live in `sander-wood/bgpt`; `PUBLISHED` says what each was
trained for (`bgpt info` prints it).
"""

from __future__ import annotations

import re
from pathlib import Path

from bgpt.errors import BGPTError

SCHEME = "hf://"
PAPER_REPO = "sander-wood/bgpt"
PUBLISHED = {
    "weights-conversion.pth": "ABC <-> MIDI conversion (IrishMAN), the paper's data-conversion model",
    "weights-cpu.pth": "CPU states (the paper's hardware simulation, programs of 1-255 instructions)",
    "weights-text.pth": "text (Wikipedia), generative",
    "weights-image.pth": "images (ImageNet, 32x32 BMP), generative",
    "weights-audio.pth": "audio (LibriSpeech, 8 kHz 1 s WAV), generative",
}
_PATH = re.compile(
    r"^hf://(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+)/(?P<file>[^@]+?)(?:@(?P<rev>[\w./-]+))?$"
)


def is_hub_path(path) -> bool:
    return str(path).startswith(SCHEME)


def parse(path: str) -> tuple[str, str, str | None]:
    """'hf://OWNER/REPO/FILE[@REV]' -> (repo id, file in the repo, revision or None)."""
    m = _PATH.match(str(path))
    if not m or ".." in m["file"].split("/"):
        raise BGPTError(f"{path}: a hub model path looks like hf://OWNER/REPO/FILE[@REVISION]")
    return f"{m['owner']}/{m['repo']}", m["file"], m["rev"]


def resolve(path: str) -> Path:
    """The local file for a hub path: from the cache, or downloaded into it."""
    repo, filename, revision = parse(path)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise BGPTError(
            f"{path}: hub paths need huggingface_hub (pip install 'bgpt[hub]')"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise BGPTError(
            f"{path}: not in the local Hugging Face cache, and the hub cannot be reached "
            "(offline, HF_HUB_OFFLINE=1, or no network); download it where there is a connection"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise BGPTError(
            f"{path}: {type(e).__name__.removesuffix('Error').lower()} on the hub"
        ) from None
    except OSError as e:  # network and disk failures
        raise BGPTError(f"{path}: cannot fetch from the hub ({e})") from None


def published_task(path) -> str | None:
    """What a published checkpoint was trained for, from its file name (local or hub)."""
    return PUBLISHED.get(Path(str(path).split("@")[0]).name)

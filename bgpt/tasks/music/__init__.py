"""ABC notation <-> MIDI: the paired set of the data-conversion task, and its checker.

The set (`build_set`, `bgpt music build`)
    Tunes come from the `.abc` files that ship inside the music21 package (found on disk
    through the installed package, no network) or from any folder of `.abc` files. Each
    file is split into tunes at its `X:` lines; a tune is normalised (`normalize_tune`)
    and rendered by `abc2midi` (Debian package `abcmidi`). The set holds, for every
    kept tune, `NAME.abc` (exactly the bytes that were rendered) beside `NAME.mid`
    (exactly what abc2midi wrote), in `train/` or `test/`:

        OUT/train/essenFolksong_altdeu10_0001.abc   OUT/train/essenFolksong_altdeu10_0001.mid
        OUT/test/...                                OUT/build.json  (settings, counts, drops)

    NAME is the source file's path in the corpus without `.abc`, `/` replaced by `_`,
    then `_` and the tune's 1-based position in that file (4 digits). A tune is dropped
    when abc2midi fails on it (non-zero exit, time-out, no MIDI, MIDI without notes; with
    `strict`, also any "Error" line abc2midi prints), when it repeats an earlier tune
    byte for byte (so no pair sits in both train and test), or when its conversion pair
    (`bgpt.stream.encode_pair`, either direction) is longer than `max_patches`. The
    split is a pure function of NAME (`split_of`), so a tune keeps its side when the
    corpus or the limit changes. Same corpus + same abc2midi -> the same bytes.

The checker (`check_folder`, `bgpt music check`)
    Generated `.mid` (or `.abc`) files are matched to truth files by relative path
    stem. A prediction "parses" when mido reads it (for ABC: when abc2midi renders it
    to a MIDI file mido reads); it is "exact" when its bytes equal the truth file's.
    Notes (`midi_notes`) are (pitch, onset, duration) with times in quarter notes;
    predicted and true notes are matched one to one (`count_matches`, equal pitch,
    onset and duration within a tolerance), and precision / recall / F1 are computed
    over all notes of the folder (micro average); missing or unreadable predictions
    contribute no notes, so they lower recall. ABC predictions and their truth ABC are
    both rendered by abc2midi in temporary folders, never in the working directory.
"""

from bgpt.tasks.music.abc import (
    ABC2MIDI_HELP,
    DEFAULT_TIMEOUT,
    MANIFEST_NAME,
    SPLITS,
    Rendered,
    Tune,
    abc2midi_version,
    abc_files,
    abc_to_midi,
    corpus_tunes,
    find_abc2midi,
    music21_corpus_dir,
    normalize_tune,
    split_of,
    split_tunes,
    train_subset,
    tune_name,
)
from bgpt.tasks.music.build import build_set, pair_patches
from bgpt.tasks.music.check import FileCheck, check_folder, common_prefix
from bgpt.tasks.music.notes import (
    DEFAULT_TOLERANCE,
    Note,
    count_matches,
    midi_note_times,
    midi_notes,
    mir_eval_scores,
    prf,
)

__all__ = [
    "ABC2MIDI_HELP", "DEFAULT_TIMEOUT", "DEFAULT_TOLERANCE", "MANIFEST_NAME", "SPLITS", "FileCheck",
    "Note", "Rendered", "Tune", "abc2midi_version", "abc_files", "abc_to_midi", "build_set",
    "check_folder", "common_prefix", "corpus_tunes", "count_matches", "find_abc2midi",
    "midi_note_times", "midi_notes", "mir_eval_scores", "music21_corpus_dir", "normalize_tune",
    "pair_patches", "prf", "split_of", "split_tunes", "train_subset", "tune_name",
]  # fmt: skip

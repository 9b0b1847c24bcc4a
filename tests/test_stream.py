import numpy as np
import pytest

from bgpt.stream import (
    PAD,
    ROLE_INPUT,
    ROLE_NONE,
    ROLE_TARGET,
    collate,
    conversion_prompt,
    encode,
    encode_pair,
    eval_windows,
    extension_of,
    header_patch,
    train_window_start,
)

P = PAD


def test_extension_of():
    assert extension_of("a/b/song.abc") == "abc"
    assert extension_of("archive.tar.gz") == "gz"
    assert extension_of("Makefile") == ""
    assert extension_of(".bashrc") == "bashrc"


def test_header_patch_pads_and_cuts():
    assert header_patch("py", 4).tolist() == [112, 121, P, P]
    assert header_patch("abcdef", 4).tolist() == [97, 98, 99, 100]
    assert header_patch("", 3).tolist() == [P, P, P]
    assert header_patch("é", 4).tolist() == [0xC3, 0xA9, P, P]  # UTF-8 bytes


def test_encode_file_layout_exact():
    st = encode(b"hello", "txt", 4)
    assert st.symbols.reshape(-1, 4).tolist() == [
        [116, 120, 116, P],  # header: "txt"
        [104, 101, 108, 108],  # "hell"
        [111, P, P, P],  # "o" + padding
        [P, P, P, P],  # end patch
    ]
    # scored: 5 data bytes and the PAD that ends them
    assert st.roles.reshape(-1, 4).tolist() == [
        [0, 0, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    assert st.to_bytes() == b"txthello"


def test_encode_exact_multiple_scores_first_end_symbol():
    st = encode(b"abcd", "x", 4)
    assert st.num_patches == 3
    assert st.symbols.reshape(-1, 4).tolist() == [[120, P, P, P], [97, 98, 99, 100], [P] * 4]
    assert st.roles.reshape(-1, 4).tolist() == [[0] * 4, [1] * 4, [1, 0, 0, 0]]


def test_encode_empty_file():
    st = encode(b"", "bin", 4)
    assert st.symbols.reshape(-1, 4).tolist() == [[98, 105, 110, P], [P] * 4]
    assert st.roles.sum() == 1  # only the end of file is scored


def test_encode_accepts_numpy_and_all_byte_values():
    data = np.arange(256, dtype=np.uint8)
    st = encode(data, "bin", 16)
    assert st.num_patches == 1 + 16 + 1
    assert st.symbols[16:272].tolist() == list(range(256))


def test_pair_layout_exact():
    st = encode_pair(b"abcde", "abc", b"xy", "mid", 4)
    assert st.symbols.reshape(-1, 4).tolist() == [
        [97, 98, 99, P],  # X header "abc"
        [97, 98, 99, 100],
        [101, P, P, P],  # X ends, no end patch
        [109, 105, 100, P],  # Y header "mid"
        [120, 121, P, P],
        [P] * 4,  # Y end patch
    ]
    r = st.roles.reshape(-1, 4).tolist()
    assert r[1] == [ROLE_INPUT] * 4 and r[2] == [ROLE_INPUT, ROLE_INPUT, 0, 0]
    assert r[3] == [ROLE_NONE] * 4
    assert r[4] == [ROLE_TARGET, ROLE_TARGET, ROLE_TARGET, 0]


def test_conversion_prompt_is_pair_prefix():
    pair = encode_pair(b"abcde", "abc", b"xy", "mid", 4)
    prompt = conversion_prompt(b"abcde", "abc", "mid", 4)
    assert prompt.tolist() == pair.symbols[: len(prompt)].tolist()
    assert len(prompt) == 4 * 4


def test_train_window_picks_head_middle_tail():
    rng = np.random.default_rng(0)
    starts = [train_window_start(100, 10, rng) for _ in range(3000)]
    head = starts.count(0) / 3000
    tail = starts.count(90) / 3000
    assert 0.30 < head < 0.40 and 0.30 < tail < 0.40
    assert all(0 <= s <= 90 for s in starts)
    assert train_window_start(10, 10, rng) == 0


@pytest.mark.parametrize("n", [2, 9, 10, 11, 19, 20, 37, 100])
def test_eval_windows_score_every_patch_once(n):
    L = 10
    seen = np.zeros(n, dtype=int)
    for start, first in eval_windows(n, L):
        assert 0 <= start and start + min(L, n) <= n
        assert first >= start + 1  # the window's first patch is context only
        seen[first : start + L] += 1
    assert seen[0] == 0 and (seen[1:] == 1).all()


def test_collate_pads_whole_patches_and_masks():
    a, b = encode(b"hello", "txt", 4), encode(b"", "x", 4)
    batch = collate([a, b])
    assert batch.patches.shape == (2, 4, 4) and batch.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.patches[1, 2:].eq(PAD).all()
    assert batch.scored.tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]
    assert batch.num_bytes == 3 + 5 + 1  # "txt" "hello" "x"

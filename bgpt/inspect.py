"""What a byte model thinks of a file, byte by byte, as one self-contained HTML page.

`analyse(model, data, ext)` scores every byte of a file (and the symbol that ends it) in the
deterministic evaluation windows `bgpt eval` uses: the bits the model spent on it and its five
most likely symbols there. `render(...)` turns analyses into a page with no network use (no CDN,
no external file): a hex + text view per file, every byte coloured by its bits, hovering a byte
shows the model's top-5 predictions; the file's bits per byte and its ten most surprising spans.
A task can add its own sections (the CPU task adds a table of states with wrong bytes marked).

Files longer than the model's context are scored window by window like `bgpt eval`; the page
shows their first `max_bytes` bytes (default 16 KiB) and says how many were left out, so a page
stays light in a browser (each shown byte is a few hundred bytes of HTML).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from bgpt.model import BGPT
from bgpt.stream import PAD, ROLE_INPUT, ROLE_TARGET, Stream, encode, encode_pair, iter_eval_windows

LN2 = math.log(2)
TOP = 5


@dataclass
class Part:
    """One scored part of a stream: a file, or the input or target side of a conversion pair."""

    title: str
    data: bytes
    bits: np.ndarray  # (n + 1,) bits of each byte and of the end symbol
    top: np.ndarray  # (n + 1, TOP) most likely symbols at each position
    top_p: np.ndarray  # (n + 1, TOP) their probabilities
    sections: list[str] = field(default_factory=list)  # extra HTML from a task

    @property
    def bpb(self) -> float:
        return float(self.bits.sum() / max(1, len(self.data)))


@torch.inference_mode()
def score_stream(model: BGPT, stream: Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every predicted stream position (index >= S): bits, top-5 symbols and their
    probabilities, from the windows `bgpt eval` scores: arrays of length len(symbols) - S."""
    s, lmax = stream.patch_size, model.config.max_patches
    was = model.training
    model.eval()
    n = len(stream.symbols) - s
    bits = np.zeros(n)
    top = np.zeros((n, TOP), dtype=np.int64)
    top_p = np.zeros((n, TOP))
    device = next(model.parameters()).device
    for start, first in iter_eval_windows(stream.num_patches, lmax):
        w = stream.window(start, lmax)
        patches = torch.from_numpy(w.symbols.astype(np.int64)).to(device).view(1, -1, s)
        features = model.patch_decoder(patches)[0, :-1]  # feature of patch i predicts i+1
        targets, context = patches[0, 1:], patches[0, :-1]
        logp = (
            model.byte_decoder(features, targets, context).float().log_softmax(-1)
        )  # (P-1, S, 257)
        k = first - start - 1  # the first scored prediction of this window
        lp = logp[k:]
        got = lp.gather(-1, targets[k:, :, None]).squeeze(-1)  # (m, S)
        best = lp.topk(TOP, dim=-1)
        lo = (first - 1) * s  # predicted position of patch `first`, counted from index S
        m = lp.shape[0] * s
        bits[lo : lo + m] = (-got / LN2).flatten().cpu().numpy()
        top[lo : lo + m] = best.indices.reshape(-1, TOP).cpu().numpy()
        top_p[lo : lo + m] = best.values.exp().reshape(-1, TOP).cpu().numpy()
    model.train(was)
    return bits, top, top_p


def analyse(model: BGPT, data: bytes, ext: str, title: str = "") -> Part:
    """One file, scored: its bytes and end symbol."""
    st = encode(data, ext, model.config.patch_size)
    bits, top, top_p = score_stream(model, st)
    n = len(data) + 1
    return Part(title or f".{ext}", bytes(data), bits[:n], top[:n], top_p[:n])


def analyse_pair(
    model: BGPT, x: bytes, x_ext: str, y: bytes, y_ext: str, title: str = ""
) -> list[Part]:
    """A conversion pair, scored as training sees it: the input part and the target part apart."""
    s = model.config.patch_size
    st = encode_pair(x, x_ext, y, y_ext, s)
    bits, top, top_p = score_stream(model, st)
    parts = []
    for role, data, name in (
        (ROLE_INPUT, x, f"input .{x_ext}"),
        (ROLE_TARGET, y, f"target .{y_ext}"),
    ):
        where = np.flatnonzero(st.roles[s:] == role)  # its bytes, then its end symbol where scored
        take = where[: len(data) + 1]
        b = np.zeros(len(data) + 1)
        t = np.zeros((len(data) + 1, TOP), dtype=np.int64)
        p = np.zeros((len(data) + 1, TOP))
        b[: len(take)], t[: len(take)], p[: len(take)] = bits[take], top[take], top_p[take]
        parts.append(Part(f"{title}: {name}" if title else name, bytes(data), b, t, p))
    return parts


def surprising_spans(
    bits: np.ndarray, width: int = 8, count: int = 10
) -> list[tuple[int, int, float]]:
    """The `count` non-overlapping windows of `width` bytes with the most bits: (start, end, bits)."""
    n = len(bits)
    if n == 0:
        return []
    width = min(width, n)
    sums = np.convolve(bits, np.ones(width), mode="valid")
    order = np.argsort(-sums, kind="stable")
    taken = np.zeros(n, dtype=bool)
    out = []
    for i in order:
        if not taken[i : i + width].any():
            taken[i : i + width] = True
            out.append((int(i), int(i + width), float(sums[i])))
            if len(out) == count:
                break
    return sorted(out, key=lambda r: -r[2])


# ----------------------------------------------------------------------------- HTML


def symbol_text(y: int) -> str:
    """A symbol as a person reads it: a printable character, a hex escape, or EOF/PAD."""
    if y == PAD:
        return "⟨end⟩"
    c = chr(y)
    return repr(c)[1:-1] if not (32 <= y < 127) or c in "'\\" else c


def colour(bits: float) -> str:
    """White at 0 bits to deep red at 8 or more: hsl, lightness falling with the bits."""
    t = min(1.0, bits / 8.0)
    return f"hsl({int(120 - 120 * t)},85%,{int(96 - 46 * t)}%)"


def byte_cells(part: Part, max_bytes: int) -> str:
    """The hex + text view: 16 bytes a row (then the end symbol), each cell coloured by its
    bits, its title the model's top-5 there."""
    n = len(part.data)
    positions = list(range(min(n, max_bytes))) + ([n] if n <= max_bytes else [])
    rows = []
    for row in range(0, len(positions), 16):
        hexes, chars = [], []
        for i in positions[row : row + 16]:
            y = part.data[i] if i < n else PAD
            tip = html.escape(
                f"byte {i}: {symbol_text(y)} ({part.bits[i]:.2f} bits)\n"
                + "\n".join(
                    f"{symbol_text(int(t))}  {p:.3f}"
                    for t, p in zip(part.top[i], part.top_p[i], strict=True)
                ),
                quote=True,
            )
            style = f' style="background:{colour(part.bits[i])}" title="{tip}"'
            hexes.append(f'<span class="b"{style}>{"EOF" if y == PAD else f"{y:02x}"}</span>')
            chars.append(
                f'<span class="c"{style}>{html.escape(chr(y)) if 32 <= y < 127 else "·"}</span>'
            )
        rows.append(
            f'<div class="r"><span class="o">{row:08x}</span><span class="h">{"".join(hexes)}</span>'
            f'<span class="t">{"".join(chars)}</span></div>'
        )
    return "\n".join(rows)


def part_html(part: Part, max_bytes: int) -> str:
    spans = surprising_spans(part.bits[: len(part.data)])
    span_rows = "".join(
        f"<tr><td>{a}–{b - 1}</td><td>{bits:.1f}</td><td><code>{html.escape(''.join(symbol_text(y) for y in part.data[a:b]))}</code></td></tr>"
        for a, b, bits in spans
    )
    cut = (
        (
            f'<p class="note">showing the first {max_bytes:,} of {len(part.data):,} bytes (every byte was scored; '
            f"the bits per byte count them all)</p>"
        )
        if len(part.data) > max_bytes
        else ""
    )
    return f"""<section>
<h2>{html.escape(part.title)}</h2>
<p><b>{part.bpb:.4f}</b> bits per byte over {len(part.data):,} bytes (the end symbol: {part.bits[-1]:.2f} bits)</p>
{"".join(part.sections)}
<details open><summary>bytes, coloured by the bits the model spent on each (hover: its top-5 predictions)</summary>
{cut}<div class="hex">{byte_cells(part, max_bytes)}</div></details>
<h3>the ten most surprising spans (8 bytes)</h3>
<table><tr><th>bytes</th><th>bits</th><th>text</th></tr>{span_rows}</table>
</section>"""


STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px} h2{font-size:17px;margin-top:28px} h3{font-size:15px}
.hex{font:13px ui-monospace,monospace;line-height:1.5}
.r{white-space:nowrap} .o{color:#888;margin-right:12px}
.b{display:inline-block;width:2.2em;text-align:center;margin-right:1px}
.c{display:inline-block;width:1ch;text-align:center}
.t{margin-left:16px;border-left:1px solid #ccc;padding-left:8px}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
.note{color:#a60} .legend span{display:inline-block;width:28px;text-align:center;font-size:12px}
.wrong{outline:2px solid #000;font-weight:bold}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
"""


def render(title: str, parts: list[Part], max_bytes: int = 16384, intro: str = "") -> str:
    """The whole page: a legend, then each part."""
    legend = "".join(f'<span style="background:{colour(b)}">{b}</span>' for b in range(0, 9))
    body = "\n".join(part_html(p, max_bytes) for p in parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{intro}
<p class="legend">bits spent on a byte: {legend} and more</p>
{body}
</body></html>
"""

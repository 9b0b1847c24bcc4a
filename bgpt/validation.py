"""One validation layer for settings: field types from a dataclass's annotations, finite
numbers, ranges. Every config dataclass calls `check_fields` first in `__post_init__`, so a
JSON config with `"num_classes": "x"` or a flag `--minutes inf` is one clear `BGPTError`,
never a TypeError or an OverflowError deep inside; the hand-written argparse commands take
their numbers through `finite_float` / `int_at_least`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing

from bgpt.errors import BGPTError


def _allowed(kind) -> tuple[list[type], bool]:
    """The plain types an annotation admits, and whether None is one of them."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        inner = [a for a in args if a is not type(None)]
        return [typing.get_origin(a) or a for a in inner], len(inner) < len(args)
    return [origin or kind], False


def check_value(name: str, value, kind) -> None:
    """`value` must be of the annotated `kind`: int (not bool), float (int accepted, finite),
    bool, str, list (of str, when annotated so) or dict; None only where the annotation allows."""
    allowed, optional = _allowed(kind)
    if value is None:
        if optional:
            return
        raise BGPTError(f"{name} must be set, got null")
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise BGPTError(f"{name} must be a finite number, got {value!r}")
            return
        if t is str and isinstance(value, str):
            return
        if t is list and isinstance(value, list):
            item = typing.get_args(kind)
            if item and item[0] is str and not all(isinstance(v, str) for v in value):
                raise BGPTError(f"{name} must be a list of strings, got {value!r}")
            return
        if t is dict and isinstance(value, dict):
            return
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise BGPTError(f"{name} must be {names}, got {value!r}")


def check_fields(obj, prefix: str = "") -> None:
    """Check every field of dataclass instance `obj` against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(prefix + f.name, getattr(obj, f.name), hints[f.name])


def check_ranges(obj, ranges: dict[str, tuple[float | None, float | None]]) -> None:
    """name -> (low, high), inclusive; None: unbounded. Fields must already be numbers."""
    bad = []
    for name, (lo, hi) in ranges.items():
        v = getattr(obj, name)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bad.append(
                f"{name}={v!r} (allowed {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'})"
            )
    if bad:
        raise BGPTError(f"absurd setting: {', '.join(bad)}")


# ----------------------------------------------------------------------------- argparse types


def finite_float(low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse `type`: a finite float within [low, high] (or (low, high] with low_open)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low is not None and (v < low or (low_open and v == low)):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if low_open else '>='} {low:g}, got {text}"
            )
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return v

    return parse


def int_at_least(low: int, high: int | None = None):
    """An argparse `type`: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(
                f"must be in {low}..{high}, got {v}"
                if high is not None
                else f"must be >= {low}, got {v}"
            )
        return v

    return parse

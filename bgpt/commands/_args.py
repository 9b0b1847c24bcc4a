"""Dataclass fields -> argparse flags: one flag per field, help from the field's docstring."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import typing


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each field of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def add_fields(
    parser: argparse.ArgumentParser,
    cls: type,
    names: list[str],
    dest_prefix: str = "",
    defaults: dict | None = None,
) -> None:
    """Add --field-name flags for `names` of dataclass `cls` (defaults shown in help)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f = fields[name]
        default = (defaults or {}).get(
            name, f.default if f.default is not dataclasses.MISSING else None
        )
        flag = "--" + name.replace("_", "-")
        help_text = docs.get(name, "").replace("%", "%%")
        kind = hints[name]
        if kind is bool:
            parser.add_argument(
                flag,
                dest=dest_prefix + name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        if typing.get_origin(kind) is list or base is list:
            parser.add_argument(
                flag,
                dest=dest_prefix + name,
                nargs="+",
                default=default,
                metavar="DIR",
                help=help_text,
            )
            continue
        parser.add_argument(
            flag,
            dest=dest_prefix + name,
            type=base if base in (int, float, str) else str,
            default=default,
            help=f"{help_text} (default: {default})" if default not in (None, "") else help_text,
        )


def add_weights(parser: argparse.ArgumentParser) -> None:
    """--weights fp32|bf16|int8: the form of a loaded model's weights (`bgpt.quantize`)."""
    from bgpt.config import WEIGHTS, WEIGHTS_HELP

    parser.add_argument("--weights", choices=WEIGHTS, default="fp32", help=WEIGHTS_HELP)


def collect(args: argparse.Namespace, names: list[str], dest_prefix: str = "") -> dict:
    return {n: getattr(args, dest_prefix + n) for n in names}

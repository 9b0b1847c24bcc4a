"""The CLI as a whole: every command takes -q/-v the same way, parse errors are one line, and
library code reports through the `bgpt` logger, never print."""

from __future__ import annotations

import argparse
import ast
import logging
from pathlib import Path

from bgpt.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1] / "bgpt"


def leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaves(child, (*path, name))


def test_every_command_takes_quiet_and_verbose():
    found = list(leaves(build_parser()))
    assert len(found) >= 25  # every command and sub-command
    for path, parser in found:
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, path


def test_verbosity_sets_the_bgpt_logger(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")
    for flags, level in (([], logging.INFO), (["-q"], logging.WARNING), (["-v"], logging.DEBUG)):
        assert (
            main(["pack", str(tmp_path / "d"), "--out", str(tmp_path / f"p{level}"), *flags]) == 0
        )
        assert logging.getLogger("bgpt").level == level
    capsys.readouterr()


def test_parse_errors_are_one_line(capsys):
    assert main(["train", "x", "--out", "y", "--hidden", "3"]) == 2  # no abbreviations
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --hidden" in err[0]
    assert main(["generate", "m", "--ext", "txt", "--out", "o", "--top-p", "nan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finite" in err[0]


def test_library_code_never_prints():
    """Only the entry points (cli.py, commands/) print; the library logs."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("cli.py", "__main__.py") or rel.startswith("commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def test_help_loads_no_torch():
    """`bgpt --help` and `bgpt COMMAND --help` answer without importing torch."""
    import subprocess
    import sys

    code = (
        "import sys; from bgpt.cli import main; codes = [main(a) for a in (['--help'], ['train', '--help'], "
        "['cpu', 'run', '--help'], ['media', 'build', '--help'], ['demo', '--help'])]; "
        "sys.stderr.write(repr((codes, 'torch' in sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stderr.strip().splitlines()[-1] == "([0, 0, 0, 0, 0], False)"


def import_graph() -> dict[str, set[str]]:
    """bgpt module -> the bgpt modules it imports anywhere in its source (functions included)."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("bgpt", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        deps = set()
        tree = ast.parse(path.read_text())
        for block in [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
        ]:
            block.body = []  # imports for type hints only are not imports at run time
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bgpt"):
                deps |= {
                    f"{node.module}.{a.name}" if node.module == "bgpt" else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("bgpt")}
        graph[name] = {d for d in deps if d != name}
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def test_one_way_down():
    """The core (outside tasks/ and commands/) imports no task and no command, and no bgpt
    modules import each other in a cycle."""
    graph = import_graph()
    top = ("bgpt.tasks", "bgpt.commands", "bgpt.cli", "bgpt.__main__")
    for module, deps in graph.items():
        if not module.startswith(top):
            assert not [d for d in deps if d.startswith(top)], module
    seen, stack = set(), []

    def visit(m):
        assert m not in stack, " -> ".join([*stack[stack.index(m) :], m])
        if m in seen:
            return
        stack.append(m)
        for d in graph[m]:
            if d != "bgpt":  # the package's lazy __init__ imports nothing at import time
                visit(d)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)

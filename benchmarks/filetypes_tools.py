"""File types on held-out files: our classifier beside Magika and libmagic.

    python benchmarks/filetypes_tools.py DIR/test                  # Magika and libmagic
    python benchmarks/filetypes_tools.py DIR/test --run runs/ft    # + a bgpt classifier
    python benchmarks/filetypes_tools.py DIR/test --json out.json --markdown

DIR is a set from `bgpt media build filetypes --out DIR`: files LABEL_N.bin, the truth is
the file name up to the first '_'. Every tool sees the same bytes (the files as cut to
the model's context, neutral extension). Each tool's answers are mapped onto our type
names (MAGIKA / LIBMAGIC below); an answer that maps to none of them is wrong.

Speed: files per second of the classifying call over all files, with the one-off start
(loading Magika's model; for `bgpt classify` a whole process with torch and the model)
reported apart. For our classifier the start is measured by a run on one file, and
files/s is (N - 1) / (time on N files - time on one file). These machines are shared:
repeat and take the best when timings matter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# Magika output label -> our type (identity where the names agree).
MAGIKA = {
    "elf": "elf", "python": "python", "pythonbytecode": "pyc", "c": "c", "cpp": "c",
    "html": "html", "json": "json", "xml": "xml", "svg": "svg", "png": "png", "gif": "gif",
    "jpeg": "jpeg", "gzip": "gzip", "zip": "zip", "jar": "zip", "pdf": "pdf",
    "postscript": "postscript", "ttf": "ttf", "shell": "shell", "markdown": "markdown",
    "rst": "rst", "javascript": "javascript", "css": "css", "perl": "perl", "yaml": "yaml",
    "cmake": "cmake",
}  # fmt: skip
# Magika has no label for gettext .mo catalogues: its answer for them is always wrong.

# libmagic: first matching rule on "description; mime type".
LIBMAGIC = [
    (r"^ELF |application/x-(?:sharedlib|executable|pie-executable|object)", "elf"),
    (r"byte-compiled|application/x-bytecode\.python", "pyc"),
    (r"Python script|text/x-script\.python|text/x-python", "python"),
    (r"C\+\+ source|C source|text/x-c\b|text/x-c\+\+", "c"),
    (r"SVG|image/svg", "svg"),
    (r"HTML document|text/html", "html"),
    (r"JSON|application/json", "json"),
    (r"XML|text/xml|application/xml", "xml"),
    (r"PNG image", "png"),
    (r"GIF image", "gif"),
    (r"JPEG image", "jpeg"),
    (r"gzip compressed|application/gzip", "gzip"),
    (r"Zip archive|Java archive|application/zip|application/java-archive", "zip"),
    (r"PDF document", "pdf"),
    (r"PostScript|application/postscript", "postscript"),
    (r"TrueType|OpenType|font/sfnt|font/ttf", "ttf"),
    (r"GNU message catalog|gettext", "mo"),
    (r"shell script|Bourne-Again|text/x-shellscript", "shell"),
    (r"Perl|text/x-perl", "perl"),
    (r"JavaScript|Node\.js|application/javascript|text/javascript", "javascript"),
    (r"\bCSS\b|text/css", "css"),
    (r"Markdown|text/markdown", "markdown"),
    (r"reStructuredText|text/x-rst", "rst"),
    (r"YAML|application/yaml|text/yaml", "yaml"),
    (r"CMake", "cmake"),
]


def truth_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def run_magika(files: list[Path]) -> tuple[list[str], list[str], float, float]:
    """(raw labels, our labels, seconds to load, seconds to classify)."""
    t0 = time.perf_counter()
    from magika import Magika

    m = Magika()
    t1 = time.perf_counter()
    results = m.identify_paths(files)
    t2 = time.perf_counter()
    raw = [str(r.output.label) if r.ok else f"error:{r.status}" for r in results]
    return raw, [MAGIKA.get(r, "?") for r in raw], t1 - t0, t2 - t1


def map_libmagic(description: str, mime: str) -> str:
    text = f"{description}; {mime}"
    for pattern, label in LIBMAGIC:
        if re.search(pattern, text):
            return label
    return "?"


def run_libmagic(files: list[Path]) -> tuple[list[str], list[str], float, float, str]:
    """python-magic when importable, else the `file` program (one process for all files)."""
    t0 = time.perf_counter()
    try:
        import magic

        desc_m = magic.Magic()
        mime_m = magic.Magic(mime=True)
        t1 = time.perf_counter()
        raw = [(desc_m.from_file(str(f)), mime_m.from_file(str(f))) for f in files]
        t2 = time.perf_counter()
        how = "python-magic"
    except ImportError:
        exe = shutil.which("file")
        if exe is None:
            raise SystemExit(
                "libmagic: neither python-magic nor the `file` program is installed"
            ) from None
        t1 = time.perf_counter()
        names = [str(f) for f in files]
        d = subprocess.run(
            [exe, "-b", "--", *names], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        m = subprocess.run(
            [exe, "-b", "--mime-type", "--", *names], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        raw = list(zip(d, m, strict=True))
        t2 = time.perf_counter()
        how = "file"
    return (
        [f"{d}; {m}" for d, m in raw],
        [map_libmagic(d, m) for d, m in raw],
        t1 - t0,
        t2 - t1,
        how,
    )


def _classify(
    bgpt: list[str], run: str, files: list[Path], extra: list[str]
) -> tuple[dict[str, str], float]:
    preds: dict[str, str] = {}
    t0 = time.perf_counter()
    for k in range(0, len(files), 4000):  # stay far below the command-line limit
        chunk = [str(f) for f in files[k : k + 4000]]
        r = subprocess.run(
            [*bgpt, "classify", run, *chunk, "--json", *extra], capture_output=True, text=True
        )
        if r.returncode:
            raise SystemExit(f"bgpt classify failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                preds[obj["file"]] = obj["label"]
    return preds, time.perf_counter() - t0


def run_bgpt(
    run: str, files: list[Path], device: str, batch_size: int
) -> tuple[list[str], list[str], float, float]:
    """`bgpt classify RUN FILES --json`: (labels, labels, start-up seconds, seconds for the rest)."""
    exe = shutil.which("bgpt")
    bgpt = [exe] if exe else [sys.executable, "-m", "bgpt.cli"]
    extra = ["--device", device, "--batch-size", str(batch_size)]
    _, t_one = _classify(bgpt, run, files[:1], extra)
    preds, t_all = _classify(bgpt, run, files, extra)
    labels = [preds.get(str(f), "?") for f in files]
    return labels, labels, t_one, max(t_all - t_one, 1e-9) * len(files) / max(len(files) - 1, 1)


def summarise(truth: list[str], pred: list[str]) -> dict:
    by = defaultdict(lambda: [0, 0])
    wrong = defaultdict(Counter)
    for t, p in zip(truth, pred, strict=True):
        by[t][0] += p == t
        by[t][1] += 1
        if p != t:
            wrong[t][p] += 1
    per_type = {t: c / n for t, (c, n) in sorted(by.items())}
    return {
        "accuracy": sum(p == t for t, p in zip(truth, pred, strict=True)) / len(truth),
        "macro_accuracy": sum(per_type.values()) / len(per_type),
        "per_type": per_type,
        "confusions": {t: dict(c.most_common(3)) for t, c in sorted(wrong.items())},
    }


def markdown(report: dict) -> str:
    tools = list(report["tools"])
    counts = report["counts"]
    lines = ["| type | files | " + " | ".join(tools) + " |", "|---|---:|" + "---:|" * len(tools)]
    for t in sorted(counts):
        cells = [f"{report['tools'][k]['per_type'].get(t, 0):.2f}" for k in tools]
        lines.append(f"| {t} | {counts[t]} | " + " | ".join(cells) + " |")
    n = sum(counts.values())
    lines.append(
        f"| **accuracy** | {n} | "
        + " | ".join(f"**{report['tools'][k]['accuracy']:.3f}**" for k in tools)
        + " |"
    )
    lines.append(
        "| mean per type | | "
        + " | ".join(f"{report['tools'][k]['macro_accuracy']:.3f}" for k in tools)
        + " |"
    )
    lines.append(
        "| files/s | | "
        + " | ".join(f"{report['tools'][k]['files_per_s']:.0f}" for k in tools)
        + " |"
    )
    lines.append(
        "| start-up s | | "
        + " | ".join(f"{report['tools'][k]['startup_s']:.2f}" for k in tools)
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "test_dir", help="held-out folder of LABEL_N files (e.g. DIR/test of a filetypes set)"
    )
    ap.add_argument(
        "--run", help="a bgpt classifier (run folder or saved model) to add as a column"
    )
    ap.add_argument(
        "--tools",
        default="magika,libmagic",
        help="comma-separated: magika, libmagic (default: both)",
    )
    ap.add_argument("--device", default="auto", help="device for bgpt classify (default: auto)")
    ap.add_argument(
        "--batch-size", type=int, default=16, help="batch size for bgpt classify (default: 16)"
    )
    ap.add_argument(
        "--json", dest="json_out", help="write the full report (with every file's answers) here"
    )
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)

    root = Path(args.test_dir)
    files = sorted((p for p in root.iterdir() if p.is_file() and "_" in p.name and not p.name.startswith(".")),
                   key=lambda p: (truth_of(p), len(p.name), p.name))  # fmt: skip
    if not files:
        raise SystemExit(f"{root}: no LABEL_N files")
    truth = [truth_of(f) for f in files]
    report: dict = {
        "test_dir": str(root),
        "files": len(files),
        "counts": dict(Counter(truth)),
        "tools": {},
        "answers": {},
    }
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    runners = []
    if args.run:
        runners.append(("bgpt", lambda: run_bgpt(args.run, files, args.device, args.batch_size)))
    if "magika" in wanted:
        runners.append(("magika", lambda: run_magika(files)))
    if "libmagic" in wanted:
        runners.append(("libmagic", lambda: run_libmagic(files)))
    for name, fn in runners:
        out = fn()
        raw, mapped, t_start, t_run = out[:4]
        label = f"libmagic ({out[4]})" if name == "libmagic" else name
        s = summarise(truth, mapped)
        s.update(startup_s=t_start, run_s=t_run, files_per_s=len(files) / t_run)
        report["tools"][label] = s
        report["answers"][label] = {f.name: r for f, r in zip(files, raw, strict=True)}
        print(f"{label:<24} accuracy {s['accuracy']:.3f} (mean per type {s['macro_accuracy']:.3f}), "
              f"{s['files_per_s']:.0f} files/s, start-up {t_start:.2f} s", file=sys.stderr)  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        print(markdown(report))
    else:
        print(
            json.dumps(
                {
                    k: {m: v for m, v in s.items() if m != "confusions"}
                    for k, s in report["tools"].items()
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

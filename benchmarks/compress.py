"""Compression against the tools people use: ratio and MB/s of `bgpt compress` next to
gzip -9, bzip2 -9, xz -9e and zstd -19 on the same files.

    python benchmarks/compress.py --set cpu runs/cpu data/cpu/test \\
                                  --set midi runs/midi data/midi/test --max-files 50

Each `--set NAME MODEL DIR` compresses every file under DIR (sorted, hidden files skipped; the
first --max-files) one file at a time, as a user compresses files:

  - bgpt: `bgpt.compress.Codec` in this process (what `bgpt compress` runs), then decompressed
    and compared byte for byte. Timings cover coding only; loading the model is reported apart.
    Sizes are whole .bgz files, header included; the model's weights are not counted (stated
    apart, as the compression literature does).
  - gzip -9 -n, bzip2 -9, xz -9e, zstd -19: one process per tool and direction over all the
    files (`TOOL -c FILE...` writes one independent compressed member per file, so the size is
    the sum of per-file sizes, container headers included), decompressed from that output and
    compared with the files' concatenation. Best of --repeats.

Beside the table: `bgpt eval`'s bits per byte on the same files (`bgpt.evaluate`), its claim
BPB x bytes / 8, and the .bgz payload (without headers) that realises it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bgpt.bench import machine
from bgpt.checkpoint import load
from bgpt.compress import Codec
from bgpt.data import FolderSet, StreamDataset, SubSet
from bgpt.evaluate import evaluate_generative
from bgpt.stream import extension_of

TOOLS = {  # name -> (compress argv, decompress argv)
    "gzip -9": (["gzip", "-9", "-n", "-c"], ["gzip", "-d", "-c"]),
    "bzip2 -9": (["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"]),
    "xz -9e": (["xz", "-9e", "-c"], ["xz", "-d", "-c"]),
    "zstd -19": (["zstd", "-19", "-q", "-c"], ["zstd", "-d", "-q", "-c"]),
}


def tool_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "?"


def run_tool(name: str, paths: list[Path], originals: bytes, repeats: int) -> dict:
    comp, decomp = TOOLS[name]
    if shutil.which(comp[0]) is None:
        return {"method": name, "missing": True}
    best_c = best_d = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        packed = subprocess.run(
            comp + [str(p) for p in paths], capture_output=True, check=True
        ).stdout
        best_c = min(best_c, time.perf_counter() - t)
        t = time.perf_counter()
        back = subprocess.run(decomp, input=packed, capture_output=True, check=True).stdout
        best_d = min(best_d, time.perf_counter() - t)
        if back != originals:
            raise SystemExit(f"{name}: decompressed bytes differ from the originals")
    return {
        "method": name,
        "bytes": len(packed),
        "compress_s": best_c,
        "decompress_s": best_d,
        "version": tool_version(comp[0]),
    }


def run_bgpt(codec: Codec, files: list[tuple[str, bytes]]) -> dict:
    total = payload = 0
    model_bits = 0.0
    tc = td = 0.0
    for name, data in files:
        t = time.perf_counter()
        out = codec.compress(data, extension_of(name))
        tc += time.perf_counter() - t
        t = time.perf_counter()
        back = codec.decompress(out.data)
        td += time.perf_counter() - t
        if back != data:
            raise SystemExit(f"bgpt: {name} did not round-trip")
        total += len(out.data)
        payload += out.payload_bytes
        model_bits += out.model_bits
    return {
        "method": "bgpt",
        "bytes": total,
        "payload_bytes": payload,
        "model_bits": model_bits,
        "compress_s": tc,
        "decompress_s": td,
    }


def bench_set(name: str, model_path: str, folder: str, max_files: int | None, repeats: int) -> dict:
    files_set = FolderSet(folder)
    n = len(files_set) if max_files is None else min(max_files, len(files_set))
    if n == 0:
        raise SystemExit(f"{folder}: no files")
    subset = SubSet(files_set, range(n))
    files = [(subset.names[i], subset.read(i)) for i in range(n)]
    paths = [files_set.root / nm for nm, _ in files]
    raw = sum(len(d) for _, d in files)
    t = time.perf_counter()
    model = load(model_path).eval()
    load_s = time.perf_counter() - t
    codec = Codec(model)
    c = model.config
    print(
        f"[{name}] {n} files, {raw} bytes; model {model_path}: {model.num_parameters() / 1e6:.2f} M "
        f"parameters",
        file=sys.stderr,
    )
    torch.set_num_threads(1)  # the coder runs on one thread; evaluation too, for a quiet machine
    ev = evaluate_generative(
        model, StreamDataset(subset, c.patch_size, c.max_patches), batch_size=8
    )
    rows = [run_bgpt(codec, files)]
    originals = b"".join(d for _, d in files)
    rows += [run_tool(tool, paths, originals, repeats) for tool in TOOLS]
    for r in rows:
        if r.get("missing"):
            continue
        r["ratio"] = raw / r["bytes"]
        r["bits_per_byte"] = 8 * r["bytes"] / raw
        r["compress_MBps"] = raw / r["compress_s"] / 1e6
        r["decompress_MBps"] = raw / r["decompress_s"] / 1e6
    return {
        "set": name,
        "folder": folder,
        "files": n,
        "bytes": raw,
        "model": {
            "path": model_path,
            "parameters": model.num_parameters(),
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "config": c.to_dict(),
            "load_s": load_s,
        },
        "eval": {
            "bpb": ev["bpb"],
            "bits": ev["bits"],
            "bytes": ev["bytes"],
            "claim_bytes": ev["bits"] / 8,
        },
        "rows": rows,
    }


def markdown(result: dict) -> str:
    m, ev = result["model"], result["eval"]
    bg = result["rows"][0]
    lines = [
        f"**{result['set']}**: {result['files']} files, {result['bytes']:,} bytes "
        f"(`{result['folder']}`); model `{m['path']}`, {m['parameters'] / 1e6:.2f} M parameters "
        f"({m['weight_bytes'] / 1e6:.1f} MB of fp32 weights, not counted below)",
        "",
        "| method | compressed bytes | ratio | bits/byte | compress MB/s | decompress MB/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r.get("missing"):
            lines.append(f"| {r['method']} | (not installed) | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['bytes']:,} | {r['ratio']:.2f} | {r['bits_per_byte']:.3f} | "
            f"{r['compress_MBps']:.3g} | {r['decompress_MBps']:.3g} |"
        )
        if r["method"] == "bgpt":
            lines.append(
                f"| bgpt payload only (no .bgz headers) | {r['payload_bytes']:,} | "
                f"{result['bytes'] / r['payload_bytes']:.2f} | "
                f"{8 * r['payload_bytes'] / result['bytes']:.3f} | | |"
            )
    gap = bg["payload_bytes"] / ev["claim_bytes"] - 1 if ev["claim_bytes"] else 0.0
    lines += [
        "",
        f"`bgpt eval`: {ev['bpb']:.4f} BPB over {ev['bytes']:,} bytes, claim {ev['claim_bytes']:,.1f} "
        f"bytes; .bgz payloads {bg['payload_bytes']:,} bytes ({gap:+.2%}), headers "
        f"{bg['bytes'] - bg['payload_bytes']:,} bytes ({(bg['bytes'] - bg['payload_bytes']) / result['files']:.1f} per file).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--set",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "MODEL", "DIR"),
        help="a named folder of files and the model that compresses it (repeatable)",
    )
    p.add_argument("--max-files", type=int, default=None, help="first N files of each folder")
    p.add_argument(
        "--repeats", type=int, default=3, help="best of N for the classic tools (default 3)"
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    results = [bench_set(n, m, d, args.max_files, args.repeats) for n, m, d in args.set]
    print(f"machine: {machine()}; bgpt coding runs on 1 thread\n")
    tools = {name: r.get("version") for name, r in zip(TOOLS, results[0]["rows"][1:], strict=True)}
    print("tools: " + "; ".join(f"{v}" for v in tools.values() if v) + "\n")
    for r in results:
        print(markdown(r) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`bgpt train`, `bgpt train-classifier`, `bgpt eval`, `bgpt classify`, `bgpt pack`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bgpt.commands._args import add_fields, add_weights, collect
from bgpt.config import MODEL_FIELDS, TASK_DEFAULTS, BGPTConfig, TrainConfig
from bgpt.errors import BGPTError

_FIELDS = [  # every TrainConfig field a training command offers, in --help order
    "eval",
    "eval_fraction",
    "config",
    "conversion",
    "init",
    "steps",
    "epochs",
    "minutes",
    "batch_size",
    "grad_accum",
    "lr",
    "min_lr_ratio",
    "warmup",
    "weight_decay",
    "grad_clip",
    "sample_patches",
    "loss_from_patch",
    "label_smoothing",
    "shift_bytes",
    "seed",
    "save_every",
    "eval_max_files",
    "log_every",
    "device",
    "dtype",
    "gradient_checkpointing",
    "compile",
    "resume",
    "progress",
]
GENERATIVE_ONLY = ("conversion", "sample_patches", "loss_from_patch")
CLASSIFIER_ONLY = ("label_smoothing", "shift_bytes")
RUN_FIELDS = [f for f in _FIELDS if f not in CLASSIFIER_ONLY]
CLASSIFIER_FIELDS = [f for f in _FIELDS if f not in GENERATIVE_ONLY]
MODEL_OVERRIDES = [f for f in MODEL_FIELDS]


def _add_train(p: argparse.ArgumentParser, fields: list[str], task: str) -> None:
    p.add_argument("data", nargs="+", help="folders of files or packed sets (bgpt pack)")
    p.add_argument("--out", required=True, help="run folder to write")
    add_fields(p, TrainConfig, fields, defaults=TASK_DEFAULTS[task])
    group = p.add_argument_group("model (overrides of the --config preset)")
    add_fields(
        group,
        BGPTConfig,
        MODEL_OVERRIDES,
        dest_prefix="model_",
        defaults={k: None for k in MODEL_OVERRIDES},
    )


def _train_config(args: argparse.Namespace, fields: list[str], task: str) -> TrainConfig:
    overrides = {k: v for k, v in collect(args, MODEL_OVERRIDES, "model_").items() if v is not None}
    given = {
        k: v for k, v in collect(args, fields).items() if v is not None
    }  # unset: the field's default
    if args.quiet:
        given["progress"] = False
    return TrainConfig(data=args.data, out=args.out, task=task, model_overrides=overrides, **given)


def train_add_arguments(p: argparse.ArgumentParser) -> None:
    _add_train(p, RUN_FIELDS, "generate")


def train_run(args: argparse.Namespace) -> int:
    from bgpt.process import tune_process

    tune_process()  # before torch loads: a long CPU job (see bgpt/process.py)
    from bgpt.train import train

    train(_train_config(args, RUN_FIELDS, "generate"))
    return 0


def classifier_add_arguments(p: argparse.ArgumentParser) -> None:
    _add_train(p, CLASSIFIER_FIELDS, "classify")


def classifier_run(args: argparse.Namespace) -> int:
    from bgpt.process import tune_process

    tune_process()  # before torch loads: a long CPU job (see bgpt/process.py)
    from bgpt.train import train

    train(_train_config(args, CLASSIFIER_FIELDS, "classify"))
    return 0


# ----------------------------------------------------------------------------- eval


def eval_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="run folder, saved model folder or reference .pth")
    p.add_argument("data", nargs="+", help="folders of files or packed sets")
    p.add_argument("--conversion", help="score conversion pairs: 'X->Y' or 'X&Y'")
    p.add_argument("--batch-size", type=int, default=8, help="windows per batch (default: 8)")
    p.add_argument(
        "--max-files",
        type=int,
        default=None,
        help="score N of the files, evenly spaced over the sorted list (every label and source)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", default="fp32", help="fp32 (exact), bf16 or fp16 (default: fp32)")
    add_weights(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--baseline-train",
        nargs="+",
        metavar="DIR",
        default=None,
        help="classifiers: fit the trivial baselines (majority class, byte n-gram logistic regression) "
        "on these files; default: the run's own training files, when MODEL is a run folder",
    )
    p.add_argument(
        "--no-baselines", action="store_true", help="classifiers: skip the trivial baselines"
    )


def _baseline_train_files(args: argparse.Namespace):
    """The files a classifier's baselines are fitted on: --baseline-train, else the training
    files recorded in the run folder (its --data less the held-out part, as training split it)."""
    from bgpt.data import open_files, train_eval_files

    if args.baseline_train:
        return open_files(args.baseline_train)
    run_config = Path(args.model) / "config.json"
    try:
        train = json.loads(run_config.read_text())["train"]
        data, held_out, fraction, seed = (
            train["data"],
            train["eval"],
            train["eval_fraction"],
            train["seed"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a saved model or a .pth: nothing recorded
    if not data or not all(Path(d).exists() for d in [*data, *(held_out or [])]):
        return None
    return train_eval_files(data, held_out or [], fraction, seed)[0]


def classification_report_baselines(
    args: argparse.Namespace, test_files, test_indices, max_bytes: int
) -> dict | None:
    from bgpt.baselines import classification_baselines
    from bgpt.data import label_of

    if args.no_baselines:
        return None
    train_files = _baseline_train_files(args)
    if train_files is None:
        return None

    def pairs(files, indices):
        return [(files.read(i), label_of(files.names[i])) for i in indices]

    return classification_baselines(
        pairs(train_files, range(len(train_files))), pairs(test_files, test_indices), max_bytes
    )


def eval_run(args: argparse.Namespace) -> int:
    from bgpt.process import tune_process

    tune_process()  # before torch loads: a long CPU job (see bgpt/process.py)
    from bgpt.checkpoint import load
    from bgpt.data import StreamDataset, open_files
    from bgpt.device import resolve_device, resolve_dtype
    from bgpt.evaluate import evaluate_classifier, evaluate_generative

    if args.batch_size < 1 or (args.max_files is not None and args.max_files < 1):
        raise BGPTError("--batch-size and --max-files must be >= 1")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = load(args.model, weights=args.weights).to(device)
    c = model.config

    files = open_files(args.data)
    if c.is_classifier:
        if args.conversion:
            raise BGPTError("--conversion is for generative models")
        ds = StreamDataset(
            files,
            c.patch_size,
            c.max_patches,
            labels=c.labels or [str(i) for i in range(c.num_classes)],
        )
        r = evaluate_classifier(model, ds, args.batch_size, device, dtype, args.max_files)
        from bgpt.evaluate import spread

        r["baselines"] = classification_report_baselines(  # on the same files as the model
            args, files, spread(len(files), args.max_files), c.context_bytes
        )
        if args.json:
            print(json.dumps(r))
            return 0
        print(f"accuracy {r['accuracy']:.4f} on {r['files']} files (mean NLL {r['loss']:.4f})")
        if r.get("baselines"):
            from bgpt.baselines import format_baselines

            print("beside trivial baselines on the same files (fitted on the training files):")
            print("\n".join(format_baselines(r["accuracy"], r["baselines"])))
        labels = r["labels"]
        width = max(8, *(len(x) for x in labels))
        print("confusion (rows: truth, columns: prediction)")
        print(" " * width + " ".join(f"{x[:8]:>8}" for x in labels))
        for name, row in zip(labels, r["confusion"], strict=False):
            print(f"{name:<{width}}" + " ".join(f"{v:>8}" for v in row))
        return 0
    ds = StreamDataset(files, c.patch_size, c.max_patches, args.conversion)
    r = evaluate_generative(
        model, ds, args.batch_size, device, dtype, args.max_files, progress=not args.json
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{'extension':<16}{'files':>8}{'bytes':>12}{'BPB':>10}")
    for ext, v in r["by_ext"].items():
        parts = (
            f"   (input {v['bpb_input']:.4f}, target {v['bpb_target']:.4f})"
            if v.get("bpb_input") is not None
            else ""
        )
        print(
            f"{ext:<16}{v['files']:>8}{v['bytes']:>12}{v['bpb'] if v['bpb'] is None else format(v['bpb'], '.4f'):>10}{parts}"
        )
    print(
        f"{'all':<16}{r['files']:>8}{r['bytes']:>12}{r['bpb'] if r['bpb'] is None else format(r['bpb'], '.4f'):>10}"
    )
    if "bpb_input" in r:
        print(
            f"input part BPB {r['bpb_input']:.4f} ({r['bytes_input']} bytes), target part BPB {r['bpb_target']:.4f} ({r['bytes_target']} bytes)"
        )
    print(f"reference loss {r['reference_loss']:.4f} nats per predicted symbol")
    return 0


# ----------------------------------------------------------------------------- classify


def classify_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a classifier run folder, saved folder or reference .pth")
    p.add_argument("files", nargs="+", help="files to classify")
    p.add_argument("--batch-size", type=int, default=8, help="files per batch (default: 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add_weights(p)
    p.add_argument("--json", action="store_true", help="one JSON object per file")


def classify_run(args: argparse.Namespace) -> int:
    from bgpt.checkpoint import load
    from bgpt.data import Example
    from bgpt.device import resolve_device
    from bgpt.evaluate import classify_examples
    from bgpt.stream import encode, extension_of

    device = resolve_device(args.device)
    model = load(args.model, weights=args.weights).to(device)
    c = model.config
    if not c.is_classifier:
        raise BGPTError(f"{args.model} is a generative model; train one with bgpt train-classifier")
    examples = []
    for i, name in enumerate(args.files):
        path = Path(name)
        if not path.is_file():
            raise BGPTError(f"{name}: no such file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BGPTError(f"{name}: {e.strerror or e}") from None
        st = encode(data, extension_of(path), c.patch_size)
        examples.append(Example(st.window(0, c.max_patches), 1, i))
    probs = classify_examples(
        model, examples, max(1, args.batch_size), device, __import__("torch").float32
    )
    labels = c.labels or [str(i) for i in range(c.num_classes)]
    for name, p in zip(args.files, probs, strict=False):
        k = int(p.argmax())
        if args.json:
            print(
                json.dumps(
                    {
                        "file": name,
                        "label": labels[k],
                        "probability": float(p[k]),
                        "probabilities": dict(zip(labels, map(float, p), strict=False)),
                    }
                )
            )
        else:
            print(f"{name}\t{labels[k]}\t{float(p[k]):.4f}")
    return 0


# ----------------------------------------------------------------------------- pack


def pack_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="+", help="folders of files to pack")
    p.add_argument(
        "--out",
        required=True,
        help="packed set folder to write (new or empty; never inside an input)",
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="replace a packed set already in --out"
    )


def pack_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bgpt.data import INDEX_NAME, PackWriter, open_files
    from bgpt.files import check_output_folder

    out = check_output_folder(args.out, args.folders)
    if out.is_dir() and any(out.iterdir()) and not (args.force and (out / INDEX_NAME).is_file()):
        raise BGPTError(
            f"{out}: exists and is not empty"
            + (
                "; pass --force to replace the packed set there"
                if (out / INDEX_NAME).is_file()
                else ""
            )
        )
    files = open_files(args.folders)
    total = 0
    with PackWriter(args.out) as w:
        for i in tqdm(range(len(files)), desc="pack", unit="file"):
            data = files.read(i)
            w.add(files.names[i], data)
            total += len(data)
    print(
        f"packed {len(files)} files ({total / 1e6:.1f} MB) into {args.out} ({len(w.shard_names)} shard(s))"
    )
    return 0

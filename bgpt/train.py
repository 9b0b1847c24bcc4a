"""The one training loop: generative (files or conversion pairs) and classification.

A run folder holds everything needed to continue or use the run:

    RUN/config.json      the TrainConfig and the model config
    RUN/metrics.jsonl    one JSON object per logged step / evaluation
    RUN/ckpt-<step>/     model.safetensors + config.json + trainer.pt (optimizer, step, RNG)
    RUN/latest, RUN/best symlinks to checkpoint folders, swapped atomically
    RUN/loss.png         the loss curve

The data order is a pure function of (seed, step): step k takes global-batch slots
[k*G, (k+1)*G) of an endless sequence of per-epoch permutations, and each file's crop
comes from a generator seeded with (seed, epoch, file). The learning rate is a pure
function of the step. So resuming needs only the step, the optimizer and the torch RNG
state, and reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from bgpt.checkpoint import load, save_pretrained
from bgpt.config import MAX_BATCH, MODEL_FIELDS, BGPTConfig, TrainConfig, resolve_config  # noqa: F401 - re-exported
from bgpt.data import StreamDataset, label_of, train_eval_files
from bgpt.device import autocast, resolve_device, resolve_dtype, synchronize
from bgpt.errors import BGPTError
from bgpt.evaluate import evaluate_classifier, evaluate_generative
from bgpt.files import FolderLock, atomic_write, atomic_write_text, check_output_folder
from bgpt.model import BGPT, BGPTClassifier, build_model
from bgpt.stream import PAD, ROLE_NONE, collate

logger = logging.getLogger(__name__)

LN2 = math.log(2)
# --------------------------------------------------------------------------- pure functions


def lr_at(
    step: int, total: int, peak: float, warmup_frac: float = 0.1, min_ratio: float = 0.1
) -> float:
    """Linear warm-up over the first warmup_frac of the steps, then cosine to min_ratio*peak."""
    warm = int(warmup_frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def items_for_step(
    step: int, global_batch: int, num_items: int, seed: int
) -> list[tuple[int, int]]:
    """(epoch, item) for the global batch of `step`: consecutive slots of an endless
    sequence of per-epoch permutations of range(num_items)."""
    out = []
    cache: dict[int, np.ndarray] = {}
    for slot in range(step * global_batch, (step + 1) * global_batch):
        epoch, pos = divmod(slot, num_items)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng((seed, 7919, epoch)).permutation(num_items)
        out.append((epoch, int(cache[epoch][pos])))
    return out


# --------------------------------------------------------------------------- tasks


class GenerativeTask:
    """Next-byte prediction; the loss of a step is the mean over all its predicted symbols."""

    def __init__(self, sample_patches: int, loss_from_patch: int = 0):
        self.sample_patches = sample_patches
        self.loss_from_patch = loss_from_patch

    def _targets(self, batch) -> torch.Tensor:
        """(B, P) the patches whose predictions are trained on (the model predicts where
        mask[:, 1:] is set): the real patches, less those before loss_from_patch."""
        if self.loss_from_patch <= 1:
            return batch.mask
        mask = batch.mask.clone()
        mask[:, : self.loss_from_patch] = False
        return mask

    def units(self, batch) -> int:
        n = int(self._targets(batch)[:, 1:].sum())
        if 0 < self.sample_patches < n:
            n = self.sample_patches
        return n * batch.patches.shape[-1]

    def loss_sum(self, model, batch, labels):
        out = model(batch.patches, self._targets(batch), sample_patches=self.sample_patches)
        roles = batch.roles[:, 1:].reshape(-1, batch.patches.shape[-1])[out.rows]  # (N, S)
        scored = roles != ROLE_NONE
        data = scored & (batch.patches[:, 1:].reshape(-1, batch.patches.shape[-1])[out.rows] != PAD)
        return out.nll.sum(), {
            "bits": float(out.nll.detach()[scored].sum()) / LN2,
            "data_bytes": int(data.sum()),
        }


class ClassifyTask:
    def units(self, batch) -> int:
        return batch.patches.shape[0]

    def loss_sum(self, model, batch, labels):
        logits = model(batch.patches, batch.mask).float()
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        return loss, {"correct": int((logits.argmax(-1) == labels).sum()), "count": len(labels)}


# --------------------------------------------------------------------------- run folder


def _swap_link(run: Path, name: str, target: str) -> None:
    tmp = run / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, run / name)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random state a run draws from: the CPU generator, and the GPU's when it trains there
    (dropout on CUDA draws from the device's generator)."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def save_checkpoint(
    run: Path, model, optimizer, step: int, best: float | None, is_best: bool, extra: dict
) -> None:
    """ckpt-<step>/ written under a temporary name, renamed, then the links swapped."""
    name = f"ckpt-{step:08d}"
    tmp = run / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp, extra=extra)
    device = next(model.parameters()).device
    state = {
        "optimizer": optimizer.state_dict(),
        "step": step,
        "total": extra["total"],
        "best": best if best is not None else float("nan"),
        **rng_state(device),
    }
    atomic_write(tmp / "trainer.pt", lambda p: torch.save(state, p))
    shutil.rmtree(run / name, ignore_errors=True)
    os.replace(tmp, run / name)
    if is_best:  # best before latest: a writer killed between the two resumes from the older
        _swap_link(run, "best", name)  # checkpoint and redoes this one, links and all
    _swap_link(run, "latest", name)
    keep = {os.readlink(run / k) for k in ("latest", "best") if (run / k).is_symlink()}
    for old in run.glob("ckpt-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


class MetricsLog:
    """A run's metrics: one JSON object per line in RUN/metrics.jsonl and, where `tensorboard` is
    installed (the `tensorboard` extra), the same scalars as TensorBoard events in
    RUN/tensorboard/ (`tensorboard --logdir RUN`): train/* for steps, eval/* for evaluations."""

    def __init__(self, run: Path):
        self.file = open(run / "metrics.jsonl", "a")  # noqa: SIM115 - closed by close()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: the JSON lines alone
            return
        self.tb = SummaryWriter(str(run / "tensorboard"))

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = row["step"]
            for k, v in row.items():
                if (
                    k != "step"
                    and isinstance(v, int | float)
                    and not isinstance(v, bool)
                    and math.isfinite(v)
                ):
                    name = (
                        f"eval/{k.removeprefix('eval_')}" if k.startswith("eval_") else f"train/{k}"
                    )
                    self.tb.add_scalar(name, v, step)
            self.tb.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            pass
    return rows


def plot_metrics(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run)
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_bpb" in r or "eval_accuracy" in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [r["step"] for r in train],
        [r["loss"] for r in train],
        label="train loss (nats/symbol)",
        lw=1,
    )
    if evals and "eval_bpb" in evals[0]:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_bpb"] for r in evals],
            "o-",
            label="eval bits per byte",
        )
    if evals and "eval_accuracy" in evals[0]:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_accuracy"] for r in evals],
            "o-",
            label="eval accuracy",
        )
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(run.name)
    fig.tight_layout()
    atomic_write(run / "loss.png", lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


# --------------------------------------------------------------------------- set-up


def _dist_setup(device_name: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_name)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise BGPTError(
                f"process with LOCAL_RANK {local} needs GPU {local}, but {torch.cuda.device_count()} CUDA device(s) "
                "are visible: start at most one process per GPU, or train with --device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _build_model(cfg: TrainConfig, labels: list[str] | None, log) -> BGPT | BGPTClassifier:
    if cfg.init:
        init = load(cfg.init)
        config = init.config.replace(**cfg.model_overrides) if cfg.model_overrides else init.config
        if cfg.task == "classify":
            config = config.replace(
                num_classes=len(labels), labels=labels, byte_layers=init.config.byte_layers
            )
            model = BGPTClassifier(config)
            model.patch_decoder.load_state_dict(init.patch_decoder.state_dict())
            if isinstance(init, BGPTClassifier) and init.config.labels == labels:
                model.classifier.load_state_dict(init.classifier.state_dict())
            log(
                f"classifier initialised from {cfg.init} (patch-level decoder; byte-level decoder dropped)"
            )
            return model
        if init.config.is_classifier:
            raise BGPTError(
                f"{cfg.init} is a classifier; generative training needs a generative model"
            )
        model = build_model(config)
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError:
            raise BGPTError(
                f"{cfg.init}: only dropout can be changed when starting from a model, not its shape"
            ) from None
        log(f"initialised from {cfg.init}")
        return model
    config = resolve_config(cfg.config, **cfg.model_overrides)
    if cfg.task == "classify":
        config = config.replace(num_classes=len(labels), labels=labels)
    return build_model(config)


def new_optimizer(params, lr: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95), with PyTorch's fused kernel where the device has one (CPU and
    CUDA): about 3x faster than the per-tensor loop for `paper` on a CPU (docs/benchmarks.md)."""
    try:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wpe" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> dict:
    """Train as `cfg` says; returns the final report (also printed)."""
    return run_training(cfg)[0]


def run_training(cfg: TrainConfig) -> tuple[dict, torch.nn.Module]:
    """`train`, also returning the trained model (of this process)."""
    locks: list[FolderLock] = []
    try:
        return _run_training(cfg, locks)
    finally:
        for lock in locks:
            lock.release()


def _saved_train_config(run: Path, cfg: TrainConfig) -> TrainConfig:
    """A run's own settings for --resume, except those given now that only say how to go on."""
    try:
        saved = json.loads((run / "config.json").read_text())["train"]
        saved = {k: v for k, v in saved.items() if k != "resume"}
        defaults = TrainConfig()
        given = {
            k: getattr(cfg, k)
            for k in (
                "steps",
                "epochs",
                "save_every",
                "log_every",
                "device",
                "progress",
                "eval_max_files",
            )
            if getattr(cfg, k) != getattr(defaults, k)
        }
        return TrainConfig(**{**saved, **given, "resume": True})
    except BGPTError as e:
        raise BGPTError(f"{run / 'config.json'}: {e}; cannot resume") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BGPTError(
            f"{run / 'config.json'}: not a readable run config ({type(e).__name__}); cannot resume"
        ) from None


def _trainer_state(run: Path) -> dict:
    """The optimizer, step and RNG state of a run's latest checkpoint, checked."""
    path = run / "latest" / "trainer.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ok = (
            isinstance(state, dict)
            and isinstance(state["optimizer"], dict)
            and isinstance(state["torch_rng"], torch.Tensor)
        )
        int(state["step"]), int(state["total"]), float(state["best"])
    except Exception:  # truncated, foreign or pickled objects: all mean "cannot resume from this"
        ok = False
    if not ok:
        raise BGPTError(
            f"{path}: not a readable bgpt trainer state (truncated or foreign); cannot resume"
        )
    return state


def _run_training(cfg: TrainConfig, locks: list[FolderLock]) -> tuple[dict, torch.nn.Module]:
    rank, world, device = _dist_setup(cfg.device)
    master = rank == 0
    log = logger.info if master else (lambda *a, **k: None)
    run = Path(cfg.out)
    check_output_folder(run, [*cfg.data, *cfg.eval])
    if master and not cfg.resume and (run / "latest").exists():
        raise BGPTError(f"{run} already holds a run; use --resume to continue it or another --out")
    if cfg.resume and not (run / "latest").exists():
        raise BGPTError(f"{run}: no checkpoint to resume from")
    if cfg.resume:
        cfg = _saved_train_config(run, cfg)
        state = _trainer_state(run)
    dtype = resolve_dtype(cfg.dtype, device)
    micro = cfg.batch_size // cfg.grad_accum
    if micro % world:
        raise BGPTError(
            f"micro-batch {micro} (batch_size / grad_accum) is not divisible by {world} processes"
        )
    per_rank = micro // world

    # data
    train_files, eval_files = train_eval_files(cfg.data, cfg.eval, cfg.eval_fraction, cfg.seed)
    labels = None
    if cfg.task == "classify":
        labels = sorted({label_of(n) for n in train_files.names})
        if len(labels) < 2:
            raise BGPTError(f"classification needs at least 2 labels, found {labels}")
        if cfg.resume or cfg.init:
            prior = load(run if cfg.resume else cfg.init).config
            if prior.is_classifier and prior.labels and cfg.resume:
                labels = prior.labels

    torch.manual_seed(cfg.seed)
    model = load(run / "latest") if cfg.resume else _build_model(cfg, labels, log)
    config: BGPTConfig = model.config
    if cfg.task == "generate" and config.is_classifier:
        raise BGPTError("this run's model is a classifier; use bgpt train-classifier")
    train_set = StreamDataset(
        train_files,
        config.patch_size,
        config.max_patches,
        cfg.conversion,
        labels if cfg.task == "classify" else None,
    )
    eval_set = StreamDataset(
        eval_files,
        config.patch_size,
        config.max_patches,
        cfg.conversion,
        labels if cfg.task == "classify" else None,
    )
    if cfg.conversion and cfg.task == "classify":
        raise BGPTError("conversion pairs are for generative training")
    global_batch = cfg.batch_size
    steps_per_epoch = max(1, math.ceil(len(train_set) / global_batch))
    model.to(device)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    task = (
        ClassifyTask()
        if cfg.task == "classify"
        else GenerativeTask(cfg.sample_patches, cfg.loss_from_patch)
    )
    if cfg.resume:
        total = cfg.steps or int(state["total"])
    elif cfg.steps or cfg.epochs or not cfg.minutes:
        total = cfg.steps or (math.ceil(cfg.epochs * steps_per_epoch) if cfg.epochs else 1000)
    else:
        step_s = _time_trial_steps(
            model, task, train_set, cfg, device, dtype, micro, per_rank, rank
        )
        if world > 1:
            t = torch.tensor(step_s, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            step_s = float(t)
        evals = 1 + int(cfg.minutes * 60 / step_s) // cfg.save_every
        total = max(1, int((cfg.minutes * 60 * 0.97 - 2 * evals) / step_s))
        log(f"{step_s:.2f} s per step: {total} steps fit in {cfg.minutes:g} minutes")
    # A few trial steps misjudge the pace (cold caches, step sizes that vary with the data):
    # a --minutes run plans once more from its own pace after a tenth of its steps.
    replan = bool(cfg.minutes) and not cfg.resume and not cfg.steps and not cfg.epochs
    model.train()
    optimizer = new_optimizer(_param_groups(model, cfg.weight_decay), cfg.lr)
    start, best = 0, None
    if master:  # from here on this process writes the run folder: one writer at a time
        run.mkdir(parents=True, exist_ok=True)
        locks.append(FolderLock(run, "run folder").acquire())
        if not cfg.resume and (run / "latest").exists():  # another run finished here meanwhile
            raise BGPTError(
                f"{run} already holds a run; use --resume to continue it or another --out"
            )
    if cfg.resume:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise BGPTError(
                f"{run}/latest/trainer.pt: optimizer state does not fit this model ({e}); cannot resume"
            ) from None
        start, best = (
            int(state["step"]),
            (None if math.isnan(state["best"]) else float(state["best"])),
        )
        set_rng_state(state, device)
        if master:  # drop metric lines logged after the checkpoint
            rows = [r for r in read_metrics(run) if r.get("step", 0) <= start]
            atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        log(f"resuming {run} at step {start}")
    elif master:
        (run / "metrics.jsonl").unlink(missing_ok=True)
    if master:
        atomic_write_text(
            run / "config.json",
            json.dumps({"train": dataclasses.asdict(cfg), "model": config.to_dict()}, indent=2),
        )

    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)

    log(
        f"{cfg.task}: {len(train_set)} training items, {len(eval_set)} eval items; {model.num_parameters() / 1e6:.2f} M parameters; "
        f"{total} steps of {global_batch} ({cfg.grad_accum} x {micro}, {world} process(es)); {device}, {str(dtype).removeprefix('torch.')}"
    )
    metrics_file = MetricsLog(run) if master else None
    bar = tqdm(
        total=total,
        initial=start,
        desc="train",
        unit="step",
        disable=not (master and cfg.progress),
        dynamic_ncols=True,
    )
    t_start, window_bytes, window_time = time.time(), 0, 0.0
    last_eval: dict = {}
    step = start
    stats_acc: dict[str, float] = {}
    deadline = t_start + cfg.minutes * 60 * 0.97
    try:
        while step < total:
            t0 = time.time()
            lr = lr_at(step, total, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro_batches = step_batches(train_set, step, cfg, micro, per_rank, rank, device)
            units = torch.tensor(float(sum(task.units(b) for b, _ in micro_batches)), device=device)
            if world > 1:
                dist.all_reduce(units)
            units.clamp_(
                min=1
            )  # a batch with nothing to predict (loss_from_patch) adds no gradient
            loss_total, nbytes = 0.0, 0
            step_stats: dict[str, float] = {}
            for m, (batch, labels_t) in enumerate(micro_batches):
                sync = m == len(micro_batches) - 1 or world == 1
                ctx = net.no_sync() if (world > 1 and not sync) else contextlib.nullcontext()
                with ctx:
                    with autocast(device, dtype):
                        loss_sum, stats = task.loss_sum(net, batch, labels_t)
                    (loss_sum * (world / units)).backward()
                loss_total += float(loss_sum.detach())
                nbytes += batch.num_bytes
                for k, v in stats.items():
                    step_stats[k] = step_stats.get(k, 0) + v
            if world > 1:  # the logged loss is the global one
                t = torch.tensor(
                    [loss_total, nbytes, *step_stats.values()], dtype=torch.float64, device=device
                )
                dist.all_reduce(t)
                loss_total, nbytes = float(t[0]), int(t[1])
                step_stats = dict(zip(step_stats, t[2:].tolist(), strict=False))
            gnorm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.grad_clip if cfg.grad_clip else float("inf")
            )
            if not (
                math.isfinite(loss_total) and math.isfinite(float(gnorm))
            ):  # before the update: weights stay good
                last = (
                    f"the last good checkpoint is {run / 'latest'}"
                    if (run / "latest").exists()
                    else "no checkpoint was saved yet"
                )
                raise BGPTError(
                    f"training diverged at step {step + 1} (loss {loss_total}, gradient norm {float(gnorm)}); "
                    f"{last}; try a lower --lr or --grad-clip"
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_total / float(units)
            window_bytes += nbytes
            window_time += time.time() - t0
            for k, v in step_stats.items():
                stats_acc[k] = stats_acc.get(k, 0) + v
            done = step + 1
            if master:
                row = {"step": done, "loss": loss, "lr": lr, "grad_norm": float(gnorm)}
                if "data_bytes" in step_stats and step_stats["data_bytes"]:
                    row["bpb"] = step_stats["bits"] / step_stats["data_bytes"]
                if "count" in step_stats:
                    row["accuracy"] = step_stats["correct"] / step_stats["count"]
                bar.set_postfix(
                    loss=f"{loss:.4f}",
                    **({"bpb": f"{row['bpb']:.3f}"} if "bpb" in row else {}),
                    **{"B/s": f"{window_bytes / max(window_time, 1e-9):.0f}"},
                    refresh=False,
                )
                bar.update(1)
                if done % cfg.log_every == 0 or done == total:
                    row["bytes_per_s"] = window_bytes / max(window_time, 1e-9)
                    if "data_bytes" in stats_acc and stats_acc["data_bytes"]:
                        row["bpb"] = stats_acc["bits"] / stats_acc["data_bytes"]
                    metrics_file.write(row)
                    window_bytes, window_time, stats_acc = 0, 0.0, {}
            if done % cfg.save_every == 0 or done == total:
                if master:
                    last_eval = _evaluate(model, eval_set, cfg, device, dtype, per_rank)
                    score = last_eval.get("eval_bpb", last_eval.get("eval_loss"))
                    if cfg.task == "classify":
                        score = -last_eval["eval_accuracy"]
                    is_best = best is None or (score is not None and score < best)
                    if is_best:
                        best = score
                    metrics_file.write({"step": done, **last_eval})
                    save_checkpoint(
                        run,
                        model,
                        optimizer,
                        done,
                        best,
                        is_best,
                        {"step": done, "total": total, **last_eval},
                    )
                    plot_metrics(run)
                if world > 1:
                    dist.barrier()
            step = done
            if (
                replan and done == start + max(20, total // 10) < total
            ):  # the same step on every rank
                replan = False
                total = _replan(done, start, t_start, time.time(), deadline)
                if world > 1:  # every process takes rank 0's figure
                    t = torch.tensor(total, device=device)
                    dist.broadcast(t, 0)
                    total = int(t)
                bar.total = total
                bar.refresh()
                log(
                    f"re-planned from the measured pace: {total} steps fit in {cfg.minutes:g} minutes"
                )
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    elapsed = time.time() - t_start
    report = {"run": str(run), "steps": total, "seconds": round(elapsed, 1), **last_eval}
    if master:
        rows = [r for r in read_metrics(run) if "loss" in r]
        if rows:
            report["train_loss"] = rows[-1]["loss"]
            if "bpb" in rows[-1]:
                report["train_bpb"] = rows[-1]["bpb"]
        lines = [f"trained {total - start} steps in {elapsed:.0f} s"]
        if "train_loss" in report:
            lines.append(
                f"train loss {report['train_loss']:.4f}"
                + (f", train BPB {report['train_bpb']:.3f}" if "train_bpb" in report else "")
            )
        if "eval_bpb" in last_eval:
            lines.append(
                f"eval BPB {last_eval['eval_bpb']:.4f} on {last_eval['eval_files']} files (reference loss {last_eval['eval_loss']:.4f})"
            )
        if "eval_accuracy" in last_eval:
            lines.append(
                f"eval accuracy {last_eval['eval_accuracy']:.4f} on {last_eval['eval_files']} files"
            )
        lines.append(
            f"run folder: {run} (best checkpoint: {os.readlink(run / 'best') if (run / 'best').is_symlink() else '-'}; loss curve: {run / 'loss.png'})"
        )
        log("\n".join(lines))
    return report, model


def _replan(done: int, start: int, t_start: float, now: float, deadline: float) -> int:
    """The total steps of a --minutes run that made steps start..done between t_start and now
    (evaluations included): as many more as fit before `deadline` at that pace."""
    pace = (now - t_start) / (done - start)
    return done + max(1, int((deadline - now) / pace))


def _time_trial_steps(
    model,
    task,
    train_set,
    cfg: TrainConfig,
    device,
    dtype,
    micro: int,
    per_rank: int,
    rank: int,
    trials: int = 4,
) -> float:
    """Median seconds per optimizer step, timed on a throw-away copy of the model."""
    import copy

    trial = copy.deepcopy(model)
    opt = new_optimizer(trial.parameters(), 0.0)
    saved_rng = rng_state(device)
    times = []
    for step in range(trials):
        synchronize(device)
        t0 = time.time()
        for batch, labels in step_batches(train_set, step, cfg, micro, per_rank, rank, device):
            with autocast(device, dtype):
                loss, _ = task.loss_sum(trial, batch, labels)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.time() - t0)
    set_rng_state(saved_rng, device)  # the real run starts from the same random state
    del trial, opt
    return float(np.median(times[1:]))


def step_batches(
    train_set: StreamDataset,
    step: int,
    cfg: TrainConfig,
    micro: int,
    per_rank: int,
    rank: int,
    device,
) -> list[tuple]:
    """This process's micro-batches of optimizer step `step`: (Batch, labels) for each of the
    grad_accum micro-steps, its share of each (the global batch's slots are a pure function of
    the step, so a resumed run sees the same data)."""
    slots = items_for_step(step, cfg.batch_size, len(train_set), cfg.seed)
    out = []
    for m in range(cfg.grad_accum):
        mine = slots[m * micro + rank * per_rank : m * micro + (rank + 1) * per_rank]
        examples = [train_set.train_example(item, cfg.seed, epoch) for epoch, item in mine]
        batch = collate([e.stream for e in examples], bucket=16, max_patches=train_set.max_patches)
        out.append((batch.to(device), torch.tensor([e.label for e in examples], device=device)))
    return out


def _evaluate(
    model, eval_set: StreamDataset, cfg: TrainConfig, device, dtype, batch_size: int
) -> dict:
    if cfg.task == "classify":
        r = evaluate_classifier(model, eval_set, batch_size, device, dtype, cfg.eval_max_files)
        return {"eval_accuracy": r["accuracy"], "eval_loss": r["loss"], "eval_files": r["files"]}
    r = evaluate_generative(model, eval_set, batch_size, device, dtype, cfg.eval_max_files)
    out = {"eval_bpb": r["bpb"], "eval_loss": r["reference_loss"], "eval_files": r["files"]}
    if "bpb_target" in r:
        out["eval_bpb_input"], out["eval_bpb_target"] = r["bpb_input"], r["bpb_target"]
    return out

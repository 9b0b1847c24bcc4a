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
    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def units(self, batch) -> int:
        return batch.patches.shape[0]

    def loss_sum(self, model, batch, labels):
        logits = model(batch.patches, batch.mask).float()
        loss = torch.nn.functional.cross_entropy(
            logits, labels, reduction="sum", label_smoothing=self.label_smoothing
        )
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


@dataclasses.dataclass
class _Run:
    """What `_setup` made ready: this process, the data, the model and its optimizer, and
    where the run starts and ends."""

    cfg: TrainConfig
    run: Path
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    micro: int  # items per micro-batch, all processes together
    per_rank: int  # this process's share of a micro-batch
    train_set: StreamDataset
    eval_set: StreamDataset
    model: torch.nn.Module
    net: torch.nn.Module  # the model as stepped: DDP-wrapped and/or compiled
    task: GenerativeTask | ClassifyTask
    optimizer: torch.optim.Optimizer
    start: int
    total: int
    best: float | None
    replan: bool  # a --minutes run measures its own pace once and re-plans its steps

    @property
    def master(self) -> bool:
        return self.rank == 0

    def log(self, message: str) -> None:
        if self.master:
            logger.info(message)


def _run_training(cfg: TrainConfig, locks: list[FolderLock]) -> tuple[dict, torch.nn.Module]:
    r = _setup(cfg, locks)
    cfg, run, total = r.cfg, r.run, r.total
    metrics_file = MetricsLog(run) if r.master else None
    bar = tqdm(
        total=total,
        initial=r.start,
        desc="train",
        unit="step",
        disable=not (r.master and cfg.progress),
        dynamic_ncols=True,
    )
    t_start, window_bytes, window_time = time.time(), 0, 0.0
    deadline = t_start + cfg.minutes * 60 * 0.97
    last_eval: dict = {}
    stats_acc: dict[str, float] = {}
    step = r.start
    try:
        while step < total:
            t0 = time.time()
            lr = lr_at(step, total, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
            loss, nbytes, step_stats, gnorm = _step(r, r.net, r.model, r.optimizer, step, lr)
            window_bytes += nbytes
            window_time += time.time() - t0
            for k, v in step_stats.items():
                stats_acc[k] = stats_acc.get(k, 0) + v
            done = step + 1
            if r.master:
                row = {"step": done, "loss": loss, "lr": lr, "grad_norm": gnorm}
                if step_stats.get("data_bytes"):
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
                    if stats_acc.get("data_bytes"):
                        row["bpb"] = stats_acc["bits"] / stats_acc["data_bytes"]
                    metrics_file.write(row)
                    window_bytes, window_time, stats_acc = 0, 0.0, {}
            if done % cfg.save_every == 0 or done == total:
                if r.master:
                    last_eval = _evaluate_and_save(r, done, total, metrics_file)
                if r.world > 1:
                    dist.barrier()
            step = done
            if r.replan and done == r.start + max(20, total // 10) < total:  # same step everywhere
                r.replan = False
                total = _replan(done, r.start, t_start, time.time(), deadline)
                if r.world > 1:  # every process takes rank 0's figure
                    t = torch.tensor(total, device=r.device)
                    dist.broadcast(t, 0)
                    total = int(t)
                bar.total = total
                bar.refresh()
                r.log(
                    f"re-planned from the measured pace: {total} steps fit in {cfg.minutes:g} minutes"
                )
    finally:
        bar.close()
        if metrics_file:
            metrics_file.close()
    return _report(r, total, time.time() - t_start, last_eval), r.model


def _setup(cfg: TrainConfig, locks: list[FolderLock]) -> _Run:
    """Check the run folder, read the data, build or resume the model and optimizer, plan the
    steps, and take the run folder (lock, config.json)."""
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
    if cfg.conversion and cfg.task == "classify":
        raise BGPTError("conversion pairs are for generative training")

    torch.manual_seed(cfg.seed)
    model = load(run / "latest") if cfg.resume else _build_model(cfg, labels, log)
    config: BGPTConfig = model.config
    if cfg.task == "generate" and config.is_classifier:
        raise BGPTError("this run's model is a classifier; use bgpt train-classifier")
    sets = [
        StreamDataset(
            files,
            config.patch_size,
            config.max_patches,
            cfg.conversion,
            labels if cfg.task == "classify" else None,
            shift_bytes=cfg.shift_bytes,
        )
        for files in (train_files, eval_files)
    ]
    model.to(device)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    task = (
        ClassifyTask(cfg.label_smoothing)
        if cfg.task == "classify"
        else GenerativeTask(cfg.sample_patches, cfg.loss_from_patch)
    )
    r = _Run(cfg, run, rank, world, device, dtype, micro, per_rank, *sets, model, model, task,
             new_optimizer(_param_groups(model, cfg.weight_decay), cfg.lr), 0, 0, None,
             replan=bool(cfg.minutes) and not (cfg.resume or cfg.steps or cfg.epochs))  # fmt: skip

    # how many steps
    if cfg.resume:
        r.total = cfg.steps or int(state["total"])
    elif cfg.steps or cfg.epochs or not cfg.minutes:
        steps_per_epoch = max(1, math.ceil(len(r.train_set) / cfg.batch_size))
        r.total = cfg.steps or (math.ceil(cfg.epochs * steps_per_epoch) if cfg.epochs else 1000)
    else:  # a few trial steps misjudge the pace (cold caches, data of varying sizes): r.replan
        step_s = _time_trial_steps(r)
        if world > 1:
            t = torch.tensor(step_s, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            step_s = float(t)
        evals = 1 + int(cfg.minutes * 60 / step_s) // cfg.save_every
        r.total = max(1, int((cfg.minutes * 60 * 0.97 - 2 * evals) / step_s))
        log(f"{step_s:.2f} s per step: {r.total} steps fit in {cfg.minutes:g} minutes")
    model.train()

    if master:  # from here on this process writes the run folder: one writer at a time
        run.mkdir(parents=True, exist_ok=True)
        locks.append(FolderLock(run, "run folder").acquire())
        if not cfg.resume and (run / "latest").exists():  # another run finished here meanwhile
            raise BGPTError(
                f"{run} already holds a run; use --resume to continue it or another --out"
            )
    if cfg.resume:
        try:
            r.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise BGPTError(
                f"{run}/latest/trainer.pt: optimizer state does not fit this model ({e}); cannot resume"
            ) from None
        r.start = int(state["step"])
        r.best = None if math.isnan(state["best"]) else float(state["best"])
        set_rng_state(state, device)
        if master:  # drop metric lines logged after the checkpoint
            rows = [row for row in read_metrics(run) if row.get("step", 0) <= r.start]
            atomic_write_text(
                run / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows)
            )
        log(f"resuming {run} at step {r.start}")
    elif master:
        (run / "metrics.jsonl").unlink(missing_ok=True)
    if master:
        atomic_write_text(
            run / "config.json",
            json.dumps({"train": dataclasses.asdict(cfg), "model": config.to_dict()}, indent=2),
        )

    if world > 1:
        r.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        r.net = torch.compile(r.net)
    log(
        f"{cfg.task}: {len(r.train_set)} training items, {len(r.eval_set)} eval items; {model.num_parameters() / 1e6:.2f} M parameters; "
        f"{r.total} steps of {cfg.batch_size} ({cfg.grad_accum} x {micro}, {world} process(es)); {device}, {str(dtype).removeprefix('torch.')}"
    )
    return r


def _step(
    r: _Run, net: torch.nn.Module, model: torch.nn.Module, optimizer, step: int, lr: float
) -> tuple[float, int, dict[str, float], float]:
    """One optimizer step at learning rate `lr` over step `step`'s global batch (every
    micro-batch, every process): returns the loss per predicted unit, the bytes seen, the
    task's statistics and the gradient norm. Stops the run (BGPTError) before the update when
    the loss or the gradient is not finite, so the weights stay good."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro_batches = step_batches(r.train_set, step, r.cfg, r.micro, r.per_rank, r.rank, r.device)
    units = torch.tensor(float(sum(r.task.units(b) for b, _ in micro_batches)), device=r.device)
    if r.world > 1:
        dist.all_reduce(units)
    units.clamp_(min=1)  # a batch with nothing to predict (loss_from_patch) adds no gradient
    loss_total, nbytes = 0.0, 0
    stats: dict[str, float] = {}
    for m, (batch, labels) in enumerate(micro_batches):
        sync = m == len(micro_batches) - 1 or r.world == 1
        no_sync = r.world > 1 and not sync and hasattr(net, "no_sync")
        with net.no_sync() if no_sync else contextlib.nullcontext():
            with autocast(r.device, r.dtype):
                loss_sum, batch_stats = r.task.loss_sum(net, batch, labels)
            (loss_sum * (r.world / units)).backward()
        loss_total += float(loss_sum.detach())
        nbytes += batch.num_bytes
        for k, v in batch_stats.items():
            stats[k] = stats.get(k, 0) + v
    if r.world > 1:  # the logged loss is the global one
        t = torch.tensor(
            [loss_total, nbytes, *stats.values()], dtype=torch.float64, device=r.device
        )
        dist.all_reduce(t)
        loss_total, nbytes = float(t[0]), int(t[1])
        stats = dict(zip(stats, t[2:].tolist(), strict=False))
    gnorm = float(
        torch.nn.utils.clip_grad_norm_(
            model.parameters(), r.cfg.grad_clip if r.cfg.grad_clip else float("inf")
        )
    )
    if not (math.isfinite(loss_total) and math.isfinite(gnorm)):
        last = (
            f"the last good checkpoint is {r.run / 'latest'}"
            if (r.run / "latest").exists()
            else "no checkpoint was saved yet"
        )
        raise BGPTError(
            f"training diverged at step {step + 1} (loss {loss_total}, gradient norm {gnorm}); "
            f"{last}; try a lower --lr or --grad-clip"
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_total / float(units), nbytes, stats, gnorm


def _evaluate_and_save(r: _Run, done: int, total: int, metrics_file: MetricsLog) -> dict:
    """Evaluate after step `done`, log it, save a checkpoint (the best one too when it is)."""
    last_eval = _evaluate(r.model, r.eval_set, r.cfg, r.device, r.dtype, r.per_rank)
    score = last_eval.get("eval_bpb", last_eval.get("eval_loss"))
    if r.cfg.task == "classify":
        score = -last_eval["eval_accuracy"]
    is_best = r.best is None or (score is not None and score < r.best)
    if is_best:
        r.best = score
    metrics_file.write({"step": done, **last_eval})
    save_checkpoint(
        r.run,
        r.model,
        r.optimizer,
        done,
        r.best,
        is_best,
        {"step": done, "total": total, **last_eval},
    )
    plot_metrics(r.run)
    return last_eval


def _report(r: _Run, total: int, elapsed: float, last_eval: dict) -> dict:
    """The run's summary (returned by `train`), logged as a few lines by rank 0."""
    run = r.run
    report = {"run": str(run), "steps": total, "seconds": round(elapsed, 1), **last_eval}
    if not r.master:
        return report
    rows = [row for row in read_metrics(run) if "loss" in row]
    if rows:
        report["train_loss"] = rows[-1]["loss"]
        if "bpb" in rows[-1]:
            report["train_bpb"] = rows[-1]["bpb"]
    lines = [f"trained {total - r.start} steps in {elapsed:.0f} s"]
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
    best = os.readlink(run / "best") if (run / "best").is_symlink() else "-"
    lines.append(f"run folder: {run} (best checkpoint: {best}; loss curve: {run / 'loss.png'})")
    r.log("\n".join(lines))
    return report


def _replan(done: int, start: int, t_start: float, now: float, deadline: float) -> int:
    """The total steps of a --minutes run that made steps start..done between t_start and now
    (evaluations included): as many more as fit before `deadline` at that pace."""
    pace = (now - t_start) / (done - start)
    return done + max(1, int((deadline - now) / pace))


def _time_trial_steps(r: _Run, trials: int = 4) -> float:
    """Median seconds per optimizer step (the real step, learning rate 0), timed on a
    throw-away copy of the model and optimizer; the random state is restored after."""
    import copy

    trial = copy.deepcopy(r.model)
    opt = new_optimizer(trial.parameters(), 0.0)
    saved_rng = rng_state(r.device)
    times = []
    for step in range(trials):
        synchronize(r.device)
        t0 = time.time()
        _step(r, trial, trial, opt, step, 0.0)
        synchronize(r.device)
        times.append(time.time() - t0)
    set_rng_state(saved_rng, r.device)  # the real run starts from the same random state
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

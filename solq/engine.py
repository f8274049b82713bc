"""Training and evaluation loops (DETR's ``engine.py``), with exact resume and torchrun data parallelism.

``train(cfg)`` builds everything from a ``Config`` (``solq.builders``), trains ``cfg.train.epochs``
epochs with ``train_one_epoch`` and runs the hooks of ``solq.hooks`` around it. It writes into
``cfg.output_dir``:

* ``config.yaml`` (the resolved config) and ``checkpoint.pth`` (one rolling file, replaced atomically
  at every epoch end and every ``checkpoint_every_iters`` steps; the resume point and the weights for
  ``solq eval`` / ``solq predict`` / ``solq.Predictor``);
* ``metrics.jsonl`` (``solq.metrics_log``). ``"loss"`` is the weighted total that is optimised; the
  ``<terms>`` (``loss_ce``, ``loss_bbox``, ``loss_giou``, ``loss_vector``, last decoder layer) are
  **unweighted**: the official SOLQ / Deformable DETR logs print the terms multiplied by their
  weights, so its ``loss_vector`` is λ_vec (3) times ours, ``loss_ce`` 2×, ``loss_bbox`` 5× and
  ``loss_giou`` 2×, while the totals are equal;
* ``curves.png``: training loss and AP curves, redrawn after each epoch.

Data parallel: launch the same command with ``torchrun --nproc_per_node N`` (``solq.distributed``);
every process draws its share of every batch from ``ResumableBatchSampler`` and ``data.batch_size``
is *per process*.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from .builders import (
    TrainingParts,
    build_codec,
    build_criterion,
    build_dataset,
    build_model,
    build_training,
    make_eval_loader,
    make_loader,
    param_groups,
    split_paths,
)
from .checkpoint import CHECKPOINT_NAME, codec_from_state, codec_state, load_checkpoint, load_model_weights
from .config import Config, ConfigError, save_config
from .distributed import DistInfo, all_gather, barrier, broadcast, set_threads, setup_distributed
from .hooks import CallbackHook, CheckpointHook, CurvesHook, EvalHook, HookBase, MetricsHook, TrainState
from .inference import list_images, predict
from .metrics_log import CURVES_NAME, METRICS_NAME, MetricsLog, plot_curves, read_metrics
from .rng import seed_everything, set_rng_state
from .trained import describe_ids, load_trained

__all__ = [  # the loops and drivers, and the names solq.engine has always offered (now defined below it)
    "TrainingError", "train_one_epoch", "predict_coco", "evaluate", "train", "run_evaluation",
    "build_codec", "build_criterion", "build_dataset", "build_model", "build_training", "make_loader",
    "param_groups", "split_paths", "list_images", "predict", "read_metrics", "plot_curves", "MetricsLog",
    "describe_ids", "load_trained", "CHECKPOINT_NAME", "TrainState",
]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, ...); the message says where and why."""


# ---------------------------------------------------------------------------- loops
def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def train_one_epoch(
    model: torch.nn.Module,
    criterion,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    *,
    clip_max_norm: float = 0.0,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp: bool = False,
    hooks: Sequence[HookBase] = (),
    max_iters: Optional[int] = None,
    show_progress: bool = True,
) -> TrainState:
    """One pass over ``loader`` from batch ``state.iter_in_epoch`` of epoch ``state.epoch``, on the device of
    the model; ``after_step(state)`` of every hook runs after each optimizer step. Stops early when
    ``state.global_step`` reaches ``max_iters``. Returns ``state``, advanced.

    A non-finite loss raises ``TrainingError`` naming the term and the batch's image ids.
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    model.train()
    criterion.train()
    state.iters_per_epoch = len(loader)
    bar = tqdm(total=len(loader), initial=state.iter_in_epoch, desc=f"epoch {state.epoch}", disable=not show_progress,
               mininterval=2.0, dynamic_ncols=True, file=sys.stderr)
    for batch in loader:
        image_ids = [t["image_id"] for t in batch.targets]
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, amp):
            outputs = model(batch.images, batch.pixel_mask)
        try:
            loss_dict = criterion(_to_float(outputs), batch.targets)
            loss = criterion.total_loss(loss_dict)
            if not torch.isfinite(loss):
                raise FloatingPointError(_non_finite_term(loss_dict, criterion.weight_dict, loss))
        except FloatingPointError as err:
            raise TrainingError(
                f"non-finite loss at epoch {state.epoch}, iteration {state.iter_in_epoch} (global step "
                f"{state.global_step + 1}), batch image ids {image_ids}: {err}; nothing was saved for this step — "
                "lower train.lr, check the data of these images, or resume from the last checkpoint"
            ) from None
        _optimizer_step(model, loss, optimizer, scaler, clip_max_norm)
        state.iter_in_epoch += 1
        state.global_step += 1
        state.loss, state.loss_dict, state.n_images = loss, loss_dict, len(image_ids)
        state.lr = optimizer.param_groups[0]["lr"]
        bar.update(1)
        for hook in hooks:
            hook.after_step(state)
        if state.postfix:
            bar.set_postfix(**state.postfix)
            state.postfix = {}
        if max_iters is not None and state.global_step >= max_iters:
            break
    bar.close()
    return state


def _optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                    scaler: Optional[torch.amp.GradScaler], clip_max_norm: float) -> None:
    """Backward pass, optional gradient clipping and the optimizer step (through ``scaler`` when enabled)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if clip_max_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        optimizer.step()


def _non_finite_term(loss_dict: dict, weights: dict, total: torch.Tensor) -> str:
    """Which term made the weighted total loss non-finite: a raw term, a weighted one, or the sum."""
    for k, v in loss_dict.items():
        if not torch.isfinite(v).all():
            return f"loss term {k} is {v.item()}"
    weighted = {k: loss_dict[k] * w for k, w in weights.items() if k in loss_dict}
    for k, v in weighted.items():
        if not torch.isfinite(v).all():
            return f"weighted loss term {k} (weight {weights[k]} x {loss_dict[k].item():.6g}) is {v.item()}"
    top = max(weighted, key=lambda k: abs(weighted[k].item()))
    return f"the sum of the weighted loss terms overflowed to {total.item()} (largest: {top} = {weighted[top].item():.6g})"


def _to_float(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float(v) for v in outputs]
    return outputs


@torch.no_grad()
def predict_coco(model, postprocess, loader: DataLoader, category_ids: Sequence[int], device: torch.device,
                 info: DistInfo = DistInfo(), amp: bool = False) -> list[dict]:
    """COCO result dicts for every image of ``loader`` (gathered from all processes, deduplicated)."""
    from tqdm import tqdm

    from .models import results_to_coco

    model.eval()
    results: list[dict] = []
    seen: set[int] = set()
    for batch in tqdm(loader, desc="eval", disable=not info.is_main, mininterval=2.0, file=sys.stderr):
        image_ids = [int(t["image_id"]) for t in batch.targets]
        orig = torch.stack([torch.as_tensor(t["orig_size"]) for t in batch.targets]).to(device)
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, amp):
            outputs = model(batch.images, batch.pixel_mask)
        res = postprocess(_to_float(outputs), orig)
        keep = [i for i, iid in enumerate(image_ids) if iid not in seen]
        seen.update(image_ids)
        results += results_to_coco([res[i] for i in keep], [image_ids[i] for i in keep], category_ids)
    if info.enabled:
        merged, seen = [], set()
        for part in all_gather(results, info):
            ids = {r["image_id"] for r in part}
            merged += [r for r in part if r["image_id"] not in seen]
            seen |= ids
        results = merged
    return results


def evaluate(model, postprocess, loader: DataLoader, dataset, device: torch.device, info: DistInfo = DistInfo(),
             iou_types: Optional[Sequence[str]] = None, amp: bool = False) -> dict:
    """COCO metrics of ``model`` on ``dataset`` (needs ``.coco`` and ``.category_ids``); computed on rank 0
    and broadcast, so every process returns the same dict.

    ``iou_types`` defaults to bbox, segm and boundary, or bbox alone for a detector without a mask head
    (whose mask AP would be a meaningless 0).
    """
    from .evaluation import evaluate_coco

    if iou_types is None:
        iou_types = ("bbox", "segm", "boundary") if getattr(_unwrap(model), "with_vector", True) else ("bbox",)
    results = predict_coco(model, postprocess, loader, dataset.category_ids, device, info, amp)
    metrics = None
    if info.is_main:
        ids = list(getattr(dataset, "image_ids", []))
        metrics = evaluate_coco(dataset.coco, results, iou_types=iou_types, img_ids=ids or None)
    return broadcast(metrics, info)


# ---------------------------------------------------------------------------- train driver
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def train(
    cfg: Config,
    resume: bool = False,
    on_step: Optional[Callable[[int, int, int], None]] = None,
) -> dict:
    """Train from ``cfg`` (resuming from ``<output_dir>/checkpoint.pth`` when ``resume``); ``on_step(epoch,
    iter_done, global_step)`` runs after every step.

    Returns ``{"output_dir", "global_step", "epoch", "metrics" (last evaluation or None)}``.
    """
    info = setup_distributed(cfg.train.device)
    device = info.device
    set_threads(cfg.train.num_threads)
    out = Path(cfg.output_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(info)

    saved = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; train without --resume first")
        saved = load_checkpoint(ckpt_path)
    seed_everything(cfg.train.seed)

    codec = codec_from_state(saved["codec"]) if saved and "codec" in saved else build_codec(cfg)
    parts = build_training(cfg, codec, info)
    log = MetricsLog(out / METRICS_NAME, enabled=info.is_main)
    state = TrainState()
    if saved is not None:
        state = _restore(saved, ckpt_path, parts, log, info)
    elif info.is_main:
        log.truncate_after(-1)  # a fresh run in a used folder starts a fresh log
        save_config(cfg, out / "config.yaml")

    ddp_model = parts.model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            parts.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )
    hooks = _hooks(cfg, parts, codec, log, ckpt_path, info, on_step)
    _run_epochs(ddp_model, parts, state, hooks, cfg, info)
    barrier(info)
    metrics = next((h.metrics for h in hooks if isinstance(h, EvalHook)), None)
    return {"output_dir": str(out), "global_step": state.global_step, "epoch": state.epoch, "metrics": metrics}


def _hooks(cfg: Config, parts: TrainingParts, codec, log: MetricsLog, ckpt_path: Path, info: DistInfo,
           on_step: Optional[Callable[[int, int, int], None]] = None) -> list[HookBase]:
    """The run's hooks, in the order they run: metrics log, checkpoint, evaluation, curves, ``on_step``."""
    from .models import PostProcess

    hooks: list[HookBase] = [
        MetricsHook(log, cfg.train.log_every, info),
        CheckpointHook(ckpt_path, {"model": parts.model, "optimizer": parts.optimizer,
                                   "lr_scheduler": parts.scheduler, "scaler": parts.scaler, "sampler": parts.sampler},
                       {"config": cfg.to_dict(), "codec": codec_state(codec), "category_ids": parts.category_ids,
                        "class_names": list(getattr(parts.train_ds, "class_names", []))},
                       info, every=cfg.train.checkpoint_every_iters),
    ]
    if parts.val_loader is not None:
        run_eval = functools.partial(_evaluate_saved_epoch, parts.model, PostProcess(codec, num_select=100, output="rle"),
                                     parts.val_loader, parts.val_ds, info, cfg, ckpt_path=ckpt_path)
        hooks.append(EvalHook(run_eval, cfg.train.eval_every, cfg.train.epochs, log, info))
    hooks.append(CurvesHook(log, ckpt_path.parent / CURVES_NAME, info))
    if on_step is not None:
        hooks.append(CallbackHook(on_step))
    return hooks


def _restore(saved: dict, ckpt_path: Path, parts: TrainingParts, log: MetricsLog, info: DistInfo) -> TrainState:
    """Load a checkpoint's states into the run's parts; the ``TrainState`` to continue from."""
    load_model_weights(parts.model, saved, source=str(ckpt_path))
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.scheduler.load_state_dict(saved["lr_scheduler"])
    if saved.get("scaler"):
        parts.scaler.load_state_dict(saved["scaler"])
    parts.sampler.check_compatible(saved.get("sampler", {}))
    state = TrainState(saved["epoch"], saved["iter_in_epoch"], saved["global_step"])
    rng = saved["rng"]
    set_rng_state(rng[info.rank] if isinstance(rng, list) and len(rng) == info.world_size else rng)
    if info.is_main:
        log.truncate_after(state.global_step)
        print(f"resumed from {ckpt_path}: epoch {state.epoch}, iteration {state.iter_in_epoch}, "
              f"step {state.global_step}", file=sys.stderr)
    return state


def _run_epochs(model: torch.nn.Module, parts: TrainingParts, state: TrainState, hooks: Sequence[HookBase],
                cfg: Config, info: DistInfo) -> None:
    """Epochs ``state.epoch`` .. ``cfg.train.epochs - 1`` (or up to ``train.max_iters`` steps), hooks around them."""
    max_iters = cfg.train.max_iters
    for hook in hooks:
        hook.before_train(state)
    first = state.epoch
    for epoch in range(first, cfg.train.epochs):
        if epoch != first:
            state.epoch, state.iter_in_epoch = epoch, 0
        if max_iters is not None and state.global_step >= max_iters:
            break
        parts.sampler.set_epoch(epoch, skip=state.iter_in_epoch)
        for hook in hooks:
            hook.before_epoch(state)
        train_one_epoch(model, parts.criterion, parts.train_loader, parts.optimizer, state, clip_max_norm=cfg.train.clip_max_norm,
                        scaler=parts.scaler, amp=cfg.train.amp, hooks=hooks, max_iters=max_iters,
                        show_progress=info.is_main)
        if state.iter_in_epoch < len(parts.train_loader):  # stopped by max_iters mid-epoch
            state.stopped_mid_epoch = True
            break
        parts.scheduler.step()
        for hook in hooks:
            hook.after_epoch(state)
    for hook in hooks:
        hook.after_train(state)


def _evaluate_saved_epoch(model, postprocess, loader, dataset, info: DistInfo, cfg: Config, epoch: int,
                          ckpt_path: Path) -> dict:
    """``evaluate`` after epoch ``epoch`` was checkpointed; an error says the epoch is safe and how to go on."""
    try:
        return evaluate(model, postprocess, loader, dataset, info.device, info, amp=cfg.train.amp)
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise TrainingError(
            f"evaluation after epoch {epoch} failed ({type(err).__name__}: {first}); the epoch is saved in "
            f"{ckpt_path}: fix the validation data, or set train.eval_every=0, and continue with --resume"
        ) from err


# ---------------------------------------------------------------------------- evaluation driver
def run_evaluation(cfg: Config, weights: str | os.PathLike, split: str = "val", out_json: Optional[str] = None) -> dict:
    """Evaluate a trained model on ``split``; returns the metrics dict (and writes it to ``out_json``)."""
    from .models import PostProcess

    info = setup_distributed(cfg.train.device)
    set_threads(cfg.train.num_threads)
    model, codec, category_ids, _ = load_trained(cfg, weights, info.device)
    ds = build_dataset(cfg, split, codec=None, train=False, info=info)
    if list(ds.category_ids) != list(category_ids):
        raise ConfigError(f"the {split} dataset's categories ({describe_ids(ds.category_ids)}) differ from the ones "
                          f"of {weights} ({describe_ids(category_ids)}); evaluate on the dataset the weights "
                          "were made for, or convert official weights with --category-ids of this dataset")
    loader = make_eval_loader(ds, cfg, info)
    metrics = evaluate(model, PostProcess(codec, num_select=100, output="rle"), loader, ds, info.device, info, amp=cfg.train.amp)
    if out_json and info.is_main:
        from .evaluation import save_metrics

        save_metrics(metrics, out_json)
    return metrics

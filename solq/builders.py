"""Everything a run is built from, from a ``Config``: codec, datasets and loaders, model, criterion, optimizer groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from .config import Config, ConfigError, resolve_path
from .data.sampler import ResumableBatchSampler, SeededDataset
from .distributed import DistInfo, barrier


def build_codec(cfg: Config):
    """The codec of ``cfg.codec`` (a saved fitted codec when ``codec.path`` is set)."""
    import maskcodec

    c = cfg.codec
    if c.path:
        path = existing_path(c.path, "codec.path")
        return maskcodec.load(path)
    codec = maskcodec.get_codec(c.name, mask_size=c.mask_size, n_components=c.n_components)
    if codec.requires_fit:
        raise ConfigError(
            f"codec {c.name!r} must be fitted before training: fit it on training masks (e.g. "
            f"`maskcodec fit`) and set codec.path to the saved .npz"
        )
    return codec


def existing_path(path: str, key: str) -> Path:
    """``path`` (config paths are absolute once loaded, see ``config.resolve_path``), which must exist."""
    p = Path(resolve_path(path))
    if not p.exists():
        raise FileNotFoundError(f"{key}: {p} not found (relative paths in a config file are relative to its folder, "
                                "on the command line to the working directory)")
    return p


def shapes_root(cfg: Config) -> Path:
    """Folder of the synthetic shapes dataset: ``data.shapes.root``, else ``<output_dir>/shapes_data``."""
    s = cfg.data.shapes
    assert s is not None
    return Path(s.root) if s.root else Path(cfg.output_dir) / "shapes_data"


def prepare_shapes(cfg: Config, info: DistInfo = DistInfo()) -> Path:
    """Generate the synthetic shapes dataset of ``cfg.data.shapes`` once (rank 0); an identical
    request reuses the folder (``write_shapes_dataset`` checks its manifest)."""
    from .data import write_shapes_dataset

    s = cfg.data.shapes
    assert s is not None
    root = shapes_root(cfg)
    if info.is_main:
        write_shapes_dataset(
            root, n_images=s.n_train, n_val=s.n_val, image_size=s.image_size, seed=s.seed,
            n_classes=s.n_classes, max_objects=s.max_objects, empty_fraction=s.empty_fraction,
        )
    barrier(info)
    return root


def split_paths(cfg: Config, split: str, info: DistInfo = DistInfo()) -> tuple[Path, Path]:
    """(image_dir, ann_file) of ``split`` ("train" or "val")."""
    if cfg.data.shapes is not None:
        root = prepare_shapes(cfg, info)
        return root / "images" / split, root / "annotations" / f"instances_{split}.json"
    sc = getattr(cfg.data, split)
    if not sc.image_dir or not sc.ann_file:
        raise ConfigError(f"data.{split}.image_dir and data.{split}.ann_file must be set (or use data.shapes)")
    return (existing_path(sc.image_dir, f"data.{split}.image_dir"),
            existing_path(sc.ann_file, f"data.{split}.ann_file"))


def build_dataset(cfg: Config, split: str, codec=None, train: bool = False, info: DistInfo = DistInfo(),
                  keep_masks: bool = False):
    """``CocoInstances`` of ``split`` with training (``train=True``) or evaluation transforms."""
    from torch.utils.data import Subset

    from .data import CocoInstances, make_transforms

    d = cfg.data
    image_dir, ann_file = split_paths(cfg, split, info)
    if train:
        tf = make_transforms("train", scales=d.scales, max_size=d.max_size, crop=d.crop, flip=d.hflip)
    else:
        tf = make_transforms("val", scales=[d.val_scale or max(d.scales)], max_size=d.max_size)
    ds = CocoInstances(image_dir, ann_file, transforms=tf, codec=codec, keep_masks=keep_masks,
                       sampling_ratio=cfg.codec.sampling_ratio, strict=not d.skip_bad_images)
    limit = getattr(d, split).limit if cfg.data.shapes is None else None
    if limit is not None and limit < len(ds):
        sub = Subset(ds, list(range(limit)))
        sub.category_ids, sub.class_names, sub.image_ids = ds.category_ids, ds.class_names, ds.image_ids[:limit]
        sub.coco = ds.coco
        return sub
    return ds


def build_model(cfg: Config, num_classes: int, n_vector: int):
    """The SOLQ model of ``cfg.model`` for ``num_classes`` classes and ``n_vector``-long mask vectors."""
    from .models import build_model as _build

    m = cfg.model
    backbone_weights = str(existing_path(m.backbone_weights, "model.backbone_weights")) if m.backbone_weights else None
    return _build(
        {
            "num_classes": num_classes,
            "n_vector": n_vector,
            "d_model": m.d_model,
            "backbone": m.backbone,
            "num_feature_levels": m.num_feature_levels,
            "num_queries": m.num_queries,
            "enc_layers": m.enc_layers,
            "dec_layers": m.dec_layers,
            "dim_feedforward": m.dim_feedforward,
            "nheads": m.nheads,
            "n_points": m.n_points,
            "with_box_refine": m.with_box_refine,
            "two_stage": m.two_stage,
            "with_vector": m.with_vector,
            "backbone_weights": backbone_weights,
            "attn_backend": m.attn_backend,
            "dropout": m.dropout,
            "vector_hidden_dim": m.vector_hidden_dim,
            "train_backbone": cfg.train.lr_backbone > 0,
            "backbone_norm": m.backbone_norm,
            "vector_bias_init": m.vector_bias_init,
        }
    )


def build_criterion(cfg: Config, num_classes: int):
    """Hungarian matcher + set criterion with the loss weights of ``cfg.loss``."""
    from .models import HungarianMatcher, SetCriterion, default_weight_dict

    loss = cfg.loss
    matcher = HungarianMatcher(loss.set_cost_class, loss.set_cost_bbox, loss.set_cost_giou, focal_alpha=loss.focal_alpha)
    weights = default_weight_dict(
        dec_layers=cfg.model.dec_layers, two_stage=cfg.model.two_stage, vector_loss=loss.vector_loss,
        cls=loss.cls, bbox=loss.bbox, giou=loss.giou, vector=loss.vector, dice=loss.dice,
    )
    losses = ("labels", "boxes", "vectors") if cfg.model.with_vector else ("labels", "boxes")
    return SetCriterion(num_classes, matcher, weights, losses=losses, focal_alpha=loss.focal_alpha,
                        vector_loss=loss.vector_loss, vector_layers=loss.vector_layers)


LINEAR_PROJ_NAMES = ("sampling_offsets", "reference_points")


def param_groups(model: torch.nn.Module, cfg: Config) -> list[dict]:
    """AdamW groups of Deformable DETR: transformer/heads at ``lr``, backbone at ``lr_backbone``,
    deformable ``sampling_offsets``/``reference_points`` at ``lr · lr_linear_proj_mult``."""
    t = cfg.train
    main, backbone, proj = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            backbone.append(p)
        elif any(k in name for k in LINEAR_PROJ_NAMES):
            proj.append(p)
        else:
            main.append(p)
    groups = [{"params": main, "lr": t.lr, "name": "main"}]
    if backbone:
        groups.append({"params": backbone, "lr": t.lr_backbone, "name": "backbone"})
    if proj:
        groups.append({"params": proj, "lr": t.lr * t.lr_linear_proj_mult, "name": "linear_proj"})
    return groups


def make_loader(ds, sampler: ResumableBatchSampler, cfg: Config, info: DistInfo) -> DataLoader:
    """DataLoader of ``ds`` in ``sampler``'s order, each sample augmented from its own seed (``SeededDataset``)."""
    from .data import collate

    workers = cfg.data.num_workers
    # Workers are spawned, not forked: the data pipeline runs numba parallel kernels
    # (maskcodec.geometry), and an OpenMP runtime forked from a parent that already ran torch's
    # OpenMP pool deadlocks in the child.
    return DataLoader(
        SeededDataset(ds),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),  # keep the global RNG untouched by loader start-up
    )


@dataclass
class TrainingParts:
    """What ``engine.train`` runs: data, model, loss and optimisation state, all built from one ``Config``."""

    train_ds: Any
    val_ds: Any
    model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    sampler: ResumableBatchSampler
    category_ids: list[int]
    train_loader: DataLoader
    val_loader: Optional[DataLoader]


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` (Deformable DETR's per-group learning rates) with ``train.lr`` and
    ``train.weight_decay``."""
    # fused kernel: 3.6x faster than foreach on CPU (10 vs 36 ms per step for the 15M-parameter shapes_tiny model)
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                             fused=True)


def make_eval_loader(ds, cfg: Config, info: DistInfo) -> DataLoader:
    """DataLoader of ``ds`` for evaluation: file order, unshuffled, each process taking its share of every batch."""
    sampler = ResumableBatchSampler(len(ds), cfg.data.batch_size, shuffle=False, rank=info.rank,
                                    world_size=info.world_size)
    return make_loader(ds, sampler, cfg, info)


def build_training(cfg: Config, codec, info: DistInfo) -> TrainingParts:
    """Datasets (val only when ``train.eval_every`` > 0), model and criterion on ``info.device``, fused AdamW
    with Deformable DETR's parameter groups, step-decay schedule, AMP scaler, the training batch sampler and
    both loaders (the validation one in file order, split over the ranks)."""
    device = info.device
    train_ds = build_dataset(cfg, "train", codec=codec, train=True, info=info)
    val_ds = build_dataset(cfg, "val", codec=None, train=False, info=info) if cfg.train.eval_every > 0 else None
    category_ids = list(train_ds.category_ids)
    num_classes = cfg.model.num_classes or len(category_ids)
    model = build_model(cfg, num_classes, codec.n_components).to(device)
    criterion = build_criterion(cfg, num_classes).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_drop_epoch, gamma=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and device.type == "cuda")
    sampler = ResumableBatchSampler(len(train_ds), cfg.data.batch_size, shuffle=True, seed=cfg.train.seed,
                                    rank=info.rank, world_size=info.world_size)
    train_loader = make_loader(train_ds, sampler, cfg, info)
    val_loader = None
    if val_ds is not None:
        val_loader = make_eval_loader(val_ds, cfg, info)
    return TrainingParts(train_ds, val_ds, model, criterion, optimizer, scheduler, scaler, sampler, category_ids,
                         train_loader, val_loader)

"""The ``solq`` command.

    solq train --config configs/shapes_tiny.yaml [train.epochs=3 model.d_model=64 ...] [--resume] [--output-dir D]
    torchrun --nproc_per_node 2 -m solq.cli train --config ...      # data parallel (same arguments)
    solq eval --config C --weights W [--split val] [--out metrics.json]
    solq predict --config C --weights W IMAGES_DIR_OR_FILES... --out DIR [--ann FILE] [--score-threshold 0.3]
    solq predict --config C --weights W --split val --out DIR       # a COCO split of the config

    solq data shapes --out DIR [--n-train 200 --n-val 50 --image-size 128 --n-classes 3 --seed 0]
    solq data via2coco VIA_JSON IMAGE_DIR --out FILE [--category balloon]
    solq convert OFFICIAL.pth --out OURS.pth [--coco-ids | --category-ids 1,2,3]

Config overrides are ``key=value`` words (``train.epochs=3``), accepted anywhere on the command
line of every sub-command that reads a config (train, eval, predict, ablate); relative paths in
them are relative to the working directory, those in a config file to the file's folder.

Bad input (unknown config key, missing file, weights that do not fit the model, corrupt
checkpoint, non-finite loss) ends with exit code 2 and a one-line ``solq: error: ...`` message.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence


class _CLIError(Exception):
    """A user error: one line on stderr, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="solq", description="SOLQ instance segmentation: train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (resumable; torchrun for several processes)")
    t.add_argument("--config", required=True, help="YAML config (see configs/)")
    t.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint.pth")
    t.add_argument("--output-dir", help="where checkpoints, metrics.jsonl and curves.png go")

    e = sub.add_parser("eval", help="COCO box / mask / boundary AP of trained weights")
    e.add_argument("--config", required=True)
    e.add_argument("--weights", required=True, help="checkpoint.pth of a run, or a model state dict")
    e.add_argument("--split", default="val", choices=["train", "val"])
    e.add_argument("--out", help="also write the metrics as JSON here")

    pr = sub.add_parser("predict", help="masks, boxes and labels for image files")
    pr.add_argument("--config", required=True)
    pr.add_argument("--weights", required=True)
    pr.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    pr.add_argument("--out", required=True, help="output folder: results.json + one PNG per image")
    pr.add_argument("--ann", help="COCO instances json of the images: results use its image ids (by file name)")
    pr.add_argument("--split", choices=["train", "val"], help="predict the images of this split of the config, "
                    "with the dataset's image ids (instead of IMAGES)")
    pr.add_argument("--score-threshold", type=float, default=0.3)
    pr.add_argument("--no-draw", action="store_true", help="only write results.json")
    for cmd in (t, e, pr):
        cmd.epilog = "Config overrides: key=value words anywhere on the line, e.g. train.epochs=3 data.num_workers=0."

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("shapes", help="write the synthetic shapes dataset (COCO format)")
    s.add_argument("--out", required=True)
    s.add_argument("--n-train", type=int, default=200)
    s.add_argument("--n-val", type=int, default=50)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--n-classes", type=int, default=3)
    s.add_argument("--max-objects", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    v = dsub.add_parser("via2coco", help="convert a VIA region file (e.g. balloon) to COCO json")
    v.add_argument("via_json")
    v.add_argument("image_dir")
    v.add_argument("--out", required=True)
    v.add_argument("--category", default="balloon", help="name of the single category")

    from .ablation import add_ablate_parser

    add_ablate_parser(sub)

    c = sub.add_parser("convert", help="convert an official SOLQ / Deformable DETR checkpoint")
    c.add_argument("checkpoint")
    c.add_argument("--out", required=True)
    c.add_argument("--category-ids", help="comma-separated dataset category ids to keep from the official "
                   "91-way COCO heads (default: all rows)")
    c.add_argument("--coco-ids", action="store_true", help="keep the 80 COCO category ids (1..90 defined)")
    return p


COCO_CATEGORY_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]


def _load_cfg(path: str, overrides: Sequence[str], output_dir: Optional[str] = None):
    from .config import load_config

    extra = list(overrides)
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    return load_config(path, extra)


def _cmd_train(a) -> int:
    from .engine import train

    cfg = _load_cfg(a.config, a.overrides, a.output_dir)
    summary = train(cfg, resume=a.resume)
    if summary.get("metrics"):
        from .evaluation import format_table

        print(format_table(summary["metrics"]))
    print(f"run written to {summary['output_dir']} (step {summary['global_step']})")
    return 0


def _cmd_eval(a) -> int:
    from .engine import run_evaluation
    from .evaluation import format_table

    cfg = _load_cfg(a.config, a.overrides)
    metrics = run_evaluation(cfg, a.weights, split=a.split, out_json=a.out)
    if metrics is not None:
        print(format_table(metrics))
        print(json.dumps(metrics))
    return 0


def _cmd_predict(a) -> int:
    from .builders import split_paths
    from .inference import list_images, predict

    if not 0.0 <= a.score_threshold <= 1.0:
        raise _CLIError(f"--score-threshold must be in [0, 1], got {a.score_threshold}")
    if bool(a.split) == bool(a.inputs):
        raise _CLIError("give either image files/folders or --split train|val (not both)")
    cfg = _load_cfg(a.config, a.overrides)
    inputs, ann = a.inputs, a.ann
    if a.split:
        image_dir, ann_file = split_paths(cfg, a.split)
        inputs, ann = [str(image_dir)], a.ann or str(ann_file)
    skipped: list = []
    results = predict(cfg, a.weights, inputs, a.out, score_threshold=a.score_threshold, draw=not a.no_draw,
                      ann_file=ann, skipped=skipped)
    n_images = len({r["image_id"] for r in results})
    print(f"{len(results)} detections on {n_images} images with score >= {a.score_threshold}; "
          f"{len(skipped)} images skipped; written to {Path(a.out) / 'results.json'}")
    if skipped and not n_images and len(skipped) == len(list_images(inputs)):
        raise _CLIError(f"none of the {len(skipped)} images could be used (first: {skipped[0][1]}); "
                        f"{Path(a.out) / 'results.json'} holds no detections")
    return 0


def _cmd_data(a) -> int:
    if a.data_command == "shapes":
        from .data import write_shapes_dataset

        paths = write_shapes_dataset(a.out, n_images=a.n_train, n_val=a.n_val, image_size=a.image_size,
                                     n_classes=a.n_classes, max_objects=a.max_objects, seed=a.seed,
                                     overwrite=a.overwrite)
        for split, p in paths.items():
            print(f"{split}: image_dir={p.image_dir} ann_file={p.ann_file}")
        return 0
    from .data import via_to_coco, write_coco

    if not Path(a.via_json).is_file():
        raise FileNotFoundError(f"VIA file not found: {a.via_json}")
    if not Path(a.image_dir).is_dir():
        raise FileNotFoundError(f"image folder not found: {a.image_dir}")
    coco = via_to_coco(a.via_json, a.image_dir, category_name=a.category)
    path = write_coco(coco, a.out)
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} annotations -> {path}")
    return 0


def _cmd_convert(a) -> int:
    from .checkpoint import save_checkpoint
    from .models.convert import converted_checkpoint

    if not Path(a.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {a.checkpoint}")
    ids = None
    if a.coco_ids:
        ids = COCO_CATEGORY_IDS
    elif a.category_ids:
        try:
            ids = [int(x) for x in a.category_ids.split(",") if x.strip()]
        except ValueError:
            raise _CLIError(f"--category-ids must be comma-separated integers, got {a.category_ids!r}") from None
    payload = converted_checkpoint(a.checkpoint, ids)
    save_checkpoint(payload, a.out)
    settings = " ".join(f"{k}={v}" for k, v in payload["model_config"].items())
    print(f"{len(payload['model'])} tensors, {payload['num_classes']} classes -> {a.out} (model settings: {settings})")
    return 0


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


#: Sub-commands that read a config; each takes ``key=value`` overrides anywhere on its command line.
CONFIG_COMMANDS = ("train", "eval", "predict", "ablate")


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line. For every sub-command that reads a config (``CONFIG_COMMANDS``), every
    ``key=value`` word is a config override, wherever it stands (before or after options such as
    ``--resume``); ``args.overrides`` lists them in command-line order."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command not in CONFIG_COMMANDS:
        if extra:
            hint = f" (solq {args.command} reads no config, so it takes no key=value overrides)" if any(
                _OVERRIDE.match(w) for w in extra) else ""
            parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return args
    overrides = list(getattr(args, "overrides", None) or []) + [w for w in extra if _OVERRIDE.match(w)]
    rest = [w for w in extra if not _OVERRIDE.match(w)]
    if args.command == "predict":  # image paths and overrides may interleave
        words = args.inputs + rest
        overrides += [w for w in words if _OVERRIDE.match(w) and not Path(w).exists()]
        args.inputs = [w for w in words if w not in overrides]
        rest = []
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (config overrides are key=value)")
    args.overrides = sorted(overrides, key=argv.index)
    return args


def _one_line(message: str) -> str:
    """One line for stderr; an error re-raised from a DataLoader worker keeps only the original error line."""
    if "Original Traceback" in message:
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        message = lines[-1] if lines else message
        head, sep, tail = message.partition(": ")
        if sep and head.isidentifier():  # "ValueError: cannot read image ..." -> the message
            message = tail
    return " ".join(message.split())


def _close_progress_bars() -> None:
    """Finish the progress bars an error interrupted, so the error message is the last line on stderr."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``solq`` console script; returns the exit code."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .engine import TrainingError

    args = _parse_args(argv)
    handlers = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict, "data": _cmd_data,
                "convert": _cmd_convert, "ablate": lambda a: a.func(a)}
    try:
        return handlers[args.command](args)
    except (_CLIError, ConfigError, CheckpointError, TrainingError, FileNotFoundError, FileExistsError,
            ValueError) as err:
        msg = _one_line(str(err))
        _close_progress_bars()
        if isinstance(err, FileNotFoundError) and err.filename and not msg.strip():
            msg = f"file not found: {err.filename}"
        print(f"solq: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("solq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

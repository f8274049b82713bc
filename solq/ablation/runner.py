"""Running a sweep: each entry trained (or resumed, or only evaluated) into its own folder, then reported.

Every finished entry's ``result.json`` is written atomically before the next entry starts, so running
the same command again continues an interrupted sweep.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from ..config import Config, apply_overrides, load_config
from ..metrics_log import METRICS_NAME, read_metrics
from .codecs import fit_codec, oracle_ap
from .data import materialize_data, subset_annotations
from .overrides import entry_config, scaled_base
from .report import format_table, read_json, stat_text, write_json, write_report
from .sweeps import AblationError, Entry, Sweep, normalize_table, scale_preset, sweep_definition

RESULT_NAME = "result.json"

TrainFn = Callable[[Config, bool], dict]
EvalFn = Callable[[Config, Path], dict]
LogFn = Callable[[str], None]


def default_train(cfg: Config, resume: bool) -> dict:
    """``solq.engine.train(cfg, resume=resume)``."""
    from ..engine import train

    return train(cfg, resume=resume)


def default_evaluate(cfg: Config, checkpoint: Path) -> dict:
    """``solq.engine.run_evaluation(cfg, checkpoint)`` on the validation split."""
    from ..engine import run_evaluation

    return run_evaluation(cfg, checkpoint, split="val")


def checkpoint_progress(path: Path) -> Optional[dict]:
    """``{"epoch", "iter_in_epoch", "global_step"}`` of a training checkpoint, or None if it is missing,
    unreadable (``load_checkpoint``'s checks) or not a training checkpoint."""
    try:
        state = load_checkpoint(path)
    except (FileNotFoundError, CheckpointError):
        return None
    if "epoch" not in state:
        return None
    return {k: int(state.get(k, 0)) for k in ("epoch", "iter_in_epoch", "global_step")}


def schedule_done(cfg: Config, progress: dict) -> bool:
    """Whether a checkpoint at ``progress`` already holds the whole training schedule of ``cfg``."""
    t = cfg.train
    if t.max_iters is not None and progress["global_step"] >= t.max_iters:
        return True
    return progress["epoch"] >= t.epochs


def train_seconds(metrics_path: Path) -> Optional[float]:
    """Sum of the engine's per-epoch ``seconds`` in ``metrics.jsonl`` (over resumes), or None."""
    secs = [r["seconds"] for r in read_metrics(metrics_path)
            if r.get("type") == "epoch" and isinstance(r.get("seconds"), (int, float))]
    return sum(secs, 0.0) if secs else None


@dataclass
class SweepRun:
    """What ``run_sweep`` did: the sweep, its folder, per-entry results (None: not finished) and files."""

    sweep: Sweep
    out_dir: Path
    results: dict[str, Optional[dict]]
    oracle: dict[str, Optional[dict]]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self.sweep, self.results, self.oracle)


@dataclass
class _Prepared:
    """A sweep's folder, its config dict (scale and user overrides applied, data as files) and annotations."""

    root: Path
    data: dict
    train_ann: Path
    val_ann: Path


def sweep_dir(out: str | os.PathLike, table: str) -> Path:
    return Path(out) / f"table{normalize_table(table)}"


def _stderr(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def run_sweep(
    table: str,
    base: Config | str | os.PathLike,
    out: str | os.PathLike,
    scale: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    only: Optional[Sequence[str]] = None,
    train_fn: Optional[TrainFn] = None,
    eval_fn: Optional[EvalFn] = None,
    with_oracle: bool = True,
    command: str = "",
    log: LogFn = _stderr,
) -> SweepRun:
    """Run (or continue) sweep ``table`` on ``base`` into ``<out>/table<table>``; returns what was done.

    ``train_fn(cfg, resume) -> {"metrics": ...}`` and ``eval_fn(cfg, checkpoint) -> metrics`` default to
    the engine; tests pass fakes. ``only`` restricts the run to some entry names (the table still lists
    all, unfinished ones empty). Each finished entry's ``result.json`` is written atomically before the
    next entry starts, so an interrupted sweep continues where it stopped.
    """
    sweep = sweep_definition(table, scale)
    base_cfg = load_config(base) if not isinstance(base, Config) else base
    _check_only(sweep, only)
    prep = _prepare(sweep, base_cfg, out, overrides)
    _write_sweep_json(sweep, prep, base, overrides, command)
    run = SweepRun(sweep, prep.root, {}, {})
    for entry in sweep.entries:
        done = read_json(prep.root / "entries" / entry.name / RESULT_NAME)
        run.results[entry.name] = done
        if done is not None:
            run.skipped.append(entry.name)
        elif not only or entry.name in only:
            run.results[entry.name] = _run_entry(sweep, entry, prep, overrides, train_fn or default_train,
                                                 eval_fn or default_evaluate, log)
            run.trained.append(entry.name)
    if with_oracle:
        run.oracle = _oracle_rows(sweep, prep, run.results, only, log)
    run.files = write_report(sweep, run.results, run.oracle, prep.root, command=command)
    return run


def _check_only(sweep: Sweep, only: Optional[Sequence[str]]) -> None:
    unknown = set(only or ()) - {e.name for e in sweep.entries}
    if unknown:
        raise AblationError(f"unknown entries {sorted(unknown)} for table {sweep.table}; "
                            f"choose from {[e.name for e in sweep.entries]}")


def _prepare(sweep: Sweep, base_cfg: Config, out: str | os.PathLike, overrides: Sequence[str]) -> _Prepared:
    """The sweep folder, and the data as files: the shapes dataset under ``<out>/data`` (shared by the
    tables), the ``limit``-ed annotation subsets under ``<sweep>/data``."""
    root = sweep_dir(out, sweep.table).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = scaled_base(base_cfg, sweep.scale)
    apply_overrides(data, list(overrides))  # user overrides may change the data too
    files = materialize_data(data, Path(out).resolve() / "data")
    train_ann = subset_annotations(files.train_ann, files.train_ids, root / "data" / "train_subset.json")
    val_ann = subset_annotations(files.val_ann, files.val_ids, root / "data" / "val_subset.json")
    return _Prepared(root, data, train_ann, val_ann)


def _write_sweep_json(sweep: Sweep, prep: _Prepared, base: Config | str | os.PathLike, overrides: Sequence[str],
                      command: str) -> None:
    write_json(prep.root / "sweep.json", {
        "table": sweep.table, "title": sweep.title, "scale": sweep.scale,
        "scale_description": scale_preset(sweep.scale).description,
        "base_config": str(base) if not isinstance(base, Config) else None,
        "overrides": list(overrides), "command": command,
        "entries": [dataclasses.asdict(e) for e in sweep.entries],
        "train_ann": str(prep.train_ann), "val_ann": str(prep.val_ann),
    })


def _fitted_codec(sweep: Sweep, entry: Entry, prep: _Prepared, log: LogFn) -> Optional[Path]:
    """The saved learned codec of ``entry`` (fitted on the training masks when not there yet), or None."""
    if entry.codec is None or not entry.codec.requires_fit:
        return None
    path = prep.root / "codecs" / f"{entry.codec.key}.npz"
    if not path.is_file():
        log(f"[{sweep.table}] fitting {entry.codec.key} on the training masks of {prep.train_ann}")
        t0 = time.perf_counter()
        fit_codec(entry.codec, prep.train_ann, path)
        log(f"[{sweep.table}] fitted {entry.codec.key} in {time.perf_counter() - t0:.1f} s -> {path}")
    return path


def _run_entry(sweep: Sweep, entry: Entry, prep: _Prepared, overrides: Sequence[str], train_fn: TrainFn,
               eval_fn: EvalFn, log: LogFn) -> dict:
    """Train (or resume, or only evaluate) one entry and write its ``result.json``; returns the result."""
    edir = prep.root / "entries" / entry.name
    codec_path = _fitted_codec(sweep, entry, prep, log)
    cfg = entry_config(prep.data, entry, edir, user_overrides=overrides, codec_path=codec_path, keep_data=True)
    spec = entry.codec
    if spec is not None and (cfg.codec.name, cfg.codec.mask_size, cfg.codec.n_components) != (
            spec.name, spec.mask_size, spec.n_components):
        log(f"[{sweep.table}] note: overrides changed the codec of {entry.name} to "
            f"{cfg.codec.name} N={cfg.codec.mask_size} n_k={cfg.codec.n_components}")
    ckpt = edir / CHECKPOINT_NAME
    progress = checkpoint_progress(ckpt) if ckpt.is_file() else None
    t0 = time.perf_counter()
    metrics, train_info = None, {}
    if progress is not None and schedule_done(cfg, progress):
        log(f"[{sweep.table}] {entry.name}: training already complete (step {progress['global_step']}); evaluating")
    else:
        log(f"[{sweep.table}] {entry.name}: {'resuming' if progress is not None else 'training'} "
            f"({', '.join(entry.overrides)})")
        out_train = train_fn(cfg, progress is not None) or {}
        metrics = out_train.get("metrics")
        train_info = {k: v for k, v in out_train.items() if k in ("global_step", "epoch")}
    if not metrics:
        if not ckpt.is_file():
            raise AblationError(f"{entry.name}: training left no checkpoint at {ckpt} and no metrics")
        metrics = eval_fn(cfg, ckpt)
    result = {
        "table": sweep.table, "entry": entry.name, "label": entry.label, "value": entry.value,
        "overrides": list(entry.overrides) + list(overrides),
        "codec": dataclasses.asdict(spec) if spec else None,
        "codec_path": str(codec_path) if codec_path else None,
        "scale": sweep.scale, "metrics": metrics, **train_info,
        "resumed": progress is not None, "seconds_this_session": time.perf_counter() - t0,
        "train_seconds": train_seconds(edir / METRICS_NAME),
    }
    write_json(edir / RESULT_NAME, result)
    log(f"[{sweep.table}] {entry.name}: AP^seg {stat_text(metrics, 'segm', 'AP')}, "
        f"AP^box {stat_text(metrics, 'bbox', 'AP')}")
    return result


def _oracle_rows(sweep: Sweep, prep: _Prepared, results: dict[str, Optional[dict]],
                 only: Optional[Sequence[str]], log: LogFn) -> dict[str, Optional[dict]]:
    """Oracle AP of each entry's codec, cached under ``<sweep>/oracle/`` (entries not asked for now:
    cached rows only)."""
    oracle: dict[str, Optional[dict]] = {}
    for entry in sweep.entries:
        if entry.codec is None:
            continue
        path = prep.root / "oracle" / f"{entry.codec.key}.json"
        row = read_json(path)
        if row is None and only and entry.name not in only and results.get(entry.name) is None:
            continue
        if row is None:
            log(f"[{sweep.table}] oracle AP of {entry.codec.key} on {prep.val_ann}")
            row = oracle_ap(entry.codec, prep.val_ann, prep.train_ann)
            write_json(path, row)
        oracle[entry.name] = row
    return oracle

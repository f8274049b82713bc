"""What happens around the training loop, as a short list of hook objects (detectron2's ``HookBase``).

``engine.train`` calls, on every hook in list order, ``before_train`` / ``after_train`` once,
``before_epoch`` / ``after_epoch`` around each epoch and ``after_step`` after every optimizer step,
each with the shared ``TrainState``. A hook that wants the loop to stop raises. The hooks of a run:

* ``MetricsHook``: ``train`` records every ``log_every`` steps and one ``epoch`` record per epoch;
* ``CheckpointHook``: the rolling checkpoint every K steps, at each epoch end, and where a run stops;
* ``EvalHook``: COCO evaluation every E epochs (and after the last), logged as an ``eval`` record;
* ``CurvesHook``: ``curves.png`` redrawn after each epoch and at the end;
* ``CallbackHook``: a plain ``f(epoch, iter_done, global_step)`` after each step (tests, notebooks).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .checkpoint import save_checkpoint
from .distributed import DistInfo, all_gather, reduce_mean
from .metrics_log import MetricsLog, plot_curves
from .rng import rng_state


@dataclass
class TrainState:
    """Where training is: ``epoch`` (current), ``iter_in_epoch`` (steps done in it), ``global_step``;
    ``loss`` / ``loss_dict`` / ``n_images`` of the last step, and a few fields hooks share."""

    epoch: int = 0
    iter_in_epoch: int = 0
    global_step: int = 0
    iters_per_epoch: int = 0
    loss: Optional[torch.Tensor] = None
    loss_dict: dict = field(default_factory=dict)
    n_images: int = 0
    lr: float = 0.0
    #: set by the loop when ``train.max_iters`` stopped it inside an epoch
    stopped_mid_epoch: bool = False
    #: progress-bar values of the last logged step, set by ``MetricsHook``
    postfix: dict = field(default_factory=dict)


class HookBase:
    """No-op hook; subclasses override what they need."""

    def before_train(self, state: TrainState) -> None:
        pass

    def after_train(self, state: TrainState) -> None:
        pass

    def before_epoch(self, state: TrainState) -> None:
        pass

    def after_epoch(self, state: TrainState) -> None:
        pass

    def after_step(self, state: TrainState) -> None:
        pass


class MetricsHook(HookBase):
    """``train`` records (loss, unweighted last-layer terms, lr, images/s, averaged over processes) every
    ``log_every`` steps and at the end of the epoch; an ``epoch`` record with their means and the seconds."""

    def __init__(self, log: MetricsLog, log_every: int, info: DistInfo):
        self.log, self.log_every, self.info = log, log_every, info

    def before_epoch(self, state: TrainState) -> None:
        self.t0 = self.t_last = time.perf_counter()
        self.n_images = 0
        self.sums: dict[str, float] = {}
        self.count = 0

    def after_step(self, state: TrainState) -> None:
        self.n_images += state.n_images * self.info.world_size
        if not (state.global_step % self.log_every == 0 or state.iter_in_epoch == state.iters_per_epoch):
            return
        values = {"loss": state.loss.item(), **{k: v.item() for k, v in state.loss_dict.items() if "_" not in k[5:]}}
        values = reduce_mean(values, self.info)
        now = time.perf_counter()
        ips = self.n_images / max(now - self.t_last, 1e-9)
        self.t_last, self.n_images = now, 0
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        state.postfix = {"loss": f"{values['loss']:.3f}", "img_s": f"{ips:.1f}"}
        self.log.write({"type": "train", "step": state.global_step, "epoch": state.epoch,
                        "iter": state.iter_in_epoch, **values, "lr": state.lr, "images_per_s": ips})

    def after_epoch(self, state: TrainState) -> None:
        means = {f"mean_{k}": v / max(self.count, 1) for k, v in self.sums.items()}
        self.log.write({"type": "epoch", "epoch": state.epoch, "step": state.global_step,
                        "seconds": time.perf_counter() - self.t0, **means})


class CheckpointHook(HookBase):
    """The rolling checkpoint: every ``every`` steps (0: never) inside an epoch, after each epoch (as the
    start of the next one, before any evaluation) and where ``train.max_iters`` stopped a run.

    ``parts`` are saved by their ``state_dict()`` (a disabled ``GradScaler`` as ``{}``), ``extra`` as is;
    the RNG states of all processes are gathered, rank 0 writes.
    """

    def __init__(self, path: Path, parts: dict[str, Any], extra: dict[str, Any], info: DistInfo, every: int = 0):
        self.path, self.parts, self.extra, self.info, self.every = Path(path), parts, extra, info, every

    def save(self, epoch: int, iter_in_epoch: int, global_step: int) -> None:
        rngs = rng_state()
        if self.info.enabled:
            rngs = all_gather(rngs, self.info)
        if not self.info.is_main:
            return
        states = {k: _state_of(v) for k, v in self.parts.items()}
        head = {k: states.pop(k) for k in ("model", "optimizer", "lr_scheduler", "scaler") if k in states}
        save_checkpoint({**head, "epoch": epoch, "iter_in_epoch": iter_in_epoch, "global_step": global_step,
                         "rng": rngs, **states, **self.extra}, self.path)

    def after_step(self, state: TrainState) -> None:
        if self.every and state.global_step % self.every == 0 and state.iter_in_epoch < state.iters_per_epoch:
            self.save(state.epoch, state.iter_in_epoch, state.global_step)

    def after_epoch(self, state: TrainState) -> None:
        self.save(state.epoch + 1, 0, state.global_step)

    def after_train(self, state: TrainState) -> None:
        if state.stopped_mid_epoch:
            self.save(state.epoch, state.iter_in_epoch, state.global_step)


def _state_of(part: Any) -> Any:
    if isinstance(part, torch.amp.GradScaler):
        return part.state_dict() if part.is_enabled() else {}
    return part.state_dict()


class EvalHook(HookBase):
    """``evaluate(epoch) -> metrics`` every ``every`` epochs and after the last of ``epochs``; logged and printed."""

    def __init__(self, evaluate: Callable[[int], dict], every: int, epochs: int, log: MetricsLog, info: DistInfo):
        self.evaluate, self.every, self.epochs, self.log, self.info = evaluate, every, epochs, log, info
        self.metrics: Optional[dict] = None

    def after_epoch(self, state: TrainState) -> None:
        epoch = state.epoch
        if not ((epoch + 1) % self.every == 0 or epoch == self.epochs - 1):
            return
        self.metrics = self.evaluate(epoch)
        self.log.write({"type": "eval", "epoch": epoch, "step": state.global_step, **self.metrics})
        if self.info.is_main:
            from .evaluation import format_table

            print(f"epoch {epoch} evaluation:\n{format_table(self.metrics)}", file=sys.stderr)


class CurvesHook(HookBase):
    """Redraw ``path`` (``plot_curves`` of the metrics log) after each epoch and at the end (rank 0)."""

    def __init__(self, log: MetricsLog, path: Path, info: DistInfo):
        self.log, self.path, self.info = log, Path(path), info

    def after_epoch(self, state: TrainState) -> None:
        if self.info.is_main:
            plot_curves(self.log.read(), self.path)

    def after_train(self, state: TrainState) -> None:
        if self.info.is_main and self.log.path.is_file():
            plot_curves(self.log.read(), self.path)


class CallbackHook(HookBase):
    """``fn(epoch, iter_done, global_step)`` after every step."""

    def __init__(self, fn: Callable[[int, int, int], None]):
        self.fn = fn

    def after_step(self, state: TrainState) -> None:
        self.fn(state.epoch, state.iter_in_epoch, state.global_step)

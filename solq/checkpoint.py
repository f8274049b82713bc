"""Training checkpoints: atomic save, safe load, exact resume.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``: tensors and plain
Python values only) holding

* ``model``, ``optimizer``, ``lr_scheduler``, ``scaler`` state dicts,
* the position of the *next* iteration: ``epoch`` and ``iter_in_epoch``, plus ``global_step``,
* ``rng``: Python, numpy, torch CPU (and CUDA) generator states,
* ``sampler``: the ``ResumableBatchSampler`` state (seed, world size, batch size),
* ``config`` (the resolved config dict), ``codec`` (name, params and fitted arrays) and
  ``category_ids`` (contiguous label → dataset category id).

Files are written to a temporary file in the same folder, flushed and ``os.replace``-d, so a
crash never leaves a half-written checkpoint under the final name; the temporaries a killed save
left behind for the same file are removed by the next save.

Integrity: ``torch.save`` writes a zip archive that stores a CRC-32 of every record (tensor data
and the pickled structure), which ``torch.load`` does not check. ``load_checkpoint`` verifies
every record against its checksum first and refuses a file that does not verify, naming the
damaged record, so a corrupt file never gives silently wrong weights. The contents are not
changed: every top-level field a checkpoint carries is kept.

The RNG states come from ``solq.rng``, the sampler state from ``solq.data.sampler``.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maskcodec.atomic import atomic_open

from .models.state_dict import state_dict_problems

#: The rolling checkpoint file of a run, in its ``output_dir``.
CHECKPOINT_NAME = "checkpoint.pth"
FORMAT_NAME = "solq-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or weights file is unreadable or does not fit the model."""


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    state = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}
    remove_stale_temporaries(path)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files of ``path`` left by an atomic save that was killed; returns them.

    Only one process writes a given checkpoint, so any such file is a leftover.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check every record of a ``torch.save`` zip file against its stored CRC-32; ``CheckpointError`` if one
    does not match or the archive is damaged. Files in torch's legacy (non-zip) format are not checked."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(4) == b"PK\x03\x04":  # a zip whose directory is gone: truncated
                raise CheckpointError(f"{path} is corrupt or truncated (its zip directory is missing); delete it or pick "
                                      "another file")
        return
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise CheckpointError(f"{path} is corrupt: its archive cannot be read ({err})") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: record {bad!r} does not match its checksum; the file was damaged "
                              "after it was written; delete it or pick another file")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint or weights file; ``FileNotFoundError`` / ``CheckpointError`` with a clear message.

    Accepts our checkpoints, plain model state dicts, and dicts with a ``"model"`` entry (official
    SOLQ/Deformable DETR files load too when they hold only tensors and plain values).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint/weights file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (a truncated or failed save); delete it or pick another file")
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # pickle.UnpicklingError and friends (e.g. a non-torch file)
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict (state dict or checkpoint)")
    version = state.get("format_version")
    if state.get("format") == FORMAT_NAME and version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this solq reads {FORMAT_VERSION}")
    return state


def model_state_from(state: dict) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint (``state["model"]``) or ``state`` itself."""
    inner = state.get("model", state)
    if not isinstance(inner, dict) or not all(isinstance(v, torch.Tensor) for v in inner.values()):
        raise CheckpointError("the file holds no model state dict (a mapping of parameter names to tensors)")
    return inner


def load_model_weights(model: torch.nn.Module, state: dict, source: str = "weights", strict: bool = True) -> None:
    """Copy a state dict into ``model``, listing every missing, unexpected and wrong-shape key on failure."""
    weights = model_state_from(state)
    own = model.state_dict()
    problems = state_dict_problems(own, weights, strict=strict)
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({' | '.join(problems)}); check that the config "
            "(model.*, codec.n_components, number of classes) matches the one used for training"
        )
    model.load_state_dict(weights, strict=strict)


# ---------------------------------------------------------------------------- codec
def codec_state(codec) -> dict:
    """Name, hyper-parameters and fitted arrays (as tensors) of a maskcodec codec (``codec.get_state()``)."""
    state = codec.get_state()
    fitted = {
        name: torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
        for name, value in state["fitted"].items()
    }
    return {**state, "fitted": fitted}


def codec_from_state(state: dict):
    """Rebuild a codec saved by ``codec_state``, checked as ``maskcodec.load`` checks a file."""
    from maskcodec import from_state

    fitted = {
        name: value.numpy() if isinstance(value, torch.Tensor) else value
        for name, value in state.get("fitted", {}).items()
    }
    return from_state({**state, "fitted": fitted}, source="the checkpoint's codec")

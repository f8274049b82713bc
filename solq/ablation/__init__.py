"""The codec ablations of SOLQ's Table 3, end to end: sweep definitions, resumable runs, tables, plots.

A *sweep* (``"3a"`` … ``"3e"``) is a list of entries; each entry is a set of ``key=value`` config
overrides applied to one base config (the single-level, C5-only model), trained with
``solq.engine.train`` and evaluated on the validation split:

* **3a** codec type: det-only (``model.with_vector=false``), flatten 28×28 (L2 + dice vector
  loss), sparse coding, PCA, DCT; ``n_k = 256``, ``N = 128``.
* **3b** ``λ_vec ∈ {0.3, 0.7, 1, 2, 3, 4}`` with the vector loss on the last decoder layer only.
* **3c** number of (last) decoder layers with the vector loss, 1 … 6.
* **3d** mask size ``N ∈ {64, 96, 128, 256}`` at ``n_k = 256``.
* **3e** vector length ``n_k ∈ {144, 256, 300, 400}`` at ``N = 128``.

Override order: base config ← scale preset ← entry ← user overrides (the user wins).

Scales: ``tiny`` (a few iterations of a very small model, codec sizes ``N/4`` and ``n_k/16``;
for tests), ``cpu`` (ResNet-18 with GroupNorm from random init, C3-C5 because a C5-only map of a
160-pixel image is 5x5 cells, 160-pixel synthetic shapes, 750 iterations per entry: about 6
minutes on 2 idle cores, so a table fits in well under an hour with
``configs/ablations/shapes_cpu.yaml``; the paper's ``N`` and ``n_k``), ``full`` (the base config as
is, the paper's ``N`` and ``n_k``).

Learned codecs (PCA, sparse coding) are fitted once per ``(codec, N, n_k)`` on the masks of the
*training* split only, saved with ``codec.save`` under ``<sweep>/codecs/`` and loaded by the
training run through ``codec.path``. Every codec also gets its *oracle* AP from
``maskcodec.bench.run`` on the same validation annotations (the mask AP a perfect model would
reach through that codec), cached under ``<sweep>/oracle/``.

Layout of a sweep folder ``<out>/table3x/``::

    sweep.json                     definition, scale, base config, command
    entries/<name>/                the engine's output_dir (checkpoint.pth, metrics.jsonl, config.yaml)
    entries/<name>/result.json     written atomically when the entry is finished (its metrics)
    codecs/<codec>_N<N>_k<K>.npz   fitted learned codecs
    oracle/<codec>_N<N>_k<K>.json  oracle AP of each codec setting
    table3x.md, table3x.png, results.json

Resuming: running the same command again skips entries that have ``result.json``; an entry with
a ``checkpoint.pth`` but no result continues from it (``train(cfg, resume=True)``), or is only
evaluated when its checkpoint already holds the whole schedule.

Modules: ``sweeps`` (the sweeps, the scale presets and the paper's numbers, as data), ``overrides``
(an entry's config), ``data`` (the data as files), ``codecs`` (fitting, oracle AP), ``runner``
(``run_sweep``), ``report`` (table, plot, JSON files) and ``cli`` (``solq ablate``).
"""

from .cli import ablate_from_args, add_ablate_parser, configure_parser, main_ablate
from .codecs import fit_codec, oracle_ap
from .data import SplitFiles, materialize_data, subset_annotations
from .overrides import entry_config, scaled_base
from .report import METRIC_COLUMNS, entry_values, format_table, plot_sweep, read_json, write_json, write_report
from .runner import (
    RESULT_NAME,
    SweepRun,
    checkpoint_progress,
    default_evaluate,
    default_train,
    run_sweep,
    schedule_done,
    sweep_dir,
    train_seconds,
)
from .sweeps import (
    PAPER,
    PAPER_CHOICE,
    PAPER_COLUMNS_3A,
    PAPER_COLUMNS_3BE,
    PAPER_SOURCE,
    PAPER_TABLE1_R50,
    PAPER_VAL_R50,
    PAPER_VAL_R50_SOURCE,
    SCALE_PRESETS,
    SCALES,
    TABLES,
    AblationError,
    CodecSpec,
    Entry,
    ScalePreset,
    Sweep,
    normalize_table,
    paper_columns,
    scale_preset,
    sweep_definition,
)

__all__ = [
    "AblationError", "CodecSpec", "Entry", "METRIC_COLUMNS", "PAPER", "PAPER_CHOICE", "PAPER_COLUMNS_3A",
    "PAPER_COLUMNS_3BE", "PAPER_SOURCE", "PAPER_TABLE1_R50", "PAPER_VAL_R50", "PAPER_VAL_R50_SOURCE",
    "RESULT_NAME", "SCALES", "SCALE_PRESETS", "ScalePreset", "SplitFiles", "Sweep", "SweepRun", "TABLES",
    "ablate_from_args", "add_ablate_parser", "checkpoint_progress", "configure_parser", "default_evaluate",
    "default_train", "entry_config", "entry_values", "fit_codec", "format_table", "main_ablate",
    "materialize_data", "normalize_table", "oracle_ap", "paper_columns", "plot_sweep", "read_json",
    "run_sweep", "scale_preset", "scaled_base", "schedule_done", "subset_annotations", "sweep_definition",
    "sweep_dir", "train_seconds", "write_json", "write_report",
]

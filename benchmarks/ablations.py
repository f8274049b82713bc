"""Run the paper's Table 3 codec ablations (same as ``solq ablate``).

    python benchmarks/ablations.py 3a --config configs/ablations/shapes_cpu.yaml --scale cpu
    python benchmarks/ablations.py all --config configs/ablations/shapes_cpu.yaml --scale tiny --out /tmp/abl

Re-running a command continues an interrupted sweep. See ``solq/ablation/`` for the sweeps, the
scales and the output layout, and ``benchmarks/results_ablations.md`` for results.
"""

from __future__ import annotations

import sys

from solq.ablation import main_ablate

if __name__ == "__main__":
    sys.exit(main_ablate(sys.argv[1:]))

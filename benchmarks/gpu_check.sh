#!/usr/bin/env bash
# GPU device check: writes DIR/gpu_check.md (see benchmarks/gpu_check.py and the README's "GPU device check").
#
#   benchmarks/gpu_check.sh DIR
#
# For a bare, offline GPU machine: runs under its own python3 (torch, triton, cupy, numba ...), installs
# nothing from the network, imports the project from this checkout (PYTHONPATH), and puts the wheels
# carried in benchmarks/gpu_carry/ (pycocotools, pytest; optional) on the path from a temporary folder.
# Without a GPU it prints one line and exits 0.
set -u
if [ $# -ne 1 ]; then
    echo "usage: benchmarks/gpu_check.sh DIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no GPU (torch.cuda.is_available() is False or torch is missing); nothing to check"
    exit 0
fi
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
SITE="$(mktemp -d)"
trap 'rm -rf "$SITE"' EXIT
shopt -s nullglob
wheels=("$ROOT"/benchmarks/gpu_carry/*.whl)
for whl in "${wheels[@]}"; do
    # a wheel is a zip of its site-packages files: unpack it (no pip, no network); it goes last on the path,
    # so nothing the image already has is shadowed
    "$PY" -m zipfile -e "$whl" "$SITE" || echo "gpu_check: could not unpack $whl; sections that need it are skipped"
done
export PYTHONPATH="$ROOT:${PYTHONPATH:-}:$SITE"
cd "$ROOT"
timeout 470 "$PY" benchmarks/gpu_check.py "$OUT"
rc=$?
if [ $rc -eq 124 ]; then
    echo "gpu_check: stopped at the 470 s limit; partial report in $OUT/gpu_check.md"
fi
exit 0

#!/usr/bin/env bash
# Runs pytest hermetically: every folder outside the clone that the project or its libraries read or write
# (the home folder, our restorer cache, the Hugging Face hub, torch hub, XDG caches and configs, matplotlib) points at a fresh,
# empty temporary folder, and the weight roots are unset, so a green run here is green on a fresh machine.
# See docs/install.md ("Folders outside the clone"). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d "${TMPDIR:-/tmp}/aw-test-home.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home"
mkdir -p "$HOME"
export ARTIFACTWORLD_CACHE="$scratch/artifactworld"
export HF_HOME="$scratch/huggingface"
export TORCH_HOME="$scratch/torch"
export XDG_CACHE_HOME="$scratch/cache"
export XDG_CONFIG_HOME="$scratch/config"
export XDG_DATA_HOME="$scratch/data"
export MPLCONFIGDIR="$scratch/matplotlib"
export TORCHINDUCTOR_CACHE_DIR="$scratch/torchinductor"
export TRITON_CACHE_DIR="$scratch/triton"
unset ARTIFACTWORLD_WEIGHTS_ROOT ARTIFACTWORLD_LTX_MAIN_ROOT ARTIFACTWORLD_LTX_097_DEV_ROOT HF_HUB_CACHE HUGGINGFACE_HUB_CACHE TRANSFORMERS_CACHE
# Parallel workers (pytest-xdist) on a machine with the cores and memory for them: one per core, at most 4, and one
# per 10 GiB of memory (the real-width test holds about 8 GB). Each worker gets its share of the cores as torch
# threads. A test file runs on one worker (--dist loadfile), so its module fixtures are built once.
# AW_TEST_WORKERS=1 runs everything in one process; a user's -n / -p no:xdist wins.
cores="$(nproc)"
mem_gib="$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)"
workers="${AW_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
(( workers > mem_gib / 10 )) && workers=$(( mem_gib / 10 ))
(( workers < 1 )) && workers=1
parallel=()
if (( workers > 1 )) && [[ " $* " != *" -n "* && " $* " != *"no:xdist"* ]]; then
  parallel=(-n "$workers" --dist loadfile)
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}"
fi
PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m pytest "${parallel[@]}" "$@"

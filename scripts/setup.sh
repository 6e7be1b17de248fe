#!/usr/bin/env bash
# Builds .venv/ from nothing on a Linux x86-64 machine with Python 3.11 and no GPU (or with one).
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin="$candidate"; break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "error: Python 3.11 was not found; install it or point PYTHON at it (PYTHON=/path/to/python3.11 make setup)." >&2
  exit 2
fi

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
# --isolated: ignore any machine pip config (it may offer a CPU-only torch wheel that breaks torchvision).
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install --isolated --quiet "uv==0.13.9"
# uv reads no pip config, so the lock's torch/torchvision pair comes from the registry's standard builds.
.venv/bin/uv pip install --python .venv/bin/python --quiet -r requirements.lock
.venv/bin/uv pip install --python .venv/bin/python --quiet --no-deps -e .

# ffmpeg: ffmpeg-python and ns-render call an `ffmpeg` on PATH; imageio-ffmpeg ships a static build.
ffmpeg_exe="$(.venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
ln -sf "$ffmpeg_exe" .venv/bin/ffmpeg
echo "set-up done: .venv/ ($(du -sh .venv | cut -f1)), ffmpeg at .venv/bin/ffmpeg"

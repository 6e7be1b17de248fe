#!/usr/bin/env bash
# Downloads the wheels that benchmarks/gpu_acceptance.py needs on a GPU machine with no network whose
# Python 3.12 has PyTorch, transformers, peft, accelerate and safetensors (and so numpy, huggingface-hub,
# tokenizers, regex, pyyaml, packaging, tqdm): the restorer's other imports, at the versions of
# requirements.lock, built for CPython 3.12 on manylinux x86-64, without their dependencies.
#
#   bash scripts/gpu_acceptance_wheels.sh [FOLDER]      # default .gpu-wheels (ignored by git)
#
# The folder travels with the working tree (at most 64 MiB in all); benchmarks/README.md has the command
# that installs it into a temporary folder on that machine and runs the acceptance.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-.gpu-wheels}"
limit_bytes=$((64 * 1024 * 1024))

# What the restorer imports on the acceptance path (restorer/__init__.py and what it loads), and their own
# imports, that such an image may lack. diffusers, ffmpeg-python (+ future) are missing from the lent image;
# the rest is there today but not promised, and costs a few MiB. Not needed: imageio-ffmpeg (no video is read or
# written), torchvision (the acceptance runs at the model size, no resize), torchmetrics, tyro (CLIs only).
packages=(
  diffusers
  pillow requests urllib3 idna certifi charset-normalizer # diffusers imports PIL and requests at import time
  ffmpeg-python future                                    # restorer/video_io.py imports ffmpeg (which imports past)
  jaxtyping wadler-lindig                                 # shape annotations everywhere in the restorer
  rich markdown-it-py mdurl pygments                      # progress bars and messages
)

python_bin=".venv/bin/python"
[ -x "$python_bin" ] || python_bin="python3"

specs=()
for name in "${packages[@]}"; do
  version="$(grep -i "^${name}==" requirements.lock | head -1 | cut -d= -f3 | cut -d' ' -f1)"
  if [ -z "$version" ]; then
    echo "error: ${name} is not pinned in requirements.lock; pin it there (make lock) or drop it from this script." >&2
    exit 2
  fi
  specs+=("${name}==${version}")
done

staging="$(mktemp -d "${dest%/}.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
# pip matches each manylinux tag exactly: name the old and the current ones.
"$python_bin" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  -d "$staging" "${specs[@]}"

size_bytes="$(du -sb "$staging" | cut -f1)"
if [ "$size_bytes" -gt "$limit_bytes" ]; then
  echo "error: the wheels take $((size_bytes / 1024 / 1024)) MiB, more than the 64 MiB a working tree may carry to the GPU machine." >&2
  exit 1
fi
rm -rf "$dest"
mv "$staging" "$dest"
trap - EXIT
ls -1 "$dest"
echo "$(ls -1 "$dest" | wc -l) wheels in ${dest}: $(du -sh "$dest" | cut -f1) (${size_bytes} bytes; the limit is 64 MiB with the working tree)"

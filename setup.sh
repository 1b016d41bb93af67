#!/usr/bin/env bash
# One-command set-up: a virtualenv in .venv with pinned Paddle 3.x (CPU), PARL
# 2.2.1 (without its stale pins), the test tools, and real Fashion-MNIST data.
# Idempotent: a second run only checks. Environment knobs:
#   PYTHON=python3.11   interpreter for the venv (3.10-3.12)
#   VENV=.venv          where the venv goes
#   WITH_RAY=1          also install the optional Ray extra (requirements-ray.txt)
#   PADDLE_GPU_INDEX=URL  install paddlepaddle-gpu 3.3.1 from Paddle's own index
#                         instead of the CPU build (see README, "GPU machines")
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

extras=""
[ "${WITH_RAY:-0}" = 1 ] && extras="$extras ray"
[ -n "${PADDLE_GPU_INDEX:-}" ] && extras="$extras gpu:${PADDLE_GPU_INDEX}"
key=$(cat requirements.txt requirements-parl.txt requirements-ray.txt setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.autodl-setup-$key$(echo "$extras" | sha256sum | cut -c1-8)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing pinned dependencies into $VENV"
  "${PIP[@]}" install -q -r requirements.txt
  if [ -n "${PADDLE_GPU_INDEX:-}" ]; then
    "${PIP[@]}" uninstall -q -y paddlepaddle
    "${PIP[@]}" install -q paddlepaddle-gpu==3.3.1 -i "$PADDLE_GPU_INDEX"
  fi
  "${PIP[@]}" install -q --no-deps -r requirements-parl.txt
  if [ "${WITH_RAY:-0}" = 1 ]; then
    "${PIP[@]}" install -q -r requirements-ray.txt
  fi
  "$VENV/bin/python" -c "import autodl_design.backend as p; p.check_installation()"
  rm -f "$VENV"/.autodl-setup-*
  touch "$stamp"
fi

# Real images for the embedded default search: Debian's Fashion-MNIST package.
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
      echo "[setup] installing Debian package dataset-fashion-mnist (real Fashion-MNIST images)"
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
  fi
  if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -f "$FMNIST/train-images-idx3-ubyte" ]; then
    echo "[setup] note: Fashion-MNIST is not installed ($FMNIST); 'apt-get install dataset-fashion-mnist'" \
         "or make a dataset with dataset_maker.py and pass --data_path" >&2
  fi
fi
echo "[setup] ready: $("$VENV/bin/python" --version), $("$VENV/bin/python" -c 'import paddle; print("paddle", paddle.__version__)' 2>/dev/null)"

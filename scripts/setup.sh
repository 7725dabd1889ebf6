#!/usr/bin/env bash
# Set-up on a fresh Debian machine (Node 20 present): the Debian packages selfreport uses, then the
# npm dependencies (which build the OpenBLAS addon and compile the TypeScript), then the `selfreport`
# command on PATH and the TypeScript Jupyter kernel (scripts/link.sh, which can be rerun alone).
#   libopenblas-dev                 native BLAS for the tensor engine
#   jupyter-nbconvert python3-nbclient jupyter-client python3-ipykernel   running the notebooks
#   chromium                        the report's browser test
#   redis-server                    the distributed sweep queue's tests
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

packages=(libopenblas-dev jupyter-nbconvert python3-nbclient jupyter-client python3-ipykernel chromium redis-server)
need=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

npm ci
# `selfreport` on PATH (a symlink in /usr/local/bin, or ~/.local/bin) and the Deno Jupyter kernel
# that runs the TypeScript notebooks, both pointing at this clone (replacing an earlier clone's).
bash scripts/link.sh

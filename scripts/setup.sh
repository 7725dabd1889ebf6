#!/usr/bin/env bash
# Set-up on a fresh Debian machine (Node 20 present): the Debian packages selfreport uses, then the
# npm dependencies (which build the OpenBLAS addon), then the TypeScript Jupyter kernel.
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
# The Deno Jupyter kernel ("Deno" in Jupyter's kernel list) runs the TypeScript notebooks.
node_modules/.bin/deno jupyter --install >/dev/null 2>&1 || echo "setup: could not register the Deno Jupyter kernel (notebooks will not run)"

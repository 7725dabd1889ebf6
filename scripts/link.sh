#!/usr/bin/env bash
# The last step of scripts/setup.sh, safe to rerun on its own (after `npm ci`): puts this clone's
# `selfreport` command on PATH and registers this clone's Deno Jupyter kernel, replacing what an
# earlier set-up (of this or another clone) left.
#   SELFREPORT_BIN_DIR  where the `selfreport` symlink goes (default /usr/local/bin when writable,
#                       else ~/.local/bin)
#   XDG_DATA_HOME       as for Jupyter: the kernel goes to $XDG_DATA_HOME/jupyter/kernels/deno
#                       (default ~/.local/share/jupyter/kernels/deno)
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
status=0

# ---- `selfreport` on PATH: a symlink to bin/selfreport.js (Node follows it to this clone's dist/)
target="$repo/bin/selfreport.js"
bin_dir="${SELFREPORT_BIN_DIR:-}"
if [ -z "$bin_dir" ]; then
  if [ -w /usr/local/bin ]; then bin_dir=/usr/local/bin; else bin_dir="$HOME/.local/bin"; fi
fi
link="$bin_dir/selfreport"
if ! mkdir -p "$bin_dir"; then
  echo "setup: could not create $bin_dir; set SELFREPORT_BIN_DIR to a writable directory on your PATH" >&2
  status=1
elif [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
  echo "setup: $link already runs $target"
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  echo "setup: $link exists and is not a symlink, so it was left alone; remove it and rerun bash scripts/link.sh" >&2
  status=1
else
  previous="$(readlink "$link" 2>/dev/null || true)"
  if ln -sfn "$target" "$link"; then
    echo "setup: linked $link -> $target${previous:+ (it pointed at $previous)}"
  else
    echo "setup: could not write $link; set SELFREPORT_BIN_DIR to a writable directory on your PATH" >&2
    status=1
  fi
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "setup: $bin_dir is not on your PATH: add it (export PATH=\"$bin_dir:\$PATH\") to run \`selfreport\`" ;;
esac

# ---- the Deno Jupyter kernel ("Deno" in Jupyter's kernel list), forced so that it runs this clone's deno
deno="$repo/node_modules/.bin/deno"
if [ ! -x "$deno" ]; then
  echo "setup: could not register the Deno Jupyter kernel: $deno is missing (run npm ci first)" >&2
  status=1
elif out="$(NO_COLOR=1 "$deno" jupyter --install --force 2>&1)"; then
  kernel_dir="${out##* at }"
  echo "setup: registered the Deno Jupyter kernel in ${kernel_dir%.} (running $(readlink -f "$deno"))"
else
  echo "setup: could not register the Deno Jupyter kernel (notebooks will not run): $(printf '%s\n' "$out" | grep -m1 -i 'error' || printf '%s\n' "$out" | tail -n 1)" >&2
  status=1
fi
exit $status

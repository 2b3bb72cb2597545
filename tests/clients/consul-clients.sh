#!/usr/bin/env bash
# Installs the Consul clients tests/consul.rs drives, pinned, into target/consul-clients:
#   python: py-consul (PyPI, module `consul`) in a virtualenv, target/consul-clients/venv
#   node:   the `consul` npm package, target/consul-clients/node/node_modules/consul
# Idempotent (a present, importable client is left alone) and serialised by a lock, so the
# tests may call it concurrently; scripts/test calls it first. Needs python3 with venv and
# pip, and node with npm (Debian: python3-venv python3-pip nodejs npm), and the registries.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/target/consul-clients"
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
what=${1:-all}

if [[ $what == all || $what == python ]]; then
  if ! "$dir/venv/bin/python" -c 'import consul' 2>/dev/null; then
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv" ||
      { echo "consul-clients.sh: python3 -m venv failed; install with: apt-get install -y python3-venv" >&2; exit 1; }
    "$dir/venv/bin/pip" install -q --disable-pip-version-check 'py-consul==1.8.0' ||
      { echo "consul-clients.sh: pip install py-consul==1.8.0 failed (PyPI reachable?)" >&2; exit 1; }
  fi
fi

if [[ $what == all || $what == node ]]; then
  if ! [ -f "$dir/node/node_modules/consul/package.json" ]; then
    command -v npm >/dev/null ||
      { echo "consul-clients.sh: npm is missing; install with: apt-get install -y nodejs npm" >&2; exit 1; }
    mkdir -p "$dir/node"
    npm install --prefix "$dir/node" --no-audit --no-fund --silent 'consul@2.0.1' ||
      { echo "consul-clients.sh: npm install consul@2.0.1 failed (npm registry reachable?)" >&2; exit 1; }
  fi
fi

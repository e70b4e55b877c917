#!/usr/bin/env bash
# Submit a nasq-ray search to a running Ray cluster with the Ray Jobs API.
#   cluster/submit.sh [--address http://HEAD:8265] [-- nasq-ray flags...]
# Needs `ray[default]` where you run it (pip install "nasq-ray[cluster]"). The working directory
# (this checkout) is uploaded; the cluster's nodes need torch and nasq-ray's dependencies installed.
set -euo pipefail
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
if [[ "${1:-}" == "--address" ]]; then ADDRESS="$2"; shift 2; fi
if [[ "${1:-}" == "--" ]]; then shift; fi
cd "$(dirname "$0")/.."
exec ray job submit --address "$ADDRESS" --working-dir . \
  --runtime-env-json '{"env_vars": {"RAY_AUTH_MODE": "disabled"}, "excludes": [".venv", "nasq_results", ".git"]}' \
  -- python -m nasq_ray.run "$@"

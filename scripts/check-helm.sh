#!/usr/bin/env bash
# Lints, renders and validates the Helm chart without a cluster (scripts/check-helm.py says what
# is checked). The tools live in a virtualenv under .data/helm-venv, pinned, made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.data/helm-venv
if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
  echo "[switchboard] installing the chart checkers (helm-python-sdk, kubernetes-validate) in $venv"
  mkdir -p .data
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4
fi
exec "$venv/bin/python" scripts/check-helm.py

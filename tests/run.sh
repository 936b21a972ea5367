#!/usr/bin/env bash
# The test command: installs what the tests need (the CPU build of vLLM, the page, the
# test tools, Debian's chromium), then runs pytest with any arguments given.
#   RERANK_VENV   virtualenv to test in (default .venv, or .venv-cpu when .venv holds
#                 the CUDA build: the tests serve small models on the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${RERANK_VENV:-.venv}
if [ -z "${RERANK_VENV:-}" ] && { [ -f .venv/.rerank-installed.d/runtime-cuda ] \
    || { [ -f .venv/.rerank-installed ] && grep -q '^cuda ' .venv/.rerank-installed; }; }; then
  venv=.venv-cpu
  echo "tests: .venv holds the CUDA build of vLLM; testing in $venv with the CPU build" >&2
fi
RERANK_VENV=$venv server/install.sh --device cpu --with-tests

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests: installing Debian's chromium for the browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "tests: chromium is missing: install Debian's chromium package (sudo apt-get install chromium)" >&2
    exit 1
  fi
fi

export RERANK_VENV=$venv GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$venv/bin/ruff" check server webui tests bench
"$venv/bin/mypy" server webui
exec "$venv/bin/python" -m pytest "$@"

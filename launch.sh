#!/usr/bin/env bash
# launch.sh: start the reranker (a vLLM server and the page in front of it) in one go.
#
# usage: ./launch.sh [options]
#
#   --profile NAME      server profile: qwen3-4b, qwen3-4b-fp8, qwen3-0.6b, qwen3-8b, multi-gpu,
#                       qwen3-0.6b-cpu, cpu                 [RERANK_PROFILE; default: qwen3-4b
#                       with an NVIDIA GPU, else cpu]
#   --model ID|DIR      model instead of the profile's      [RERANK_MODEL]
#   --server-port N     vLLM's port (loopback only)         [RERANK_PORT; default 8000]
#   --server-url URL    use a vLLM server that already runs; none is started
#                                                           [RERANK_SERVER_URL]
#   --fleet URL,URL,... servers that already run elsewhere: start vllm-router in
#                       front of them (port RERANK_ROUTER_PORT, default 30000; its
#                       metrics RERANK_ROUTER_METRICS_PORT, default that + 1) and
#                       the page on it, 4 reranks at once per server [RERANK_FLEET]
#   --port N            the page's port                     [RERANK_UI_PORT; default 7860]
#   --host ADDR         the page's address; 0.0.0.0 for all [RERANK_UI_HOST; default 127.0.0.1]
#   --share             also publish a public Gradio link   [RERANK_SHARE=1]
#   --auth USER:PASS    login for the page, repeatable      [RERANK_AUTH="u1:p1,u2:p2"]
#   --share-without-auth  allow --share with no login       [RERANK_SHARE_WITHOUT_AUTH=1]
#   --concurrency N     reranks run at once                 [RERANK_CONCURRENCY; default 4,
#                       multi-gpu: 4 per GPU]
#   --queue-size N      reranks waiting at most             [RERANK_QUEUE_SIZE; default 32]
#   --api-key KEY       key between page and server         [RERANK_API_KEY]
#   --verbose           stream vLLM's and the page's logs   [RERANK_VERBOSE=1]
#   -h, --help          this text
#
# Also: RERANK_VENV (virtualenv, default .venv), RERANK_STARTUP_TIMEOUT (seconds to wait
# for vLLM, default 900), RERANK_LOG_DIR (default logs). Everything after `--` goes to
# `python -m webui` as is. vLLM's log is logs/vllm-PORT.log, the page's logs/page.log.
# Ctrl-C (or SIGTERM, SIGHUP) stops the page and the server and everything they started,
# however the launcher was started (terminal, nohup, setsid, a script without stdin).
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "launch: $*" >&2; }
die() { say "$*"; exit 1; }

# Options become the supervisor's (python -m server launch) or the page's; the supervisor
# and the page read the RERANK_* variables themselves.
launch_args=()
page_args=()
server_url=${RERANK_SERVER_URL:-}
fleet=${RERANK_FLEET:-}
[ "${RERANK_SHARE_WITHOUT_AUTH:-0}" = 1 ] && page_args+=(--share-without-auth)
while [ $# -gt 0 ]; do
  case "$1" in
    --profile|--model|--server-port|--api-key) launch_args+=("$1" "$2"); shift 2 ;;
    --server-url) server_url=$2; launch_args+=("$1" "$2"); shift 2 ;;
    --fleet) fleet=$2; launch_args+=("$1" "$2"); shift 2 ;;
    --verbose) launch_args+=("$1"); shift ;;
    --port|--host|--auth|--concurrency|--queue-size) page_args+=("$1" "$2"); shift 2 ;;
    --share|--share-without-auth) page_args+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; page_args+=("$@"); break ;;
    *) die "unknown option $1 (see ./launch.sh --help)" ;;
  esac
done

venv=${RERANK_VENV:-.venv}
if [ -n "$fleet" ]; then
  server/install.sh --page-only --with-fleet
elif [ -n "$server_url" ]; then
  server/install.sh --page-only
else
  server/install.sh
fi

# The supervisor owns the signals from here on: bash cannot catch a SIGINT that its parent
# ignored (nohup, `setsid ./launch.sh &`), Python can.
exec "$venv/bin/python" -m server launch "${launch_args[@]}" -- "${page_args[@]}"

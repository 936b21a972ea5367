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
#                       front of them (port RERANK_ROUTER_PORT, default 30000) and
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
#   -h, --help          this text
#
# Also: RERANK_VENV (virtualenv, default .venv), RERANK_STARTUP_TIMEOUT (seconds to wait
# for vLLM, default 900). Everything after `--` goes to `python -m webui` as is.
# Ctrl-C (or SIGTERM) stops the page and the server and everything they started.
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "launch: $*" >&2; }
die() { say "$*"; exit 1; }

profile=${RERANK_PROFILE:-}
server_url=${RERANK_SERVER_URL:-}
fleet=${RERANK_FLEET:-}
server_port=${RERANK_PORT:-8000}
page_port=${RERANK_UI_PORT:-7860}
page_args=()
[ "${RERANK_SHARE_WITHOUT_AUTH:-0}" = 1 ] && page_args+=(--share-without-auth)
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --model) export RERANK_MODEL=$2; shift 2 ;;
    --server-port) server_port=$2; shift 2 ;;
    --server-url) server_url=$2; shift 2 ;;
    --fleet) fleet=$2; shift 2 ;;
    --port) page_port=$2; shift 2 ;;
    --host) export RERANK_UI_HOST=$2; shift 2 ;;
    --share) export RERANK_SHARE=1; shift ;;
    --auth) page_args+=(--auth "$2"); shift 2 ;;
    --share-without-auth) page_args+=(--share-without-auth); shift ;;
    --concurrency) export RERANK_CONCURRENCY=$2; shift 2 ;;
    --queue-size) export RERANK_QUEUE_SIZE=$2; shift 2 ;;
    --api-key) export RERANK_API_KEY=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; page_args+=("$@"); break ;;
    *) die "unknown option $1 (see ./launch.sh --help)" ;;
  esac
done

venv=${RERANK_VENV:-.venv}
py=$venv/bin/python
mkdir -p logs

# One launcher per checkout: a second one would fight over the ports and the log.
exec 9>logs/launch.lock
if ! flock -n 9; then
  die "already running: $(cat logs/launch.info 2>/dev/null || echo 'another ./launch.sh holds logs/launch.lock'); stop it with Ctrl-C there"
fi

[ -n "$fleet" ] && [ -n "$server_url$profile" ] && die "--fleet starts its own router: leave out --server-url and --profile"
if [ -z "$server_url" ] && [ -z "$profile" ] && [ -z "$fleet" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    profile=qwen3-4b
  else
    profile=cpu
    say "no NVIDIA GPU found: serving the bundled all-MiniLM-L6-v2 on the CPU (profile cpu); choose another with --profile (./launch.sh --help)"
  fi
fi

# One replica per GPU serves that many more requests at once: let the page send them.
if [ "$profile" = multi-gpu ] && [ -z "${RERANK_CONCURRENCY:-}" ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  export RERANK_CONCURRENCY=$(( 4 * (gpus > 0 ? gpus : 1) ))
  say "multi-gpu: $gpus GPU(s), one replica each; the page runs $RERANK_CONCURRENCY reranks at once"
fi

if [ -n "$fleet" ]; then
  server/install.sh --page-only --with-fleet
elif [ -n "$server_url" ]; then
  server/install.sh --page-only
else
  server/install.sh
fi

page_pid=""
server_pid=""
stopping=0

stop_all() {
  stopping=1
  say "stopping"
  for pid in $page_pid $server_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  # The server launcher stops vLLM's whole process group itself; give it time.
  for _ in $(seq 1 40); do
    alive=""
    for pid in $page_pid $server_pid; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.5
  done
  for pid in $page_pid $server_pid; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f logs/launch.info
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

port_busy() { "$py" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))) != 0)" "$1"; }

start_server() {
  if [ -n "$fleet" ]; then
    "$py" -m server fleet --servers "$fleet" --port "$router_port" --log-file "logs/router-$router_port.log" &
  else
    "$py" -m server serve --profile "$profile" --port "$server_port" --log-file "logs/vllm-$server_port.log" &
  fi
  server_pid=$!
}

if [ -n "$fleet" ]; then
  # The router answers /v1/rerank itself (SGLang's format): the page uses vLLM's /v2/rerank.
  router_port=${RERANK_ROUTER_PORT:-30000}
  port_busy "$router_port" && die "port $router_port is already in use: choose another with RERANK_ROUTER_PORT"
  healthy=$("$py" -m server fleet --servers "$fleet" --check) || die "the fleet cannot serve (see above)"
  if [ -z "${RERANK_CONCURRENCY:-}" ]; then
    export RERANK_CONCURRENCY=$(( 4 * healthy ))
    say "fleet: $healthy server(s) rerank; the page runs $RERANK_CONCURRENCY reranks at once"
  fi
  server_url=http://127.0.0.1:$router_port
  page_args+=(--rerank-path /v2/rerank --metrics-urls "$fleet")
  start_server
  # The page's own check through the router: it answers, with the key, and reranks.
  for _ in $(seq 1 120); do
    "$py" -m webui --server-url "$server_url" --rerank-path /v2/rerank --check-server >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { stop_all; die "the fleet's router exited (log: logs/router-$router_port.log)"; }
    sleep 0.5
  done
  "$py" -m webui --server-url "$server_url" --rerank-path /v2/rerank --check-server \
    || { stop_all; die "the router at $server_url does not rerank (log: logs/router-$router_port.log)"; }
elif [ -z "$server_url" ]; then
  port_busy "$server_port" && die "port $server_port is already in use: choose another with --server-port"
  server_url=http://127.0.0.1:$server_port
  say "starting vLLM (profile $profile) on $server_url; log: logs/vllm-$server_port.log"
  start_server
  say "waiting for vLLM to load the model (a minute or more)"
  # In the background with the builtin wait, so that Ctrl-C or SIGTERM act at once.
  "$py" -m server wait "$server_url" --timeout "${RERANK_STARTUP_TIMEOUT:-900}" \
    --pid "$server_pid" --log-file "logs/vllm-$server_port.log" &
  if ! wait $!; then
    stop_all
    exit 1
  fi
fi

if [ -z "$server_pid" ] && [ -z "$fleet" ]; then
  say "using the vLLM server at $server_url (none started here)"
  "$py" -m webui --server-url "$server_url" --check-server || die "$server_url is not a usable reranker server"
fi
port_busy "$page_port" && { stop_all; die "port $page_port is already in use: choose another with --port"; }
"$py" -m webui --server-url "$server_url" --port "$page_port" ${profile:+--profile-label "$profile"} "${page_args[@]}" &
page_pid=$!
echo "pid $$, page http://${RERANK_UI_HOST:-127.0.0.1}:$page_port, server $server_url" > logs/launch.info

# Supervise: a crashed server is restarted with growing pauses (the page shows it as down
# meanwhile and recovers by itself); if the page exits, everything stops.
backoff=2
while true; do
  sleep 1
  if ! kill -0 "$page_pid" 2>/dev/null; then
    wait "$page_pid" && code=0 || code=$?
    [ "$stopping" = 1 ] && exit 0
    say "the page exited (code $code); stopping"
    stop_all
    exit "$code"
  fi
  if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
    wait "$server_pid" && code=0 || code=$?
    [ "$stopping" = 1 ] && exit 0
    say "vLLM exited (code $code); restarting in ${backoff}s (log: logs/vllm-$server_port.log)"
    sleep "$backoff"
    backoff=$(( backoff * 2 > 60 ? 60 : backoff * 2 ))
    start_server
  elif [ -n "$server_pid" ] && [ "$backoff" -gt 2 ] && "$py" -m server wait "$server_url" --timeout 1 >/dev/null 2>&1; then
    say "vLLM is back"
    backoff=2
  fi
done

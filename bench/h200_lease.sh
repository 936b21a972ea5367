#!/usr/bin/env bash
# One 30-minute GPU lease, step by step: run on the offline GPU host from the repo root, one
# step per call, the bundle's parts carried as .bundle/part-NNN (bench/README.md).
#
#   bench/h200_lease.sh prepare   # call 1, carries part-000 and the tokenizer: random 4B
#                                 # (with the transformers peer), 0.6B and 8B models, in the
#                                 # background while the other parts travel
#   bench/h200_lease.sh stash     # call 2, carries part-001
#   bench/h200_lease.sh serve     # call 3, carries part-002 and SHA256SUMS: install, then
#                                 # `serve --together` the round's candidates in the background
#   bench/h200_lease.sh watch     # later calls: follow the round until it ends or WATCH_S pass
#   bench/h200_lease.sh collect   # last call: the round's records and logs into $OUT
#
# Env: ROUND (default bench/tuning/h200-round3.jsonl), DEADLINE_S (seconds the serve round
# may take, default 1300), WATCH_S (default 560). The background jobs run in their own
# session (setsid), so they outlive the call that started them.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=/tmp/lease
STASH=$WORK/bundle
SITE=/tmp/vllm-site
ROUND=${ROUND:-bench/tuning/h200-round3.jsonl}
DEADLINE_S=${DEADLINE_S:-1300}
WATCH_S=${WATCH_S:-560}
mkdir -p "$WORK" "$STASH"

stash_parts() {
    # The parts that travelled with this call wait in /tmp for the others.
    for f in .bundle/*; do [ -f "$f" ] && cp -f "$f" "$STASH/"; done
    ls -l "$STASH"
}

follow() {  # follow LOG until its job's pid file is gone or WATCH_S pass
    local log=$1 pidfile=$2 end=$((SECONDS + WATCH_S)) seen=0
    while [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ $SECONDS -lt $end ]; do
        local lines
        lines=$(wc -l < "$log")
        if [ "$lines" -gt "$seen" ]; then sed -n "$((seen + 1)),${lines}p" "$log" | cut -c1-400; seen=$lines; fi
        sleep 5
    done
    sed -n "$((seen + 1)),\$p" "$log" | cut -c1-400
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "lease: still running"; else echo "lease: done"; fi
}

case "${1:-}" in
    prepare)
        stash_parts
        mkdir -p "$WORK/tokenizer"
        xz -dc "$STASH/qwen3-tokenizer.tar.xz" | tar -x -C "$WORK/tokenizer"
        tok=$(dirname "$(find "$WORK/tokenizer" -name tokenizer_config.json | head -1)")
        export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
        setsid bash -c "
            python3 -m bench.run_gpu_bench prepare --model-dir /tmp/m4b --tokenizer $tok --out $WORK/prep &&
            python3 -m bench.run_gpu_bench prepare --model-dir /tmp/m06 --tokenizer $tok --size 0.6b --skip-peer --out $WORK/prep06 &&
            python3 -m bench.run_gpu_bench prepare --model-dir /tmp/m8b --tokenizer $tok --size 8b --skip-peer --out $WORK/prep8b
            echo prepare exit \$?; rm -f $WORK/prepare.pid" > "$WORK/prepare.log" 2>&1 < /dev/null &
        echo $! > "$WORK/prepare.pid"
        echo "lease: prepare started (pid $(cat "$WORK/prepare.pid"))"
        ;;
    stash)
        stash_parts
        tail -3 "$WORK/prepare.log"
        ;;
    serve)
        stash_parts
        eval "$(bench/install_offline.sh --from "$STASH" --target "$SITE")"
        WATCH_S=300 follow "$WORK/prepare.log" "$WORK/prepare.pid"
        mkdir -p "$WORK/run" && cp "$WORK/prep/reference-scores.json" "$WORK/run/"
        export PYTHONUNBUFFERED=1
        setsid bash -c "
            python3 -m bench.run_gpu_bench serve --model-dir /tmp/m4b --out $WORK/run --together \
                --candidates-file $ROUND --deadline-s $DEADLINE_S --config-budget-s 220
            echo serve exit \$?; rm -f $WORK/serve.pid" > "$WORK/serve.log" 2>&1 < /dev/null &
        echo $! > "$WORK/serve.pid"
        follow "$WORK/serve.log" "$WORK/serve.pid"
        ;;
    watch)
        follow "$WORK/serve.log" "$WORK/serve.pid"
        ;;
    collect)
        tar -C "$WORK" -czf "$OUT/round.tgz" --exclude='*.pt.trace.json.gz' prep prep06 prep8b run prepare.log serve.log
        ls -l "$OUT"
        ;;
    *)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac

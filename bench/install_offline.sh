#!/usr/bin/env bash
# Install the bundle made by bench/pack_offline.sh on an offline GPU host.
#
#   eval "$(bench/install_offline.sh --from DIR --target /tmp/vllm-site)"
#
# DIR holds part-000, part-001, ... (copy them there in as many transfers as needed) and,
# if it travelled too, SHA256SUMS, which is then checked (and qwen3-tokenizer.tar.xz, which
# goes to TARGET/_assets/qwen3-tokenizer). The parts are joined, unpacked
# into TARGET (nothing else on the host changes), and the environment to use is printed on
# stdout, so `eval` applies it to the calling shell; progress goes to stderr. --check then
# imports vLLM once with that environment to prove the install.
set -euo pipefail

FROM=".bundle"
TARGET="/tmp/vllm-site"
CHECK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --from) FROM="$2"; shift 2 ;;
        --target) TARGET="$2"; shift 2 ;;
        --check) CHECK=1; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

shopt -s nullglob
parts=("$FROM"/part-*)
if [ ${#parts[@]} -eq 0 ]; then
    echo "error: no bundle parts (part-000 ...) in $FROM" >&2
    exit 1
fi
if [ -f "$FROM/SHA256SUMS" ]; then
    expected=$(wc -l < "$FROM/SHA256SUMS")
    if [ "$expected" -ne ${#parts[@]} ]; then
        echo "error: $FROM has ${#parts[@]} parts but SHA256SUMS lists $expected; copy the missing ones" >&2
        exit 1
    fi
    (cd "$FROM" && sha256sum --quiet -c SHA256SUMS) >&2 || { echo "error: a part in $FROM is damaged" >&2; exit 1; }
fi

mkdir -p "$TARGET"
echo "unpacking ${#parts[@]} parts into $TARGET" >&2
cat "${parts[@]}" | xz -dc -T0 | tar -x -C "$TARGET"
if [ -f "$FROM/qwen3-tokenizer.tar.xz" ]; then
    if [ -f "$FROM/qwen3-tokenizer.sha256" ]; then
        (cd "$FROM" && sha256sum --quiet -c qwen3-tokenizer.sha256) >&2 || { echo "error: the tokenizer archive is damaged" >&2; exit 1; }
    fi
    mkdir -p "$TARGET/_assets"
    xz -dc "$FROM/qwen3-tokenizer.tar.xz" | tar -x -C "$TARGET/_assets"
    echo "Qwen3 tokenizer in $TARGET/_assets/qwen3-tokenizer" >&2
fi

# FlashInfer is not in the bundle: its sampler would be imported otherwise. Nothing here can
# reach the network, so tell the libraries not to try.
ENV_LINES=(
    "export PYTHONPATH=$TARGET\${PYTHONPATH:+:\$PYTHONPATH}"
    "export VLLM_USE_FLASHINFER_SAMPLER=0"
    "export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1"
    "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
    "export GRADIO_ANALYTICS_ENABLED=False"
)
if [ "$CHECK" = 1 ]; then
    (eval "$(printf '%s\n' "${ENV_LINES[@]}")"; python3 -c 'import vllm, sys; print(f"vllm {vllm.__version__} from {vllm.__file__}", file=sys.stderr)')
fi
printf '%s\n' "${ENV_LINES[@]}"

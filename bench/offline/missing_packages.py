"""Pin the packages an offline host lacks, from a pip resolution report.

    python3 -m pip install --dry-run --ignore-installed --quiet --report report.json \
        --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ... \
        --target /tmp/unused -r requirements.txt
    python3 bench/offline/missing_packages.py report.json bench/offline/host-image-packages.txt

Prints `name==version` for every resolved package that the host does not already have
(names compared after PEP 503 normalisation), leaving out the CUDA libraries and GPU
kernel packages listed in HOST_PROVIDED: the host's torch brings its own, and vLLM runs
a Qwen3 reranker on Hopper without the optional ones. The list of host packages is one
name a line (`pip list --format=freeze` output works too).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

HOST_PROVIDED = {
    "torch": "the host's own CUDA build; vLLM 0.26.0 pins the same 2.11.0",
    "torchaudio": "not needed for text models",
    "torchvision": "not needed for text models",
    "torchcodec": "video decoding, not needed for text models",
    "pynvvideocodec": "video decoding, not needed for text models",
    "flashinfer-python": "optional kernels; set VLLM_USE_FLASHINFER_SAMPLER=0 without it",
    "tilelang": "optional kernel compiler",
    "nvidia-cutlass-dsl": "optional CuTe DSL kernels (Blackwell attention), ~1 GB",
    "quack-kernels": "optional CuTe DSL kernels",
    "tokenspeed-mla": "MLA attention (DeepSeek), not used by Qwen3",
    "humming-kernels": "optional quantization kernels",
    "fastsafetensors": "optional GPU-direct loader",
    "nvidia-cudnn-frontend": "optional cuDNN graph API",
}
"""Left out on purpose, with the reason."""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_packages(lines: Iterable[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalise(re.split(r"[=<>!~ ]", line, maxsplit=1)[0]))
    return names


def missing_pins(report: dict[str, object], present: set[str]) -> list[str]:
    pins = []
    installs = report.get("install", [])
    assert isinstance(installs, list)
    for item in installs:
        metadata = item["metadata"]
        name = normalise(metadata["name"])
        # The CUDA runtime wheels (nvidia-*) come with the host's torch.
        if name in present or name in HOST_PROVIDED or name.startswith("nvidia-"):
            continue
        pins.append(f"{name}=={metadata['version']}")
    return sorted(pins)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="pip's --report JSON")
    parser.add_argument("host_packages", type=Path, help="the host's package names, one a line")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        present = host_packages(args.host_packages.read_text().splitlines())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(missing_pins(report, present)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

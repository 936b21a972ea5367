"""Turn vLLM's startup failures into one line a person can act on.

vLLM prints pages of traceback when it cannot start; the cause is usually one of a few.
"""

from __future__ import annotations

import re
from pathlib import Path

# (pattern in the log, what to tell the user), first match wins.
KNOWN_FAILURES: tuple[tuple[str, str], ...] = (
    (r"Address already in use|Errno 98", "the port is already in use: pick another with --port"),
    (
        r"CUDA out of memory|OutOfMemoryError|less than desired GPU memory utilization|"
        r"No available memory for the cache blocks|Insufficient memory|is less than requested memory",
        "not enough memory for this profile: free the GPU, choose a smaller or fp8 profile, or lower --max-doc-tokens",
    ),
    (
        r"Repository Not Found|is not a valid model identifier|not a local folder|"
        r"LocalEntryNotFoundError|We couldn't connect to|Cannot find model|"
        r"does not appear to have a file named config\.json|HFValidationError|OfflineModeIsEnabled",
        "the model could not be found: give a local folder with --model, or allow the Hugging Face hub to download it",
    ),
    (r"error: unrecognized arguments|error: argument|invalid choice", "vLLM rejected a flag (see --extra-args)"),
    (r"Unsupported CPU attention configuration", "the CPU attention backend cannot run this model's head size"),
    (r"No CUDA GPUs are available|Failed to infer device type|NVIDIA driver", "no usable GPU: use --profile cpu"),
)


UNKNOWN_CAUSE = "vLLM exited (no known cause in its log)"


def diagnose(log_text: str) -> str:
    for pattern, advice in KNOWN_FAILURES:
        match = re.search(pattern, log_text)
        if match:
            return f"{advice} ({_line_of(log_text, match.start())})"
    return UNKNOWN_CAUSE


def last_lines(log_path: Path | None, count: int = 15) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    lines = log_path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-count:])


def _line_of(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : end if end != -1 else len(text)].strip()
    return line[:200]

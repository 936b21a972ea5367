"""Keep README.md's command outputs true: each block between `<!-- BEGIN name -->` and
`<!-- END name -->` is the real output of a command, checked by tests/test_readme.py.

    .venv/bin/python -m tests.support.readme --write    # refresh the blocks after a change
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

BLOCKS: dict[str, list[str]] = {
    "launch-help": ["./launch.sh", "--help"],
    "server-serve-help": [sys.executable, "-m", "server", "serve", "--help"],
    "server-fleet-help": [sys.executable, "-m", "server", "fleet", "--help"],
    "webui-help": [sys.executable, "-m", "webui", "--help"],
    **{
        f"plan-{profile}": [sys.executable, "-m", "server", "plan", "--profile", profile, "--gpu-mem", "80"]
        for profile in ("qwen3-4b", "qwen3-4b-fp8", "qwen3-0.6b", "qwen3-8b", "multi-gpu")
    },
}
_BLOCK = re.compile(r"(<!-- BEGIN (?P<name>[\w.-]+) -->\n```text\n)(?P<body>.*?)(```\n<!-- END (?P=name) -->)", re.S)


def command_output(name: str) -> str:
    # A fixed width, so that argparse wraps the same on every terminal.
    env = {**os.environ, "COLUMNS": "100"}
    out = subprocess.run(BLOCKS[name], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    # The prog name argparse prints is "python -m ..." already; keep paths out of the README.
    return out.stdout.replace(sys.executable, "python")


def blocks_in_readme(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def refreshed(text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + command_output(m["name"]) + m.group(4), text)


if __name__ == "__main__":
    if "--write" in sys.argv:
        README.write_text(refreshed(README.read_text()))
    else:
        print(__doc__)

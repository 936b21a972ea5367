"""server/install.sh: each feature set keeps its own record, and the GPU requirements resolve.

The GPU path is never installed on a CPU host, so nothing else would notice if
server/requirements-gpu.txt drifted into a conflict with the page's requirements.txt:
pip resolves the two together for a Linux x86-64 CPython 3.11 host (PyPI must be reachable,
as it is in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.server_process import REPO_ROOT

GLIBC_MINORS = range(17, 36)
"""manylinux_2_17 .. manylinux_2_35 (Ubuntu 22.04's glibc): pip takes only the platform
tags it is given, and vLLM's dependencies ship wheels tagged anywhere in that range."""


def test_gpu_requirements_resolve_with_the_pages_for_linux_cpython_311(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    platforms = [arg for minor in GLIBC_MINORS for arg in ("--platform", f"manylinux_2_{minor}_x86_64")]
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet", "--ignore-installed",
            "--report", str(report), *platforms, "--platform", "manylinux2014_x86_64",
            "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:",
            "--index-url", "https://pypi.org/simple",
            "-r", "requirements.txt", "-r", "server/requirements-gpu.txt",
        ],
        cwd=REPO_ROOT,
        # This machine's pip configuration (local wheel folders, caps) must not decide it.
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pinned = {}
    for name in ("requirements.txt", "server/requirements-gpu.txt"):
        for line in (REPO_ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pinned[package.strip().lower()] = version.strip()
    assert {package: chosen.get(package) for package in pinned} == pinned


def test_a_second_run_of_each_install_installs_nothing_and_says_nothing() -> None:
    """The tests' virtualenv is installed (tests/run.sh did it); launch.sh's runtime set,
    tests/run.sh's runtime+tests and the page-only set must each find their record."""
    env = {**os.environ, "RERANK_VENV": sys.prefix}
    for args in ([], ["--device", "cpu", "--with-tests"], ["--page-only"], []):
        done = subprocess.run(
            ["server/install.sh", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), args

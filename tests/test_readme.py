"""The README's command outputs are the commands' real outputs (regenerate: see tests/support/readme.py)."""

from __future__ import annotations

import pytest

from tests.support.readme import BLOCKS, README, blocks_in_readme, command_output


@pytest.mark.parametrize("name", list(BLOCKS))
def test_readme_block_is_the_real_output(name: str) -> None:
    blocks = blocks_in_readme(README.read_text())
    assert name in blocks, f"README.md lacks the block {name}"
    assert blocks[name] == command_output(name), "run: .venv/bin/python -m tests.support.readme --write"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "./launch.sh\n" in text and "./tests/run.sh\n" in text
    assert "./tests/run.sh" in (README.parent / ".ci" / "run").read_text()

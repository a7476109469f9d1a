"""The feature code's identity, for the feature-store fingerprint (DESIGN.md §2, §9).

A cached feature table is reused only if the code that computed it is byte-for-byte the code that
would compute it now: the hash covers the source of the kernels, the engine around them and every
module that defines a registered family (found from the registry, so a new family module is
covered the moment it registers). FEATURE_CODE_VERSION stays as a manual override.
Reading the files does not import them (numba in particular stays unloaded).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from pathlib import Path

from quant_cli.features.registry import REGISTRY

# The machinery every feature goes through, besides the modules that define families.
ENGINE_MODULES = (
    "quant_cli.features.kernels",
    "quant_cli.features._compiled",
    "quant_cli.features.panel",
    "quant_cli.features.engine",
    "quant_cli.features.grouped",
    "quant_cli.features.align",
    "quant_cli.features.references",
    "quant_cli.features.mtf",
    "quant_cli.features.registry",
    "quant_cli.features.build",
    "quant_cli.features.expression",
    "quant_cli.features.expression_eval",
)


def code_files() -> list[Path]:
    """Every source file whose change can change a feature value, sorted."""
    modules = set(ENGINE_MODULES)
    for family in REGISTRY.families.values():
        if family.plugin is not None:  # a user's plugin: its own source hash is in the fingerprint
            continue
        fn = family.compute or family.build
        modules.add(fn.__module__)
    return sorted({_source(name) for name in modules})


def _source(module: str) -> Path:
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None) if loaded is not None else importlib.util.find_spec(module).origin
    return Path(origin).resolve()


def _read(path: Path) -> bytes:
    return path.read_bytes()


@functools.cache
def feature_code_hash() -> str:
    """SHA-256 over the names and bytes of `code_files()` (computed once per process)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in code_files():
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(name.encode() + b"\0" + _read(path) + b"\0")
    return digest.hexdigest()

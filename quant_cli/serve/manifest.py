"""A bundle's manifest: schema version and a SHA-256 of every file, written last and checked first.

Loading (serve/contents.py) refuses a bundle whose manifest has another schema version, or where
any file changed, went missing or was added (each named), and pickle-based artefacts (which run
code when loaded) unless the caller trusts them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from quant_cli.errors import BundleError
from quant_cli.io import OWNER_FILE, write_json_atomic

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_of(folder: Path) -> list[str]:
    """Every file under `folder` (posix paths relative to it), the manifest itself excluded."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(n for n in names if n not in (MANIFEST, OWNER_FILE))


def bundle_id(run_id: str, hashes: dict[str, str]) -> str:
    """The run id plus a short digest of every file's hash: two bundles with one id hold the same bytes."""
    digest = hashlib.sha256("\n".join(f"{k}:{v}" for k, v in sorted(hashes.items())).encode()).hexdigest()
    return f"{run_id}-{digest[:12]}"


def write_manifest(folder: Path, fields: dict[str, Any]) -> dict[str, Any]:
    hashes = {name: sha256(folder / name) for name in files_of(folder)}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_id": bundle_id(fields["source_run"], hashes),
        **fields,
        "files": hashes,
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def check_pickle(folder: Path, names: list[str], trust_pickle: bool) -> None:
    pickled = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
    if pickled and not trust_pickle:
        raise BundleError(
            f"{folder}: {pickled[0]} is a pickle, which runs code when it is loaded; pass --trust-pickle only "
            "for bundles and runs you made yourself (or train a model with a native format, e.g. lightgbm)"
        )

"""A bundle's manifest: schema version and a SHA-256 of every file, written last and checked first.

Loading refuses a bundle whose manifest has another schema version, or where any file changed,
went missing or was added (each named), and pickle-based artefacts (which run code when loaded)
unless the caller trusts them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from quant_cli.errors import BundleError
from quant_cli.io import OWNER_FILE, read_json, write_json_atomic

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
    manifest = {"schema_version": SCHEMA_VERSION, "bundle_id": bundle_id(fields["source_run"], hashes), **fields, "files": hashes}
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle {folder}: no {MANIFEST}; pass a folder made by `qfactory bundle --run RUN` (or its .tar.gz)")
    try:
        manifest = read_json(path)
    except ValueError as exc:
        raise BundleError(f"bundle {folder}: {MANIFEST} is not valid JSON ({exc}); rebuild the bundle with `qfactory bundle --run RUN`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"bundle {folder}: {MANIFEST} has no 'files' table; rebuild the bundle with `qfactory bundle --run RUN`")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle {folder}: {MANIFEST} has schema_version {version!r}, this qfactory reads {SCHEMA_VERSION}; "
                          "rebuild the bundle with this qfactory version")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], trust_pickle: bool) -> None:
    """Every listed file present with its hash, no unlisted file, no pickle unless trusted."""
    listed: dict[str, str] = manifest["files"]
    rebuild = "the bundle was modified after it was built; rebuild it with `qfactory bundle --run RUN`"
    for name in sorted(listed):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"bundle {folder}: file {name} is missing; {rebuild}")
        if sha256(path) != listed[name]:
            raise BundleError(f"bundle {folder}: file {name} was changed (SHA-256 differs from {MANIFEST}); {rebuild}")
    extra = [name for name in files_of(folder) if name not in listed]
    if extra:
        raise BundleError(f"bundle {folder}: file {extra[0]} is not in {MANIFEST} (extra file); {rebuild}")
    check_pickle(folder, list(listed), trust_pickle)


def check_pickle(folder: Path, names: list[str], trust_pickle: bool) -> None:
    pickled = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
    if pickled and not trust_pickle:
        raise BundleError(f"{folder}: {pickled[0]} is a pickle, which runs code when it is loaded; pass --trust-pickle only "
                          "for bundles and runs you made yourself (or train a model with a native format, e.g. lightgbm)")

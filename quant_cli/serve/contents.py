"""A bundle read once: every listed file's bytes, hashed as they are read, and nothing read again.

Loading used to hash the files, then open them again to load them: a file swapped in between
(a deploy writing the next bundle in place, an attacker) was served under the checked bundle's id.
Here the bytes that are hashed are the bytes that are used: `read` returns them (a folder or a
.tar.gz alike, the archive read straight from its stream, never unpacked on disk), and the model
is loaded from a private copy written from those bytes (bundle.py::load_model_from).

What `read` refuses, each as one BundleError line:
- manifest entries that name no file inside the bundle: absolute paths, `..`, empty parts, links;
- a listed file missing, changed (SHA-256), or not a regular file; an unlisted file (extra);
- a manifest whose `bundle_id` is not the one its files give (a swapped, re-hashed model keeps no id);
- pickles unless trusted; more than MAX_BUNDLE_BYTES in all; JSON over the bounded reader's caps.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from quant_cli.errors import BundleError, clipped, shown
from quant_cli.io import OWNER_FILE, parse_json
from quant_cli.serve import manifest as mf

MAX_BUNDLE_BYTES = 4 * 1024**3  # every listed file held in memory while it loads: a cap, not a target
MAX_FILES = 10_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REBUILD = "rebuild the bundle with `qfactory bundle --run RUN`"
_MODIFIED = "the bundle was modified after it was built; rebuild it with `qfactory bundle --run RUN`"


@dataclass(frozen=True)
class Contents:
    """A verified bundle: its manifest and the bytes of every file it lists."""

    label: str  # the path the caller gave: what messages name
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def bundle_id(self) -> str:
        return self.manifest["bundle_id"]

    def json(self, name: str) -> Any:
        """A listed JSON file, through the bounded reader (size and nesting depth capped)."""
        try:
            return parse_json(self.files[name])
        except KeyError:
            raise BundleError(f"bundle {self.label}: {name} is not in {mf.MANIFEST}; {REBUILD}") from None
        except ValueError as exc:  # not JSON, not UTF-8, too big or too deep
            raise BundleError(f"bundle {self.label}: {name} is not valid JSON ({exc}); {REBUILD}") from None

    def under(self, folder: str) -> dict[str, bytes]:
        """The files under `folder/` (e.g. the model's), by their path inside it."""
        prefix = folder.rstrip("/") + "/"
        return {name[len(prefix) :]: data for name, data in self.files.items() if name.startswith(prefix)}


def read(path: Path, trust_pickle: bool = False) -> Contents:
    """The verified contents of a bundle folder or .tar.gz; any mismatch is a BundleError."""
    label = plain(str(path), 300)
    try:
        if path.is_dir():
            return _from_folder(path, label, trust_pickle)
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            return _from_archive(path, label, trust_pickle)
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte (from a /reload payload too), unreadable
        raise BundleError(
            f"bundle {shown(label, 200)}: not a usable path ({type(exc).__name__}: {exc}); "
            "pass a bundle folder or its .tar.gz"
        ) from None
    raise BundleError(
        f"bundle {label}: not found; pass a bundle folder or its .tar.gz (made by `qfactory bundle --run RUN`)"
    )


def plain(text: str, limit: int = 120) -> str:
    """A name from disk or a manifest as one printable line: control characters (a newline in a
    file name) escaped, long names cut, so an error stays one line."""
    return clipped(text if text.isprintable() else text.encode("unicode_escape").decode("ascii"), limit)


# ---- the manifest ---------------------------------------------------------------------------------


def _manifest(label: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        raise BundleError(
            f"bundle {label}: no {mf.MANIFEST}; pass a folder made by `qfactory bundle --run RUN` (or its .tar.gz)"
        )
    try:
        manifest = parse_json(data)
    except ValueError as exc:
        raise BundleError(f"bundle {label}: {mf.MANIFEST} is not valid JSON ({exc}); {REBUILD}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"bundle {label}: {mf.MANIFEST} has no 'files' table; {REBUILD}")
    version = manifest.get("schema_version")
    if version != mf.SCHEMA_VERSION:
        raise BundleError(
            f"bundle {label}: {mf.MANIFEST} has schema_version {shown(version)}, this qfactory reads "
            f"{mf.SCHEMA_VERSION}; rebuild the bundle with this qfactory version"
        )
    for key in ("bundle_id", "source_run"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise BundleError(f"bundle {label}: {mf.MANIFEST} has no {key!r} string; {REBUILD}")
    if len(manifest["files"]) > MAX_FILES:
        raise BundleError(
            f"bundle {label}: {mf.MANIFEST} lists {len(manifest['files']):,} files, over {MAX_FILES:,}; {REBUILD}"
        )
    for name, digest in manifest["files"].items():
        check_name(label, name)
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(
                f"bundle {label}: {mf.MANIFEST} gives file {shown(name)} the hash {shown(digest)}, "
                f"not a SHA-256 hex digest; {REBUILD}"
            )
    return manifest


def check_name(label: str, name: str) -> PurePosixPath:
    """A manifest entry as a path inside the bundle: relative, no '..', '.', empty part, backslash or NUL."""
    parts = name.split("/") if isinstance(name, str) else []
    if (
        not parts
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(p in ("", ".", "..") for p in parts)
        or name in (mf.MANIFEST, OWNER_FILE)
        or not name.isprintable()
    ):
        raise BundleError(
            f"bundle {label}: {mf.MANIFEST} entry {shown(name)} does not name a file inside the bundle "
            f"(absolute, '..', empty part, or the manifest itself); {REBUILD}"
        )
    return PurePosixPath(name)


def _verified(label: str, manifest: dict[str, Any], present: dict[str, bytes | None], trust_pickle: bool) -> Contents:
    """Contents after checking `present` (every file found: its bytes if listed, None if not) against the manifest."""
    listed: dict[str, str] = manifest["files"]
    for name in sorted(listed):
        data = present.get(name)
        if data is None:
            raise BundleError(f"bundle {label}: file {name} is missing; {_MODIFIED}")
        if hashlib.sha256(data).hexdigest() != listed[name]:
            raise BundleError(
                f"bundle {label}: file {name} was changed (SHA-256 differs from {mf.MANIFEST}); {_MODIFIED}"
            )
    extra = sorted(name for name in present if name not in listed)
    if extra:
        raise BundleError(f"bundle {label}: file {plain(extra[0])} is not in {mf.MANIFEST} (extra file); {_MODIFIED}")
    derived = mf.bundle_id(manifest["source_run"], listed)
    if manifest["bundle_id"] != derived:  # the id names the content: a re-hashed model cannot keep another's
        raise BundleError(
            f"bundle {label}: {mf.MANIFEST} says bundle_id {shown(manifest['bundle_id'])}, "
            f"but its files give {derived}; {_MODIFIED}"
        )
    mf.check_pickle(Path(label), list(listed), trust_pickle)
    return Contents(label, manifest, {name: present[name] for name in listed})  # type: ignore[misc]


class _Budget:
    """Bytes read so far against MAX_BUNDLE_BYTES."""

    def __init__(self, label: str) -> None:
        self.label, self.left = label, MAX_BUNDLE_BYTES

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise BundleError(
                f"bundle {self.label}: its files hold more than {MAX_BUNDLE_BYTES:,} bytes, "
                f"over this qfactory's limit; {REBUILD}"
            )


# ---- a folder -------------------------------------------------------------------------------------


def _from_folder(folder: Path, label: str, trust_pickle: bool) -> Contents:
    """Every file under `folder`, walked by directory descriptor without following a link, each
    listed file opened once (O_NOFOLLOW), read, and the same bytes kept."""
    top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        manifest = _manifest(label, _read_at(top, mf.MANIFEST, label, _Budget(label), missing_ok=True))
    finally:
        os.close(top)
    listed, budget = manifest["files"], _Budget(label)
    present: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames, dirfd in os.fwalk(folder, follow_symlinks=False):
        inside = Path(dirpath).relative_to(folder).as_posix()
        for entry in sorted([*dirnames, *filenames]):
            name = entry if inside == "." else f"{inside}/{entry}"
            mode = os.stat(entry, dir_fd=dirfd, follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(
                    f"bundle {label}: {plain(name)} is a link; a bundle holds plain files only, {REBUILD}"
                )
            if stat.S_ISDIR(mode) or name in (mf.MANIFEST, OWNER_FILE):
                continue
            if len(present) >= MAX_FILES:
                raise BundleError(f"bundle {label}: more than {MAX_FILES:,} files; {REBUILD}")
            present[name] = _read_at(dirfd, entry, label, budget) if name in listed else None
    return _verified(label, manifest, present, trust_pickle)


def _read_at(dirfd: int, entry: str, label: str, budget: _Budget, missing_ok: bool = False) -> bytes | None:
    """One regular file in the directory `dirfd`, opened without following a link, read whole."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    except OSError as exc:  # ELOOP: the entry became a link
        raise BundleError(
            f"bundle {label}: {plain(entry)} cannot be opened as a plain file ({exc.strerror}); {REBUILD}"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"bundle {label}: {plain(entry)} is not a regular file; {REBUILD}")
        budget.take(info.st_size)
        data = handle.read(info.st_size + 1)
    budget.take(len(data) - info.st_size)  # grown since fstat: counted too
    return data


# ---- a .tar.gz ------------------------------------------------------------------------------------


def _from_archive(archive: Path, label: str, trust_pickle: bool) -> Contents:
    """The archive's one bundle folder, read from the compressed stream into memory (no folder on
    disk, so none can leak); only directories and regular files, each name inside that folder."""
    budget = _Budget(label)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _archive_members(tar, label)
            data = {name: _member_bytes(tar, member, budget) for name, member in members.items()}
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(
            f"bundle {label}: not a readable .tar.gz ({exc}); rebuild it with `qfactory bundle --run RUN --archive`"
        ) from None
    manifest = _manifest(label, data.pop(mf.MANIFEST, None))
    data.pop(OWNER_FILE, None)
    listed = manifest["files"]
    present = {name: (blob if name in listed else None) for name, blob in data.items()}
    return _verified(label, manifest, present, trust_pickle)


def _archive_members(tar: tarfile.TarFile, label: str) -> dict[str, tarfile.TarInfo]:
    """name inside the bundle folder → member, for the regular files; refuses anything else."""
    one_folder = "the archive must hold one bundle folder; rebuild it with `qfactory bundle --run RUN --archive`"
    tops, files = set(), {}
    for count, member in enumerate(tar):
        if count >= MAX_FILES:
            raise BundleError(f"bundle {label}: more than {MAX_FILES:,} archive entries; {REBUILD}")
        path = member.name.removeprefix("./").rstrip("/")
        top, _, name = path.partition("/")
        if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in path.split("/")):
            raise BundleError(
                f"bundle {label}: archive entry {shown(member.name)} is not a path inside the bundle; {one_folder}"
            )
        tops.add(top)
        if member.isdir():
            continue
        if not member.isreg():
            raise BundleError(
                f"bundle {label}: archive entry {shown(member.name)} is a link or device; "
                f"a bundle holds plain files only, {REBUILD}"
            )
        if not name:
            raise BundleError(f"bundle {label}: {one_folder}")
        if name in files:
            raise BundleError(f"bundle {label}: archive entry {shown(member.name)} appears twice; {REBUILD}")
        files[name] = member
    if len(tops) != 1:
        raise BundleError(f"bundle {label}: {one_folder}")
    return files


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, budget: _Budget) -> bytes:
    budget.take(member.size)  # checked on the header's size, before decompressing
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""

"""What every subcommand shares: options, error-to-exit-code mapping, stdout conventions."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from typer._click import exceptions as click_errors  # typer vendors click: its exceptions and contexts
from typer._click.globals import get_current_context

from quant_cli.cli import console
from quant_cli.errors import STORAGE_FIXES, QFactoryError, StorageError, clip_huge_values, os_errno
from quant_cli.models.registry import check_capabilities
from quant_cli.recipe import Recipe, load_with_overrides
from quant_cli.runs.directory import Run, data_home, resolve_run, runs_home

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout instead of the path.")]
RecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML file.", show_default=False)]
OptionalRecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="Recipe TOML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a recipe key, e.g. --set model.params.num_leaves=63 (repeatable).", show_default=False
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Data store home (else $QFACTORY_DATA_DIR, recipe, ./data).", show_default=False),
]
RunsDirOpt = Annotated[
    str | None,
    typer.Option("--runs-dir", help="Runs home (else $QFACTORY_RUNS_DIR, recipe, ./runs).", show_default=False),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device", help="auto, cpu, cuda, cuda:N or mps (same as --set train.device=...).", show_default=False
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name; same as --set model.name=NAME (drops model.params written for another model).",
        show_default=False,
    ),
]
StrictDeviceOpt = Annotated[
    bool, typer.Option("--strict-device", help="Fail instead of falling back to CPU when the device is unavailable.")
]


def device_overrides(device: str | None, strict: bool) -> list[str]:
    """--device/--strict-device as recipe overrides, so the run's recipe.toml records them."""
    return [*([f'train.device="{device}"'] if device else []), *(["train.strict_device=true"] if strict else [])]


BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where tasks run: local (this machine) or ray (RAY_ADDRESS, else a local "
        "Ray instance; needs qfactory[ray]).",
    ),
]
JobsOpt = Annotated[
    int,
    typer.Option(
        "--jobs", "-j", min=1, help="Tasks run at once (local: processes; ray: CPUs of a local Ray instance)."
    ),
]


RunOpt = Annotated[str, typer.Option("--run", help="Run directory, run id, or 'latest'.", show_default=False)]


def load_stage_recipe(
    recipe: Path,
    sets: list[str] | None,
    model: str | None = None,
    device: str | None = None,
    strict_device: bool = False,
) -> Recipe:
    """The recipe with --set, --model and --device/--strict-device applied (notices on stderr)."""
    overrides = [*(sets or []), *device_overrides(device, strict_device)]
    return load_with_overrides(recipe, overrides, model, console.REPORTER, check=check_capabilities)


@dataclass(frozen=True)
class Shared:
    """The options every command over runs shares, as given: --data-dir and --runs-dir (each home
    resolves against a recipe: runs/directory.py) and --json."""

    data_dir: str | None
    runs_dir: str | None
    json_out: bool

    def data(self, recipe: Recipe | None = None) -> Path:
        return data_home(self.data_dir, recipe)

    def runs(self, recipe: Recipe | None = None) -> Path:
        return runs_home(self.runs_dir, recipe)

    def run(self, ref: str) -> Run:
        """The run a --run option names (a path, a run id or 'latest')."""
        return resolve_run(ref, self.runs())


# The options every command over runs ends with, in this order: (annotation, default).
_SHARED_OPTIONS = {
    "data_dir": (DataDirOpt, None),
    "runs_dir": (RunsDirOpt, None),
    "json_out": (JsonOpt, False),
    "quiet": (QuietOpt, False),
    "debug": (DebugOpt, False),
}
Printed = tuple[Path, dict[str, Any]]


def stage_command(command: Callable[..., Printed | None]) -> Callable[..., None]:
    """A command over runs: `command(<its own options>, shared=Shared)` returns (path for stdout, the
    --json payload), or None to print nothing. This adds the options they all share (--data-dir,
    --runs-dir, --json, --quiet, --debug), maps failures to exit codes (cli_errors) and prints."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "shared"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in _SHARED_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_shared_options(**options: Any) -> None:
        data_dir, runs_dir, json_out, quiet, debug = (options.pop(name) for name in _SHARED_OPTIONS)
        with cli_errors(quiet, debug, json_out):
            printed = command(**options, shared=Shared(data_dir, runs_dir, json_out))
        if printed is not None:
            emit(printed[0], json_out, printed[1])

    with_shared_options.__signature__ = signature.replace(parameters=[*own, *shared])  # what Typer reads
    with_shared_options.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return with_shared_options


@contextmanager
def cli_errors(quiet: bool = False, debug: bool = False, json_out: bool | None = None) -> Iterator[None]:
    """Map failures to exit codes: 2 for bad input (one line), 1 for anything unexpected.

    With --json the failure is also one JSON object on stdout (`error`, `kind`, `exit_code`);
    `json_out=None` reads the command's own --json option. Libraries' own Python warnings
    (sklearn's UndefinedMetricWarning, numpy's RuntimeWarning) are dropped unless --debug.
    """
    console.set_quiet(quiet)
    debug = debug or bool(os.environ.get("QFACTORY_DEBUG"))
    as_json = _json_requested() if json_out is None else json_out
    failure = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default" if debug else "ignore")
            try:
                yield
            except (typer.Exit, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - the point is to catch everything unexpected
                if debug:
                    traceback.print_exc()
                failure = describe_failure(exc)
                # Drop the failed call's locals now, under the filter: an abandoned worker pool
                # (joblib's generator) warns when it is collected, after the error line otherwise.
                traceback.clear_frames(exc.__traceback__)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        fail("interrupted", "Interrupted", 130, as_json)
    if failure is not None:
        fail(*failure, as_json)


def describe_failure(exc: BaseException) -> tuple[str, str, int]:
    """(one-line message, kind, exit code) of any failure."""
    if isinstance(exc, QFactoryError):
        return str(exc), type(exc).__name__, exc.exit_code
    if isinstance(exc, OSError) and (os_error := _os_error(exc)) is not None:
        return os_error, StorageError.__name__, 2
    if not isinstance(exc, OSError) and (native := _native_storage_error(exc)) is not None:
        return native, StorageError.__name__, 2
    first = f"unexpected failure: {type(exc).__name__}: {exc}".splitlines()[0]
    return f"{first} (rerun with --debug for the traceback)", "UnexpectedError", 1


def fail(message: str, kind: str, exit_code: int, as_json: bool) -> None:
    """The one stderr line, the JSON object on stdout with --json, and the exit code."""
    message = clip_huge_values(message)
    console.err.print(f"error: {message}", markup=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps({"error": message, "kind": kind, "exit_code": exit_code}))
    raise typer.Exit(exit_code)


def _json_requested() -> bool:
    context = get_current_context(silent=True)
    return bool(context and context.params.get("json_out", context.params.get("as_json")))


# OS errors a user can fix: the path is unusable, or the disk cannot take the write.
_FIXES = {
    **STORAGE_FIXES,
    errno.ENOTDIR: "a part of the path is a file, not a folder; pass another path",
    errno.EISDIR: "it is a folder where a file is expected; pass a file path",
    errno.ENAMETOOLONG: "shorten the path",
    errno.ENOENT: "check that the path exists",
}


def _os_error(exc: OSError) -> str | None:
    """'<path>: <OS reason>; <fix>' for an OS error with a fix, else None (an unexpected failure)."""
    code = os_errno(exc)
    if code not in _FIXES:
        return None
    path = exc.filename if exc.filename is not None else "a path"
    reason = (exc.strerror if exc.errno is not None and exc.strerror else os.strerror(code)).lower()
    return f"{path}: {reason}; {_FIXES[code]}"


def _native_storage_error(exc: Exception) -> str | None:
    """A disk-full, read-only or permission failure that a native library (polars, deltalake, SQLite)
    raised as its own exception type outside every guarded write: bad input (exit 2), path unknown."""
    code = os_errno(exc)
    if code not in STORAGE_FIXES:
        return None
    reason = os.strerror(code).lower()
    return f"{reason} while writing ({type(exc).__name__}, which names no path); {STORAGE_FIXES[code]}"


class OneLineUsageErrors(typer.core.TyperGroup):
    """Usage mistakes (unknown option, missing value) are one `error: ...` line and exit 2, like every
    other bad input, instead of click's three lines (Usage / Try / Error); a JSON object with --json."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = sys.argv[1:] if args is None else list(args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:  # bare `qfactory features`: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            message = " ".join(exc.format_message().split()) + hint
            try:
                fail(message, "UsageError", 2, "--json" in argv)
            except typer.Exit as done:
                sys.exit(done.exit_code)
        except click_errors.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def emit(path: Path | str, as_json: bool, payload: dict[str, Any] | None = None) -> None:
    """stdout carries the result path, or one JSON object with --json."""
    if as_json:
        typer.echo(json.dumps({"path": str(path), **(payload or {})}, default=str, sort_keys=True))
    else:
        typer.echo(str(path))

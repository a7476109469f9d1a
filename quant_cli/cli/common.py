"""What every subcommand shares: options, error-to-exit-code mapping, stdout conventions."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from quant_cli.cli import console
from quant_cli.errors import QFactoryError

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout instead of the path.")]
RecipeOpt = Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML file.", show_default=False)]
OptionalRecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="Recipe TOML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set model.params.num_leaves=63 (repeatable).", show_default=False),
]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Data store home (else $QFACTORY_DATA_DIR, recipe, ./data).", show_default=False)]
RunsDirOpt = Annotated[str | None, typer.Option("--runs-dir", help="Runs home (else $QFACTORY_RUNS_DIR, recipe, ./runs).", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps (same as --set train.device=...).", show_default=False)]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name; same as --set model.name=NAME (drops model.params written for another model).", show_default=False)]
StrictDeviceOpt = Annotated[bool, typer.Option("--strict-device", help="Fail instead of falling back to CPU when the device is unavailable.")]


def device_overrides(device: str | None, strict: bool) -> list[str]:
    """--device/--strict-device as recipe overrides, so the run's recipe.toml records them."""
    return [*([f'train.device="{device}"'] if device else []), *(["train.strict_device=true"] if strict else [])]


RunOpt = Annotated[str, typer.Option("--run", help="Run directory, run id, or 'latest'.", show_default=False)]


@contextmanager
def cli_errors(quiet: bool = False, debug: bool = False) -> Iterator[None]:
    """Map failures to exit codes: 2 for bad input (one line), 1 for anything unexpected."""
    console.set_quiet(quiet)
    debug = debug or bool(os.environ.get("QFACTORY_DEBUG"))
    try:
        yield
    except typer.Exit:
        raise
    except QFactoryError as exc:
        if debug:
            traceback.print_exc()
        console.err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (PermissionError, NotADirectoryError) as exc:  # a path the user gave cannot be used
        if debug:
            traceback.print_exc()
        console.err.print(f"error: {_path_error(exc)}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.err.print("error: interrupted", markup=False)
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything unexpected
        if debug:
            traceback.print_exc()
        message = f"error: unexpected failure: {type(exc).__name__}: {exc}".splitlines()[0]
        console.err.print(f"{message} (rerun with --debug for the traceback)", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _path_error(exc: OSError) -> str:
    """'<path>: permission denied; ...' for an unusable file or folder path."""
    path = exc.filename if exc.filename is not None else "a path"
    reason = (exc.strerror or type(exc).__name__).lower()
    return f"{path}: {reason}; check the path and its permissions (--data-dir, --runs-dir, --source, --recipe), or pass another one"


def emit(path: Path | str, as_json: bool, payload: dict[str, Any] | None = None) -> None:
    """stdout carries the result path, or one JSON object with --json."""
    if as_json:
        typer.echo(json.dumps({"path": str(path), **(payload or {})}, default=str, sort_keys=True))
    else:
        typer.echo(str(path))

"""`qfactory doctor`: versions, torch build and devices, homes and free disk, kernel cache, chromium, Ray."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from quant_cli.cli.common import (
    DataDirOpt,
    DebugOpt,
    JsonOpt,
    RunsDirOpt,
    cli_errors,
    fail,
)
from quant_cli.runs.directory import resolve_home


def doctor(
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="Also check that this device can be used (cpu, cuda, cuda:N, mps).", show_default=False
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="Also check that this backend can be used (local or ray).", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
    runs_dir: RunsDirOpt = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What this machine offers qfactory, on one screen: versions, torch build (CUDA, cuDNN, GPUs,
    bf16), threads, data and runs homes with free disk, compiled-kernel cache, chromium, Ray.

    Exits 0 unless something asked for (--device, --backend, a home) cannot work: then 2.

    Example: qfactory doctor --device cuda --backend ray
    """
    with cli_errors(False, debug):
        from quant_cli import doctor as checks
        from quant_cli.backend import check_backend

        if backend is not None:
            check_backend(backend)
        data = resolve_home(data_dir, "QFACTORY_DATA_DIR", None, "data")
        runs = resolve_home(runs_dir, "QFACTORY_RUNS_DIR", None, "runs")
        report = checks.diagnose(data, runs, device, backend)
    if json_out:
        typer.echo(json.dumps(report))
    else:
        typer.echo("\n".join(checks.lines(report)))
    if report["problems"]:
        more = len(report["problems"]) - 1
        fail(report["problems"][0] + (f" (and {more} more above)" if more else ""), "DoctorProblem", 2, False)

"""`qfactory serve`: a bundle over HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from quant_cli.cli import console
from quant_cli.cli.bundle import TrustPickleOpt, TrustPluginsOpt
from quant_cli.cli.common import DebugOpt, OptionalRecipeOpt, QuietOpt, SetOpt, cli_errors
from quant_cli.recipe import load_with_overrides

TOKEN_ENV = "QFACTORY_SERVE_TOKEN"


def serve(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder or .tar.gz.", show_default=False)],
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to bind (default serve.host: 127.0.0.1, loopback only).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (default serve.port: 8000).", show_default=False, min=1, max=65535),
    ] = None,
    recipe: OptionalRecipeOpt = None,
    set_: SetOpt = None,
    trust_pickle: TrustPickleOpt = False,
    trust_plugins: TrustPluginsOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Serve a bundle over HTTP: /health, /ready, /metadata, POST /predict, /predict/features, /reload, /metrics, /docs.

    Set QFACTORY_SERVE_TOKEN to require `Authorization: Bearer <token>` on every endpoint but /health.

    Example: qfactory serve --bundle runs/latest/bundle --port 8000
    """
    # One request scores a few rows: fanning each out over every core (OpenMP in LightGBM/XGBoost)
    # only makes concurrent requests fight over the cores. Set before the model library loads;
    # an explicit OMP_NUM_THREADS wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # SIGTERM ends the process through Python (SystemExit), not the default handler's instant death:
    # uvicorn shuts down gracefully, then raises the signal again to this handler, and every
    # `finally` (a bundle's private model folder mid-load) runs. The exit status says SIGTERM.
    if threading.current_thread() is threading.main_thread():  # signals can only be set there
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from quant_cli.serve.app import Limits, create_app
    from quant_cli.serve.bundle import load
    from quant_cli.serve.listen import bound_socket, run

    with cli_errors(quiet, debug):
        cfg = load_with_overrides(recipe, set_ or [], None, console.REPORTER)["serve"]
        loaded = load(bundle, trust_pickle, trust_plugins)
        limits = Limits(max_rows=cfg["max_rows"], max_body_bytes=int(cfg["max_body_mb"] * 1024 * 1024))
        app = create_app(loaded, os.environ.get(TOKEN_ENV) or None, limits, trust_pickle, trust_plugins)
        bind, listen = host or cfg["host"], port or cfg["port"]
        sock = bound_socket(bind, listen)
        console.REPORTER.info(
            f"serve: bundle {loaded.bundle_id} on http://{bind}:{listen} (docs at /docs)"
            + ("; bearer token required" if os.environ.get(TOKEN_ENV) else "")
        )
    run(app, sock)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)

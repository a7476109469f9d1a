"""Run the server on a socket bound up front.

Binding before uvicorn starts turns a port in use or an unknown host into one line and exit 2
(uvicorn would log its own error and exit 3 after our 'serving on' line), and handing uvicorn that
same socket leaves no gap in which another process could take the port.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

from quant_cli.errors import RecipeError


def bound_socket(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        sock.bind((host, port))
        sock.listen(
            2048
        )  # listening now: no other socket can bind the port before uvicorn serves it (uvicorn's backlog)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from None
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> RecipeError:
    return RecipeError(
        f"serve: cannot listen on {host}:{port} ({exc.strerror or exc}); free the port or pick another "
        "with --port, and bind a local address with --host"
    )


def run(app: Any, sock: socket.socket) -> None:
    """uvicorn (one worker, httptools + uvloop when installed) on `sock`, until stopped."""
    import uvicorn

    # Everything loaded so far (the bundle, the libraries) lives as long as the server: moved out
    # of the collector's reach, so the full collections that per-request garbage triggers stay short.
    gc.freeze()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])

"""The viser server both viewers use (the live one during training, framework/live_viewer.py, and
`python -m framework view`, framework/mesh_view.py): started on the port asked for or refused.

viser itself moves to the next free port when the one asked for is taken, which would leave a user
looking at the wrong page (often an older run's viewer). Here a taken port is an error naming the key
that set it, and port 0 means "any free port" (viser has no such value: it would report port 0).
The scene follows the project's world: +z up (framework/cameras.py).
"""
from __future__ import annotations

import contextlib
import io
import logging
import socket
from typing import Any

from framework.errors import UserError


def port_is_free(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_server(host: str, port: int, port_key: str, error: type[UserError] = UserError) -> Any:
    """A running viser.ViserServer on host:port (port 0: a free one), +z up. A port in use, or an address
    that cannot be listened on, raises `error` naming `port_key` (the option that chose the port)."""
    try:
        import viser
    except ImportError as missing:
        raise error(f"the viewer needs viser: pip install viser (or pip install -e '.[dev]'); {missing}") from missing
    try:
        port = free_port(host) if port == 0 else port
    except OSError as bad_host:
        raise error(f"cannot listen on {host} ({bad_host.strerror}): choose another host, e.g. 127.0.0.1") from bad_host
    if not port_is_free(host, port):
        raise error(
            f"{port_key}={port} is in use on {host} (another viewer, or another program, listens there). "
            f"Choose another port ({port_key}={port + 1}), or {port_key}=0 for any free one."
        )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # no line per connection in the run's log
    with contextlib.redirect_stdout(io.StringIO()):  # viser's own banner: the caller prints the address
        server = viser.ViserServer(host=host, port=port, verbose=False)
    if server.get_port() != port:  # taken between the check and viser's bind: viser moved on silently
        server.stop()
        raise error(f"{port_key}={port} was taken while the viewer started; choose another port or {port_key}=0.")
    server.scene.set_up_direction("+z")
    return server


def url_of(server: Any) -> str:
    host = server.get_host()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.get_port()}"


def stop_server(server: Any) -> None:
    """Stop quietly (viser prints '(viser) Server stopped')."""
    with contextlib.redirect_stdout(io.StringIO()):
        server.stop()

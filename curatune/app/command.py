"""`curatune app RUN_DIR [RUN_DIR ...]`: start the Streamlit app on localhost and print its URL.

Streamlit is imported only in the child process, so `curatune --help` and every other
command stay fast.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from curatune.app.discovery import RUNS_ENV, discover_runs, looks_like_run
from curatune.errors import CuratuneError

MAIN_SCRIPT = Path(__file__).resolve().parent / "main.py"
DEFAULT_PORT = 8501
console = Console(stderr=True, soft_wrap=True)


def port_is_free(host: str, port: int) -> bool:
    """Can we listen on host:port? False when the port is taken; a host we cannot listen on
    at all (unknown name, not an address of this machine) is a CuratuneError, not "no free port"."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except socket.gaierror as exc:
            raise CuratuneError(f"--host {host}: not a known host name or address ({exc.strerror or exc})") from None
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise CuratuneError(f"--host {host}: cannot listen there ({exc.strerror or exc}); "
                                "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    return True


def pick_port(host: str, port: int | None) -> int:
    """The requested port (must be free), else the first free one from 8501 on."""
    if port is not None:
        if not 1 <= port <= 65535:
            raise CuratuneError(f"--port {port}: a port is a number from 1 to 65535")
        if not port_is_free(host, port):
            raise CuratuneError(f"port {port} on {host} is in use; pick another with --port")
        return port
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + 50):
        if port_is_free(host, candidate):
            return candidate
    raise CuratuneError(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + 49} on {host}; pass --port")


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        "--theme.base", "light", "--theme.primaryColor", "#2563eb",
    ]


def url_for(host: str, port: int) -> str:
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    return f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"


def register(app: typer.Typer) -> None:
    @app.command("app")
    def app_command(
        run_dirs: list[Path] = typer.Argument(
            ..., help="Run directories, or a folder holding several runs (each subfolder with a manifest.json)."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 127.0.0.1 keeps it local."),
        port: Optional[int] = typer.Option(None, "--port", help="Port (default: first free from 8501)."),
    ) -> None:
        """Browse runs in a local web app: curation, saturation, learning vs forgetting, samples."""
        missing = [str(p) for p in run_dirs if not p.exists()]
        if missing:
            raise CuratuneError(f"no such folder: {', '.join(missing)}")
        refs = discover_runs(run_dirs)
        for ref in refs:
            kind = "run" if looks_like_run(ref.path) else "[yellow]not a run (the app will say what is missing)[/yellow]"
            console.print(f"  {ref.label}: {ref.path}  {kind}", highlight=False)
        chosen = pick_port(host, port)
        env = dict(os.environ, **{RUNS_ENV: json.dumps([str(r.path) for r in refs])})
        url = url_for(host, chosen)
        typer.echo(f"curatune app: {url}  (Ctrl+C to stop)")
        sys.stdout.flush()
        process = subprocess.Popen(streamlit_command(host, chosen), env=env, stdout=subprocess.DEVNULL)
        code = supervise(process)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            raise CuratuneError(f"the app stopped with exit status {code} (its messages are above)")


def supervise(process: subprocess.Popen, grace_seconds: float = 15.0) -> int:
    """Wait for the Streamlit server; pass a SIGTERM on so it never outlives this command.

    Ctrl+C reaches the whole process group (the server gets it too); a SIGTERM only reaches
    this process, so it is forwarded. A server that does not stop within the grace period
    is killed.
    """
    stop_requested: list[float] = []

    def forward(signum, frame) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        stop_requested.append(time.monotonic())

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if stop_requested and time.monotonic() - stop_requested[0] > grace_seconds:
                    process.kill()
            except KeyboardInterrupt:
                try:
                    process.wait(timeout=grace_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
    finally:
        signal.signal(signal.SIGTERM, previous)

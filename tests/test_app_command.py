"""`curatune app`: argument checks, port choice, the Streamlit command line."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from curatune.app.command import MAIN_SCRIPT, pick_port, streamlit_command, url_for
from curatune.cli import app
from curatune.errors import CuratuneError


def test_help_lists_host_and_port():
    result = CliRunner().invoke(app, ["app", "--help"], env={"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output and "run_dirs" in result.output.lower()


def test_missing_folder_is_a_clear_error_without_traceback(tmp_path):
    missing = tmp_path / "nope"
    out = subprocess.run([sys.executable, "-m", "curatune.cli", "app", str(missing)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"no such folder: {missing}" in out.stderr.replace("\n", "") and "Traceback" not in out.stderr


def test_pick_port_skips_a_busy_port_and_refuses_a_busy_explicit_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CuratuneError, match=f"port {port}"):
            pick_port("127.0.0.1", port)
    assert pick_port("127.0.0.1", port) == port  # free again
    assert 8501 <= pick_port("127.0.0.1", None) < 8551


def test_streamlit_command_listens_where_asked():
    command = streamlit_command("127.0.0.1", 8600)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT)]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.headless") + 1] == "true"
    assert url_for("127.0.0.1", 8600) == "http://localhost:8600"
    assert url_for("0.0.0.0", 80) == "http://0.0.0.0:80"


def test_stopping_the_command_stops_the_server(tmp_path):
    """A SIGTERM to `curatune app` (what a test harness or service manager sends) reaches Streamlit."""
    import json
    import signal
    import time
    import urllib.request

    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"name": "x"}}))
    port = pick_port("127.0.0.1", None)
    process = subprocess.Popen([sys.executable, "-m", "curatune.cli", "app", str(tmp_path), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                break
        except OSError:
            assert process.poll() is None and time.time() < deadline, "the app did not start"
            time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    output = process.stdout.read()
    assert f"http://localhost:{port}" in output
    time.sleep(0.5)
    with pytest.raises(OSError):  # nothing answers any more: the server went with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)

"""`deeplesion serve`: start-up message, the network warning, clean errors, a real run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from deeplesion.cli import main  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_server(monkeypatch):
    """Replace uvicorn's run by a recorder: the command's checks and messages only."""
    import deeplesion.explorer.server as server

    calls = []
    monkeypatch.setattr(server, "run", lambda app, host, port: calls.append((host, port)))
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_non_loopback_host_warns(sample_root, no_server, host):
    from deeplesion.explorer.server import is_loopback

    assert not is_loopback(host)
    # only 0.0.0.0 can be bound on any machine; the others are checked by is_loopback
    if host != "0.0.0.0":
        return
    port = _free_port()
    args = ["serve", str(sample_root), "--host", host, "--port", str(port)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "reachable from the network" in result.output
    assert no_server == [(host, port)]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts(host):
    from deeplesion.explorer.server import is_loopback

    assert is_loopback(host)


def test_loopback_prints_url_and_no_warning(sample_root, no_server):
    port = _free_port()
    result = CliRunner().invoke(main, ["serve", str(sample_root), "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert "21 lesions" in result.output and f"http://127.0.0.1:{port}/" in result.output
    assert "reachable from the network" not in result.output


def test_clean_errors(tmp_path, sample_root, no_server):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["serve", str(empty), "--port", str(_free_port())])
    assert result.exit_code != 0 and "no DL_info.csv" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", str(sample_root), "--port", str(port)])
    assert result.exit_code != 0 and "choose another --port" in result.output
    assert no_server == []


def test_serve_answers_over_http(sample_root):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeplesion", "serve", str(sample_root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/lesions?type=liver", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        else:
            pytest.fail("server did not answer within 60 s")
        assert r.status_code == 200 and r.json()["total"] == 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out


def test_store_option(tmp_path, sample_root, no_server):
    from deeplesion.convert.store import build_store

    out = tmp_path / "store"
    build_store(sample_root, out)
    port = _free_port()
    result = CliRunner().invoke(
        main, ["serve", str(sample_root), "--store", str(out), "--port", str(port)]
    )
    assert result.exit_code == 0, result.output
    assert no_server == [("127.0.0.1", port)]
    bad = CliRunner().invoke(
        main, ["serve", str(sample_root), "--store", str(tmp_path), "--port", str(port)]
    )
    assert bad.exit_code == 1 and "Traceback" not in bad.output

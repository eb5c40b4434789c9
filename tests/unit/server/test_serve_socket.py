"""`pmcp serve` as systemd runs it (--runtime systemd): the listening socket passed as fd 3 (LISTEN_FDS),
TLS terminated by the server, READY=1 on NOTIFY_SOCKET, and the hand-over on SIGUSR1 -- the server stops
accepting (the socket stays open: a connection waits in its backlog for the next server) and exits by
itself once idle. A real process, a real socket; no systemd needed."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest

from pmcp import authtokens
from pmcp.server.config import ConfigError
from pmcp.server.serve import listen_fd, tls_options
from pmcp.sim.tls import make_certs

from .test_serve_cli import _env


def test_listen_fd_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert listen_fd() is None  # meant for another process (sd_listen_fds(3) checks the same)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    assert listen_fd() == 3
    monkeypatch.setenv("LISTEN_FDS", "0")
    assert listen_fd() is None


def test_tls_files_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMCP_TLS_CERT_FILE", "/x/cert.pem")
    monkeypatch.delenv("PMCP_TLS_KEY_FILE", raising=False)
    with pytest.raises(ConfigError, match="go together"):
        tls_options()


def test_socket_activated_tls_server_hands_over(sim, tmp_path) -> None:
    tls = make_certs(tmp_path / "tls", ["localhost", "127.0.0.1"])
    tokens = tmp_path / "tokens"
    authtokens.save(tokens, {"default": authtokens.new_token()})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    env = _env(sim, tmp_path) | {
        "LISTEN_FDS": "1",
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "PMCP_AUTH_TOKEN_FILE": str(tokens),
        "PMCP_TLS_CERT_FILE": str(tls.cert_file),
        "PMCP_TLS_KEY_FILE": str(tls.key_file),
    }
    # as systemd: the socket is fd 3 and LISTEN_PID names the server's own pid (exec keeps it)
    script = (
        f"import os, sys; os.dup2({listener.fileno()}, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable, '-m', 'pmcp', 'serve'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env, pass_fds=(listener.fileno(),), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert notify.recv(100) == b"READY=1"
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        with urllib.request.urlopen(f"https://localhost:{port}/health", context=ctx, timeout=15) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGUSR1)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(30) == 0  # idle: it exits by itself, nothing had to stop it
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the socket is still open: the next server would accept this connection
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
        listener.close()
        notify.close()
    assert "Traceback" not in out, out

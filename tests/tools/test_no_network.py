"""A run touches no network: no ephemeris or leap-second download, no model hub, nothing."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

GUARD = textwrap.dedent("""
    import socket, sys
    attempts = []
    LOCAL = ("127.0.0.1", "::1", "localhost")

    def _is_local(address):
        return not isinstance(address, tuple) or address[0] in LOCAL

    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        if not _is_local(address):
            attempts.append(repr(address))
            raise ConnectionRefusedError(f"network disabled by the test: {address!r}")
        return _connect(self, address)

    def connect_ex(self, address):
        if not _is_local(address):
            attempts.append(repr(address))
            return 111
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL and host is not None:
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"name lookup disabled by the test: {host}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo

    from tools.cli import main
    rc = main(sys.argv[1:])
    print("NETWORK_ATTEMPTS", attempts)
    sys.exit(rc if rc else (3 if attempts else 0))
""")


def run_args(out_dir):
    return ["sim", "--duration-s", "180", "--compute", "real", "--seed", "3", "--out", str(out_dir), "--quiet"]


def test_run_makes_no_network_connection(tmp_path):
    result = subprocess.run([sys.executable, "-c", GUARD, *run_args(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert "NETWORK_ATTEMPTS []" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sim_seconds"] == 180 and summary["weights_sha256"]


def _netns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="unshare -rn (a network namespace) is not permitted here")
def test_run_succeeds_in_a_namespace_without_network(tmp_path):
    """The stronger check: in a fresh network namespace there is no route anywhere at all."""
    result = subprocess.run(["unshare", "-rn", sys.executable, "-m", "tools.cli", *run_args(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "summary.json").exists()

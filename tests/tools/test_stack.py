"""`sunlit run`: the served stack answers commands over CURVE, streams telemetry, paces itself,
and stops cleanly on SIGTERM with its summary written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.ground_client import GroundClient


@pytest.fixture
def served(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "run", "--port", "0", "--speed", "20", "--out", str(tmp_path / "run"),
         "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "stack did not come up"
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    yield proc, info, tmp_path / "run"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_served_stack_commands_telemetry_and_clean_stop(served):
    proc, info, out = served
    keys = info["keys_dir"]
    assert info["secure"] and info["pid"] == proc.pid
    with GroundClient(info["command_endpoint"], os.path.join(keys, "operator.key_secret"),
                      os.path.join(keys, "server.key")) as client:
        assert client.role == "operator" and client.dictionary_matches()
        client.subscribe(("tlm.modes", "evt.modes"))
        result = client.send_command("modes.SET_MODE", {"mode": "IDLE"})
        assert (result.status, result.reason) == ("OK", "")
        assert client.send_command("gpu.SET_POWER_CAP", {"cap_w": 10}).status == "VALIDATION_ERROR"
    from tools.ask import ask_stack

    answer = ask_stack("How much battery do you have?", info["command_endpoint"],
                       Path(keys) / "operator.key_secret", Path(keys) / "server.key")
    assert answer["answer"].startswith("My battery is at ") and answer["source"] == "template"
    with GroundClient(info["command_endpoint"], os.path.join(keys, "operator.key_secret"),
                      os.path.join(keys, "server.key")) as client:
        client.subscribe(("tlm.modes", "evt.modes"))
        modes, samples = [], []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(modes) < 30:
            for message in client.receive(200):
                if message.topic == "tlm.modes":
                    modes.append(message.body["mode"])
                    samples.append((time.monotonic(), message.t_ns))
        assert modes[-1] == "IDLE"
        # Paced, not free-running: mission time never gets ahead of 20x the wall time that passed
        # (a free-running stack does ~3000x). The first samples may arrive in a burst (subscription
        # start), so measure from the fifth, with two ticks of slack for delivery jitter.
        (wall0, t0), (wall1, t1) = samples[5], samples[-1]
        assert (t1 - t0) / 1e9 <= 20 * (wall1 - wall0) + 2.0
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "commands   " + info["command_endpoint"] in stdout and "stopped after" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ground_link"]["forwarded"] == 3 and summary["commands"]["ok"] >= 2
    assert summary["dod_violations"] == 0


def test_bad_options_are_clear_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--speed", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "speed must be > 0" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--scenario", "nowhere", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nowhere" in proc.stderr


_STARTED: list = []


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """A failing test must not leave a stack or a ground archiver running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(args, ready=None):
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    if ready is not None:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.05)
    return proc


def _archived(archive):
    import sqlite3

    if not archive.exists():
        return 0
    with sqlite3.connect(archive) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_store_and_forward_loses_nothing_across_kills_of_both_sides(tmp_path):
    """A stack flies two ground passes (two lives: stopped and restarted on the same store) while
    `sunlit ground` archives the downlink and is SIGKILLed mid-way: every frame the stack ever
    queued ends either archived exactly once on the ground or still queued on board."""
    import sqlite3

    keys, out, archive = tmp_path / "keys", tmp_path / "run", tmp_path / "ground.db"
    assert subprocess.run([sys.executable, "-m", "tools.cli", "keys", "init", str(keys)],
                          capture_output=True, timeout=60).returncode == 0
    for life in range(2):
        ready = tmp_path / f"ready{life}.json"
        # starcloud1's first pass (Santiago) begins ~1880 s after the epoch and lasts ~5 min.
        stack = _start(["run", "--port", "0", "--speed", "250", "--duration-s", "2400", "--keys", str(keys),
                        "--out", str(out), "--ready-file", str(ready)], ready)
        endpoint = json.loads(ready.read_text())["downlink_endpoint"]
        ground_args = ["ground", endpoint, "--archive", str(archive), "--keys", str(keys)]
        ground = _start(ground_args)
        if life == 0:
            # Kill the ground side once it has archived something, then bring it back.
            deadline = time.monotonic() + 30
            while _archived(archive) == 0 and time.monotonic() < deadline and stack.poll() is None:
                time.sleep(0.02)
            ground.kill()
            ground.wait()
            ground = _start(ground_args)
        assert stack.wait(timeout=60) == 0, stack.stderr.read()
        ground.send_signal(signal.SIGINT)
        ground.communicate(timeout=30)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["downlink"]["passes"] >= 1
    with sqlite3.connect(out / "downlink.db") as db:
        queued = {i for (i,) in db.execute("SELECT id FROM queue")}
        store_id = db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
    with sqlite3.connect(archive) as db:
        archived = [i for (i,) in db.execute("SELECT frame_id FROM frames WHERE store_id = ?", (store_id,))]
        rejected = db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
    assert archived and rejected == 0
    assert len(archived) == len(set(archived))  # exactly once
    issued = set(range(1, max(queued | set(archived)) + 1))
    assert issued - queued - set(archived) == set()  # nothing acknowledged (deleted on board) is lost
    assert queued & set(archived) <= queued  # re-sent frames may be both archived and not yet acked


def test_an_observer_cannot_acknowledge_the_downlink(tmp_path):
    """Acks delete data on board, so the downlink hears only operators: an observer's archive
    gets connected but is never sent a batch, and its hellos are counted as unauthorized."""
    keys = tmp_path / "keys"
    assert subprocess.run([sys.executable, "-m", "tools.cli", "keys", "init", str(keys)],
                          capture_output=True, timeout=60).returncode == 0
    ready = tmp_path / "ready.json"
    stack = _start(["run", "--port", "0", "--speed", "250", "--duration-s", "2400", "--keys", str(keys),
                    "--out", str(tmp_path / "run"), "--ready-file", str(ready)], ready)
    endpoint = json.loads(ready.read_text())["downlink_endpoint"]
    ground = _start(["ground", endpoint, "--archive", str(tmp_path / "ground.db"), "--keys", str(keys),
                     "--client", "observer"])
    assert stack.wait(timeout=60) == 0
    ground.send_signal(signal.SIGINT)
    ground.communicate(timeout=30)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["downlink"]["passes"] >= 1 and summary["downlink"]["acked_frames"] == 0
    assert _archived(tmp_path / "ground.db") == 0

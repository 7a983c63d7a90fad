"""Key folders: layout, roles in the certificates, clear errors naming the file."""

from __future__ import annotations

import argparse
import stat

import pytest
import zmq

from flight.ground_link import ClientInfo
from tools.keys import (
    KeyFileError,
    add_client,
    add_parser,
    init_keys,
    load_allowed_clients,
    load_client_keys,
    load_public_key,
    load_server_keys,
)


def test_init_makes_the_documented_layout(tmp_path):
    folder = tmp_path / "keys"
    made = init_keys(folder, operators=("alice", "bob"), observers=("eve",))
    assert made == {name: folder / f"{name}.key_secret" for name in ("alice", "bob", "eve")}
    assert sorted(p.name for p in folder.iterdir()) == [
        "alice.key_secret", "bob.key_secret", "clients", "eve.key_secret", "server.key", "server.key_secret"]
    assert sorted(p.name for p in (folder / "clients").iterdir()) == ["alice.key", "bob.key", "eve.key"]
    for secret in (*made.values(), folder / "server.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_keys_are_curve_pairs_and_roles_come_from_the_certificates(tmp_path):
    made = init_keys(tmp_path, operators=("alice",), observers=("eve",))
    server = load_server_keys(tmp_path)
    assert zmq.curve_public(server.secret) == server.public  # an independent check of the pair
    assert load_public_key(tmp_path / "server.key") == server.public
    allowed = load_allowed_clients(tmp_path)
    alice, eve = load_client_keys(made["alice"]), load_client_keys(made["eve"])
    assert allowed == {alice.public: ClientInfo("alice", "operator"), eve.public: ClientInfo("eve", "observer")}
    assert zmq.curve_public(alice.secret) == alice.public


def test_add_client(tmp_path):
    init_keys(tmp_path, operators=(), observers=())
    path = add_client(tmp_path, "ops-2", "operator")
    assert load_allowed_clients(tmp_path)[load_client_keys(path).public] == ClientInfo("ops-2", "operator")
    with pytest.raises(FileExistsError, match="ops-2"):
        add_client(tmp_path, "ops-2", "observer")
    with pytest.raises(ValueError, match="role"):
        add_client(tmp_path, "x", "admin")
    for bad in ("", "has space", "../up", "local", "server"):
        with pytest.raises(ValueError):
            add_client(tmp_path, bad, "observer")
    with pytest.raises(KeyFileError, match="server.key"):
        add_client(tmp_path / "empty", "x", "observer")


def test_init_never_overwrites(tmp_path):
    init_keys(tmp_path)
    with pytest.raises(FileExistsError):
        init_keys(tmp_path)


def test_errors_name_the_file(tmp_path):
    made = init_keys(tmp_path)
    with pytest.raises(KeyFileError, match="nothere.key_secret"):
        load_client_keys(tmp_path / "nothere.key_secret")
    with pytest.raises(KeyFileError, match="server.key.*no secret"):
        load_client_keys(tmp_path / "server.key")  # a public cert where a secret one is needed
    cert = tmp_path / "clients" / "observer.key"
    cert.write_text(cert.read_text().replace('role = "observer"', 'role = "admin"'))
    with pytest.raises(KeyFileError, match=r"observer\.key.*role"):
        load_allowed_clients(tmp_path)
    cert.write_text("garbage\n")
    with pytest.raises(KeyFileError, match=r"observer\.key"):
        load_allowed_clients(tmp_path)
    secret = made["operator"]
    text = secret.read_text()
    secret.write_text(text.replace('secret-key = "', 'secret-key = "x', 1))  # a 41-character key
    with pytest.raises(KeyFileError, match="operator.key_secret"):
        load_client_keys(secret)
    assert isinstance(KeyFileError("x"), KeyError) and str(KeyFileError("a: b")) == "a: b"


def test_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="sunlit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    folder = tmp_path / "k"
    args = parser.parse_args(["keys", "init", str(folder), "--operator", "ops", "--observer", "a", "--observer", "b"])
    assert args.func(args) == 0
    args = parser.parse_args(["keys", "add", str(folder), "c", "--role", "observer"])
    assert args.func(args) == 0
    assert sorted(info.name for info in load_allowed_clients(folder).values()) == ["a", "b", "c", "ops"]
    args = parser.parse_args(["keys", "add", str(folder), "c", "--role", "observer"])
    assert args.func(args) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "add", str(folder), "d", "--role", "admin"])

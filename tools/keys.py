"""CURVE key management for the ground link (``sunlit keys``).

A key folder, in ZeroMQ's certificate format (ZPL text files, as ``zmq.auth`` writes them)::

    server.key             the satellite's public key: every client needs it
    server.key_secret      the satellite's secret key: stays with the flight stack
    clients/<name>.key     public certificate of each allowed client, metadata role = operator|observer
    <name>.key_secret      each client's own secret certificate: give it to that client only

The flight stack reads ``server.key_secret`` and ``clients/``; a client needs its
``<name>.key_secret`` and ``server.key``. Removing ``clients/<name>.key`` revokes a client (at the
next start of the stack). Secret files are written with mode 0600.

Every problem with a file (missing, corrupt, a bad role) raises KeyFileError naming the file.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from flight.ground_link import LOCAL_CLIENT, ROLES, ClientInfo, CurveKeyPair

__all__ = [
    "KeyFileError",
    "add_client",
    "add_parser",
    "cmd_keys",
    "init_keys",
    "load_allowed_clients",
    "load_client_keys",
    "load_public_key",
    "load_server_keys",
    "read_metadata",
]

SERVER = "server"
CLIENTS_DIR = "clients"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RESERVED_NAMES = {SERVER, LOCAL_CLIENT}


class KeyFileError(KeyError, ValueError):
    """A key file is missing, corrupt or wrong; the text names the file."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- writing


def _check_name(name: str) -> str:
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        raise ValueError(f"client name {name!r}: 1-64 characters of letters, digits, '_', '.', '-' "
                         f"(starting with a letter or digit)")
    if name in _RESERVED_NAMES:
        raise ValueError(f"client name {name!r} is reserved")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def _write_public_cert(path: Path, public_key: bytes, metadata: dict[str, str]) -> None:
    # zmq.auth.create_certificates puts metadata only in the secret file; the server reads the
    # role from the public one, so it is rewritten here in the same format, with metadata.
    lines = ["#   ZeroMQ CURVE Public Certificate (sunlit ground link)",
             "#   Exchange securely; it names this client and its role.", "", "metadata"]
    lines += [f"    {key} = \"{value}\"" for key, value in metadata.items()]
    lines += ["curve", f"    public-key = \"{public_key.decode('ascii')}\"", ""]
    path.write_text("\n".join(lines))


def _create(folder: Path, name: str, metadata: dict[str, str]) -> tuple[bytes, Path, Path]:
    """Make a key pair in a scratch folder inside ``folder`` (renamed into place by the caller, so
    a half-written pair never appears); returns (public key, secret cert path, scratch folder)."""
    scratch = Path(tempfile.mkdtemp(prefix=".new-key-", dir=folder))
    try:
        public_path, secret_path = zmq.auth.create_certificates(scratch, name, metadata=metadata)
        os.chmod(secret_path, 0o600)
        public_key, _ = zmq.auth.load_certificate(public_path)
        return public_key, Path(secret_path), scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def init_keys(folder: str | os.PathLike, operators: tuple[str, ...] = ("operator",),
              observers: tuple[str, ...] = ("observer",)) -> dict[str, Path]:
    """Create a key folder: the server's pair and one pair per client. Refuses to overwrite.

    Returns each client's secret certificate path by name (hand each to its client with
    ``server.key``).
    """
    folder = Path(folder)
    if isinstance(operators, str) or isinstance(observers, str):
        raise TypeError("operators and observers are sequences of names, not a single str")
    names = [*operators, *observers]
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        raise ValueError(f"client names must be distinct, got {names}")
    if (folder / f"{SERVER}.key").exists() or (folder / f"{SERVER}.key_secret").exists():
        raise FileExistsError(f"{folder}: already holds server keys; remove them first or use another folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CLIENTS_DIR).mkdir(exist_ok=True)
    _, _, scratch = _create(folder, SERVER, {"role": "server"})
    try:
        os.replace(scratch / f"{SERVER}.key", folder / f"{SERVER}.key")
        os.replace(scratch / f"{SERVER}.key_secret", folder / f"{SERVER}.key_secret")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = {}
    for role, group in (("operator", operators), ("observer", observers)):
        for name in group:
            out[name] = add_client(folder, name, role)
    return out


def add_client(folder: str | os.PathLike, name: str, role: str) -> Path:
    """Add an allowed client to ``folder``; returns its secret certificate path."""
    folder = Path(folder)
    _check_name(name)
    _check_role(role)
    if not (folder / f"{SERVER}.key").exists():
        raise KeyFileError(f"{folder / (SERVER + '.key')}: no server key in {folder} (run sunlit keys init first)")
    clients = folder / CLIENTS_DIR
    clients.mkdir(exist_ok=True)
    public_dest = clients / f"{name}.key"
    secret_dest = folder / f"{name}.key_secret"
    for path in (public_dest, secret_dest):
        if path.exists():
            raise FileExistsError(f"{path}: client {name!r} already exists")
    metadata = {"name": name, "role": role}
    public_key, secret_path, scratch = _create(folder, name, metadata)
    try:
        staged = scratch / "public.key"
        _write_public_cert(staged, public_key, metadata)
        os.replace(secret_path, secret_dest)
        os.replace(staged, public_dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return secret_dest


# --------------------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata`` section of a ZPL certificate (quotes stripped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: unreadable key file ({type(exc).__name__}: {exc})") from None
    metadata: dict[str, str] = {}
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            section = stripped
            continue
        if section == "metadata":
            key, sep, value = stripped.partition("=")
            if not sep:
                raise KeyFileError(f"{path}: metadata line {stripped[:40]!r} is not 'key = value'")
            metadata[key.strip()] = value.strip().strip("\"'")
    return metadata


def _load_cert(path: Path, *, need_secret: bool) -> CurveKeyPair:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise KeyFileError(f"{path}: no such key file") from None
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a CURVE certificate ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file may fail in any way
        raise KeyFileError(f"{path}: unreadable key file ({type(exc).__name__}: {exc})") from None
    for label, key in (("public", public), ("secret", secret)):
        if key is None:
            continue
        try:
            raw = z85.decode(key)
        except Exception:  # noqa: BLE001
            raw = b""
        if len(key) != 40 or len(raw) != 32:
            raise KeyFileError(f"{path}: {label} key is not a 40-character z85 CURVE key")
    if need_secret and secret is None:
        raise KeyFileError(f"{path}: holds no secret key (a client needs its <name>.key_secret, the server "
                           f"its server.key_secret)")
    if secret is not None and zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: the public key does not belong to the secret key")
    return CurveKeyPair(public, secret)


def load_public_key(path: str | os.PathLike) -> bytes:
    """The z85 public key in a certificate file (``server.key`` for a client)."""
    return _load_cert(Path(path), need_secret=False).public


def load_server_keys(folder: str | os.PathLike) -> CurveKeyPair:
    """The server's key pair from ``folder/server.key_secret``."""
    return _load_cert(Path(folder) / f"{SERVER}.key_secret", need_secret=True)


def load_client_keys(secret_path: str | os.PathLike) -> CurveKeyPair:
    """A client's own key pair from its ``<name>.key_secret``."""
    return _load_cert(Path(secret_path), need_secret=True)


def load_allowed_clients(folder: str | os.PathLike) -> dict[bytes, ClientInfo]:
    """Every ``clients/*.key``: z85 public key -> ClientInfo(name, role). The name is the file stem."""
    clients = Path(folder) / CLIENTS_DIR
    if not clients.is_dir():
        raise KeyFileError(f"{clients}: no clients folder (run sunlit keys init first)")
    allowed: dict[bytes, ClientInfo] = {}
    origin: dict[bytes, Path] = {}
    for path in sorted(clients.glob("*.key")):
        name = path.stem
        if not _NAME_RE.fullmatch(name) or name in _RESERVED_NAMES:
            raise KeyFileError(f"{path}: {name!r} is not a valid client name")
        public = _load_cert(path, need_secret=False).public
        role = read_metadata(path).get("role")
        if role not in ROLES:
            raise KeyFileError(f"{path}: metadata role must be one of {', '.join(ROLES)}, got {role!r}")
        if public in allowed:
            raise KeyFileError(f"{path}: same public key as {origin[public]}")
        allowed[public] = ClientInfo(name, role)
        origin[public] = path
    return allowed


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``keys init DIR`` and ``keys add DIR NAME --role R`` to a ``sunlit`` subparser set."""
    keys = subparsers.add_parser(
        "keys", help="make CURVE key pairs for the ground link",
        description="Key folders for the ground link: server.key (give it to every client), server.key_secret "
                    "(stays with the stack), clients/<name>.key (allowed clients and their roles) and "
                    "<name>.key_secret (give each to its client only).")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    init = actions.add_parser("init", help="create a key folder: the server's pair and the clients' pairs")
    init.add_argument("dir", type=Path, help="key folder (created if missing; never overwritten)")
    init.add_argument("--operator", action="append", default=None, metavar="NAME",
                      help="an operator client (repeatable; default: one named 'operator')")
    init.add_argument("--observer", action="append", default=None, metavar="NAME",
                      help="an observer client (repeatable; default: one named 'observer')")
    add = actions.add_parser("add", help="add an allowed client to a key folder")
    add.add_argument("dir", type=Path, help="key folder made by 'sunlit keys init'")
    add.add_argument("name", help="client name (letters, digits, '_', '.', '-')")
    add.add_argument("--role", choices=ROLES, required=True, help="observer: telemetry only; operator: may command")
    keys.set_defaults(func=cmd_keys)
    return keys


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "init":
            operators = tuple(args.operator) if args.operator is not None else ("operator",)
            observers = tuple(args.observer) if args.observer is not None else ("observer",)
            made = init_keys(args.dir, operators, observers)
            print(f"server keys: {args.dir / 'server.key'} (public) and {args.dir / 'server.key_secret'} (secret)")
            for name, path in made.items():
                print(f"client {name}: {path}")
        else:
            path = add_client(args.dir, args.name, args.role)
            print(f"client {args.name} ({args.role}): {path}")
    except (ValueError, OSError) as exc:  # KeyFileError is a ValueError
        print(f"sunlit keys: {exc}", file=sys.stderr)
        return 2
    return 0

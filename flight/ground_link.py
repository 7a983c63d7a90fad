"""The ground link: the satellite's command and telemetry endpoint (the radio or the umbilical).

Two ZeroMQ sockets, both CURVE servers (encrypted, each client authenticated by its public key):

- commands: a ROUTER; each ground client is a DEALER and speaks msgpack maps, one per frame:
  ``{"type": "hello"}`` -> ``{"type": "welcome", "client", "role", "telemetry_endpoint",
  "dictionary_sha256", "mission_utc", "last_seq", "secure", "protocol"}``;
  ``{"type": "command", "id", "seq", "command": "component.OPCODE", "args": {...}}`` -> exactly one
  ``{"type": "response", "id", "command", "status", "reason"}`` with the dispatcher's statuses.
  Anything malformed -> ``{"type": "error", "reason"}``, or a FORMAT_ERROR response when an id
  could be read. Nothing a client sends can raise out of ``service``.
- telemetry: a PUB forwarding the bus frames the ground should see (``tlm.``, ``evt.``,
  ``rsp.dispatch``) as the exact bus frames; a frame starts with its topic, so a client's SUB
  prefix filter works as on the bus.

Security (who may do what):
- Only keys in the allowed list complete the handshake (ZAP, in pyzmq's authenticator thread);
  an unknown key gets nothing, not even telemetry, and each refusal is counted and an event.
  The authenticator sets each connection's User-Id to the client's name, so every received
  frame says who sent it: the link never trusts a name the client writes itself.
- Roles: an observer receives telemetry and may say hello, never command; an operator may
  command. A hazardous command (dictionary ``hazardous``) and ``dispatcher.ARM`` need an
  operator, and the dispatcher then requires arming.
- Anti-replay: ``seq`` must be strictly above the last seq accepted from that client name; the
  high-water marks are persisted (atomic JSON with a checksum) before a command is forwarded,
  so a captured command replayed later, even after a restart, is refused. Ground clients use
  ``max(last + 1, time.time_ns())`` so they need no state of their own. A seq is used up once it
  passes the check, even if the command is then refused BUSY. Two programs sharing one key share
  one counter: if their sends cross in flight, the older seq is refused (send again).

Insecure mode (``GroundLinkConfig(insecure=True)``, plain tcp/ipc, for local benches only):
there is no encryption and no authentication: every client is the operator "local", and the
seq check only catches accidental duplicates (anyone can write a fresh seq). Bind it to
127.0.0.1 or to an ipc path in a private folder, never to a reachable interface. An
``INSECURE_LINK`` event says so at start.

Time: the link runs between scheduler ticks and never reads a clock of its own. A command the
stack has not answered ``response_timeout_ticks`` ticks after it was forwarded (the tick count
the runner passes to ``service``) is answered EXECUTION_ERROR; the default leaves the
dispatcher's own timeout (10 s of mission time) room to answer first.

The link answers NOOP and RESET_COUNTERS (``ground_link.*`` through the dispatcher) like every
component: it drains its commands in ``service``, between ticks, so the dispatcher relays the
answer on the next tick. A plain SIL run has no link, and such a command times out there.

Threads: the link and its sockets belong to the runner's thread. Only the authenticator runs in
its own thread; it hands refusals over through a thread-safe queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from flight.bus import Bus
from flight.clock import Clock, iso_utc
from flight.command_server import CommandServer
from flight.command_status import TERMINAL_STATUSES
from flight.dictionary import Dictionary, default_dictionary
from flight.events import EventReporter

__all__ = [
    "COMPONENT",
    "LOCAL_CLIENT",
    "PROTOCOL_VERSION",
    "ROLES",
    "ZAP_DOMAIN",
    "ClientInfo",
    "CommandRequest",
    "CurveKeyPair",
    "DecodeFailure",
    "GroundLink",
    "GroundLinkConfig",
    "Hello",
    "LinkSockets",
    "Refusal",
    "ReplayGuard",
    "ReplayStoreError",
    "decode_request",
    "dictionary_sha256",
    "insecure_sockets",
    "refusal_reason",
    "secure_sockets",
]

COMPONENT = "ground_link"
ROLES = ("operator", "observer")
LOCAL_CLIENT = "local"  # the one client of an insecure link
ZAP_DOMAIN = "sunlit"
PROTOCOL_VERSION = 1
# Commands the dispatcher treats as hazardous by nature besides the dictionary's flagged ones.
ALWAYS_OPERATOR = frozenset({"dispatcher.ARM"})

# Request limits: generous for any real command, small enough that junk costs little.
MAX_FRAME_BYTES = 64 * 1024
_SOCKET_MAX_MSG_BYTES = 4 * MAX_FRAME_BYTES  # past this the socket drops the connection unread
ID_MAX = 2**63 - 1
SEQ_MAX = 2**63 - 1
MAX_COMMAND_CHARS = 128
MAX_ARGS = 32
MAX_ARG_NAME_CHARS = 64
MAX_STRING_ARG_CHARS = 4096
_COMMAND_RE = re.compile(r"[a-z][a-z0-9_]*\.[A-Z][A-Z0-9_]*")
_COMMAND_KEYS = frozenset({"type", "id", "seq", "command", "args"})
# Handshake failures the link counts from socket monitors (unknown keys come from ZAP instead).
_HANDSHAKE_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_SEEN_CONNECTIONS_MAX = 65_536  # bounds the memory a reconnecting client can cost


# --------------------------------------------------------------------------- clients and keys


@dataclass(frozen=True)
class ClientInfo:
    """An allowed client: its name (the ZAP User-Id) and its role."""

    name: str
    role: str

    def __post_init__(self) -> None:
        if type(self.name) is not str or not self.name:
            raise ValueError(f"client name must be a non-empty str, got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"client {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")


class CurveKeyPair(NamedTuple):
    """A CURVE key pair, both z85-encoded (40 bytes each); ``secret`` is None for a public cert."""

    public: bytes
    secret: bytes | None


class Refusal(NamedTuple):
    """A connection the authenticator refused (made in its thread, read in the runner's)."""

    public_key: bytes  # z85
    reason: str


def dictionary_sha256(dictionary: Dictionary) -> str:
    """SHA-256 of the dictionary's canonical JSON: ground and flight agree iff they match."""
    text = json.dumps(dictionary.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Hello:
    pass


@dataclass(frozen=True)
class CommandRequest:
    id: int
    seq: int
    command: str
    args: dict[str, Any]


@dataclass(frozen=True)
class DecodeFailure:
    """A request that cannot be served: the reason, and its id when one could be read."""

    reason: str
    id: int | None = None


class _Reject(Exception):
    def __init__(self, reason: str, request_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr must not be what fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _reject_ext(code: int, data: bytes) -> Any:
    raise _Reject(f"msgpack extension type {code} is not allowed")


def decode_request(payload: object, max_frame_bytes: int = MAX_FRAME_BYTES) -> Hello | CommandRequest | DecodeFailure:
    """Decode one client frame. Never raises: anything unusable becomes a DecodeFailure."""
    try:
        return _decode(payload, max_frame_bytes)
    except _Reject as rejected:
        return DecodeFailure(rejected.reason, rejected.request_id)
    except Exception as exc:  # noqa: BLE001 - belt and braces: the decoder never raises
        return DecodeFailure(f"undecodable request ({type(exc).__name__})")


def _decode(payload: object, max_frame_bytes: int) -> Hello | CommandRequest:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise _Reject(f"a request must be bytes, got {_type_name(payload)}")
    size = len(payload)
    if size > max_frame_bytes:
        raise _Reject(f"request of {size} bytes is larger than {max_frame_bytes}")
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_reject_ext, timestamp=0)
    except _Reject:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise _Reject(f"request is not valid msgpack ({type(exc).__name__})") from None
    if type(body) is not dict:
        raise _Reject(f"a request must be a msgpack map, got {_type_name(body)}")
    for key in body:
        if type(key) is not str:
            raise _Reject(f"request keys must be strings, got {_short(key)}")
    kind = body.get("type")
    if kind == "hello":
        extra = sorted(set(body) - {"type"})
        if extra:
            raise _Reject(f"hello takes no fields besides 'type' (got {_short(extra[0])})")
        return Hello()
    if kind == "command":
        return _decode_command(body)
    if type(kind) is not str:
        raise _Reject(f"request 'type' must be a string ('hello' or 'command'), got {_short(kind)}")
    raise _Reject(f"unknown request type {_short(kind)} (expected 'hello' or 'command')")


def _decode_command(body: dict[str, Any]) -> CommandRequest:
    request_id = body.get("id")
    if type(request_id) is not int or not 0 <= request_id <= ID_MAX:
        raise _Reject(f"command 'id' must be an int in [0, 2**63), got {_short(request_id)}")
    unknown = sorted(set(body) - _COMMAND_KEYS)
    if unknown:
        raise _Reject(f"unknown command field {_short(unknown[0])} (fields: id, seq, command, args)", request_id)
    seq = body.get("seq")
    if type(seq) is not int or not 1 <= seq <= SEQ_MAX:
        raise _Reject(f"command 'seq' must be an int in [1, 2**63), got {_short(seq)}", request_id)
    command = body.get("command")
    if type(command) is not str:
        raise _Reject(f"command 'command' must be a string component.OPCODE, got {_type_name(command)}", request_id)
    if len(command) > MAX_COMMAND_CHARS or not _COMMAND_RE.fullmatch(command):
        raise _Reject(f"command {_short(command)} is not component.OPCODE", request_id)
    args = body.get("args")
    if args is None:
        args = {}
    if type(args) is not dict:
        raise _Reject(f"{command}: 'args' must be a map, got {_type_name(args)}", request_id)
    if len(args) > MAX_ARGS:
        raise _Reject(f"{command}: {len(args)} arguments, at most {MAX_ARGS}", request_id)
    for name, value in args.items():
        if type(name) is not str or not 0 < len(name) <= MAX_ARG_NAME_CHARS:
            raise _Reject(f"{command}: argument names must be strings of 1 to {MAX_ARG_NAME_CHARS} "
                          f"characters, got {_short(name)}", request_id)
        kind = type(value)
        if kind is str:
            if len(value) > MAX_STRING_ARG_CHARS:
                raise _Reject(f"{command}: argument {name!r} has {len(value)} characters, at most "
                              f"{MAX_STRING_ARG_CHARS}", request_id)
        elif kind not in (bool, int, float):
            raise _Reject(f"{command}: argument {name!r} must be a bool, int, float or string, got "
                          f"{_type_name(value)}", request_id)
    return CommandRequest(request_id, seq, command, args)


def refusal_reason(client: ClientInfo, command: str, dictionary: Dictionary) -> str | None:
    """Why ``client`` may not send ``command``, or None when its role allows it."""
    if client.role == "observer":
        return f"client {client.name} has role observer: observers may not command"
    definition = dictionary.commands.get(command)
    hazardous = command in ALWAYS_OPERATOR or (definition is not None and definition.hazardous)
    if hazardous and client.role != "operator":
        return f"client {client.name} has role {client.role}: {command} is hazardous and needs role operator"
    return None


# --------------------------------------------------------------------------- anti-replay store


class ReplayStoreError(ValueError):
    """The anti-replay store is unreadable or corrupt; the text names the file and what is wrong."""


_STORE_FORMAT = "sunlit.ground_link.replay"
_STORE_VERSION = 1


def _marks_digest(marks: Mapping[str, int]) -> str:
    return hashlib.sha256(json.dumps(dict(marks), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ReplayGuard:
    """The highest accepted seq per client name, persisted atomically (write, fsync, rename).

    With ``path=None`` the marks live in memory only (tests, throwaway benches): a restart then
    forgets them and a replay across it would pass.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._marks: dict[str, int] = {} if self.path is None else self._load(self.path)
        self.dirty = False

    @staticmethod
    def _load(path: Path) -> dict[str, int]:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ReplayStoreError(f"{path}: anti-replay store is unreadable ({type(exc).__name__}: {exc})") from None
        if type(data) is not dict or data.get("format") != _STORE_FORMAT:
            raise ReplayStoreError(f"{path}: not an anti-replay store (format must be {_STORE_FORMAT!r})")
        if data.get("version") != _STORE_VERSION:
            raise ReplayStoreError(f"{path}: anti-replay store version {data.get('version')!r}, "
                                   f"this link reads {_STORE_VERSION}")
        marks = data.get("marks")
        if type(marks) is not dict or not all(
            type(k) is str and type(v) is int and 0 <= v <= SEQ_MAX for k, v in marks.items()
        ):
            raise ReplayStoreError(f"{path}: 'marks' must map client names to seqs in [0, 2**63)")
        if data.get("sha256") != _marks_digest(marks):
            raise ReplayStoreError(f"{path}: anti-replay store checksum mismatch (corrupt)")
        return dict(marks)

    def last(self, client: str) -> int:
        """The highest seq accepted from ``client`` (0 when none)."""
        return self._marks.get(client, 0)

    def check(self, client: str, seq: int) -> str | None:
        """Why ``seq`` is refused for ``client``, or None when it is new."""
        last = self._marks.get(client, 0)
        if seq <= last:
            return f"replayed or out-of-order command: seq {seq} <= last accepted {last}"
        return None

    def accept(self, client: str, seq: int) -> None:
        """Consume ``seq``: from now on nothing at or below it is accepted from ``client``."""
        if seq > self._marks.get(client, 0):
            self._marks[client] = seq
            self.dirty = True

    def marks(self) -> dict[str, int]:
        return dict(self._marks)

    def persist(self) -> None:
        """Write the marks if they changed; raises OSError when the file cannot be written."""
        if not self.dirty:
            return
        if self.path is not None:
            document = {"format": _STORE_FORMAT, "version": _STORE_VERSION, "marks": self._marks,
                        "sha256": _marks_digest(self._marks)}
            temp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                with open(temp, "w") as handle:
                    json.dump(document, handle, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, self.path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            fd = os.open(self.path.parent, os.O_RDONLY)  # the rename is durable only with its directory
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.dirty = False


# --------------------------------------------------------------------------- sockets


@dataclass
class LinkSockets:
    """The link's bound sockets and what secures them; ``close`` releases all of it."""

    command: zmq.Socket
    telemetry: zmq.Socket
    command_endpoint: str
    telemetry_endpoint: str
    refusals: queue.SimpleQueue | None = None
    monitors: tuple[zmq.Socket, ...] = ()
    authenticator: Any = None
    closed: bool = field(default=False, init=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.command, self.telemetry):
            if self.monitors and not sock.closed:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
        for monitor in self.monitors:
            monitor.close(linger=0)
        self.command.close(linger=0)
        self.telemetry.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()


def _configure(command: zmq.Socket, telemetry: zmq.Socket, telemetry_hwm: int) -> None:
    for sock in (command, telemetry):
        sock.setsockopt(zmq.LINGER, 0)
    command.setsockopt(zmq.RCVHWM, 1000)
    command.setsockopt(zmq.SNDHWM, 1000)
    # A frame far past the request limit drops the connection instead of costing memory.
    command.setsockopt(zmq.MAXMSGSIZE, _SOCKET_MAX_MSG_BYTES)
    telemetry.setsockopt(zmq.SNDHWM, telemetry_hwm)


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def secure_sockets(
    context: zmq.Context,
    server_keys: CurveKeyPair,
    allowed_clients: Mapping[bytes, ClientInfo],
    command_endpoint: str,
    telemetry_endpoint: str,
    on_refusal: Callable[[Refusal], None] | None = None,
    *,
    telemetry_hwm: int = 10_000,
) -> LinkSockets:
    """Bind the two CURVE-server sockets and start the ZAP authenticator for ``context``.

    ``allowed_clients`` maps z85 public keys to ClientInfo (tools.keys.load_allowed_clients).
    Refusals go into the returned ``refusals`` queue (GroundLink counts them) and, if given, to
    ``on_refusal``, which runs in the authenticator's thread and must be thread-safe.
    Endpoints may use a wildcard port (``tcp://127.0.0.1:*``); the bound ones are returned.
    One authenticator serves one context: give each link its own context.
    """
    from zmq.auth.thread import ThreadAuthenticator

    if server_keys.secret is None:
        raise ValueError("server_keys has no secret key: load it from server.key_secret")
    allowed = {bytes(key): info for key, info in allowed_clients.items()}
    for key, info in allowed.items():
        if len(key) != 40 or not isinstance(info, ClientInfo):
            raise ValueError(f"allowed_clients must map z85 public keys (40 bytes) to ClientInfo, got {key!r}: {info!r}")
    refusals: queue.SimpleQueue = queue.SimpleQueue()

    class _AllowListed:
        """ZAP credentials provider: only listed keys pass; refusals are handed to the link."""

        def callback(self, domain: str, key: bytes) -> bool:
            if key in allowed:
                return True
            refusal = Refusal(bytes(key), "key not in the allowed list")
            refusals.put(refusal)
            if on_refusal is not None:
                try:
                    on_refusal(refusal)
                except Exception:  # noqa: BLE001 - the authenticator thread must survive its callers
                    pass
            return False

    class _NamedAuthenticator(ThreadAuthenticator):
        def curve_user_id(self, client_public_key: bytes) -> str:
            info = allowed.get(z85.encode(client_public_key))
            return info.name if info is not None else ""

    authenticator = _NamedAuthenticator(context)
    command = telemetry = None
    monitors: list[zmq.Socket] = []
    try:
        try:
            authenticator.start()
        except zmq.ZMQError as exc:
            raise RuntimeError(f"cannot start the ZAP authenticator ({exc}): this context already has one; "
                               f"give each ground link its own zmq.Context") from None
        authenticator.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowListed())
        command = context.socket(zmq.ROUTER)
        telemetry = context.socket(zmq.PUB)
        _configure(command, telemetry, telemetry_hwm)
        for sock in (command, telemetry):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, server_keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, server_keys.secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
            monitors.append(sock.get_monitor_socket(_HANDSHAKE_EVENTS))
        command_bound = _bind(command, command_endpoint)
        telemetry_bound = _bind(telemetry, telemetry_endpoint)
    except BaseException:
        for monitor in monitors:
            monitor.close(linger=0)
        for sock in (command, telemetry):
            if sock is not None:
                sock.close(linger=0)
        authenticator.stop()
        raise
    return LinkSockets(command, telemetry, command_bound, telemetry_bound, refusals, tuple(monitors), authenticator)


def insecure_sockets(context: zmq.Context, command_endpoint: str, telemetry_endpoint: str, *,
                     telemetry_hwm: int = 10_000) -> LinkSockets:
    """Bind the two sockets without security (local benches only: see the module notes)."""
    command = context.socket(zmq.ROUTER)
    telemetry = context.socket(zmq.PUB)
    try:
        _configure(command, telemetry, telemetry_hwm)
        command_bound = _bind(command, command_endpoint)
        telemetry_bound = _bind(telemetry, telemetry_endpoint)
    except BaseException:
        command.close(linger=0)
        telemetry.close(linger=0)
        raise
    return LinkSockets(command, telemetry, command_bound, telemetry_bound)


# --------------------------------------------------------------------------- the link


@dataclass(frozen=True)
class GroundLinkConfig:
    # Must be set to run without CURVE (no allowed_clients): insecurity is never a default.
    insecure: bool = False
    # Advertised in the welcome; default: the telemetry socket's bound address.
    telemetry_endpoint: str = ""
    # Bus topics forwarded to the telemetry socket ("x." is a prefix, anything else exact).
    telemetry_topics: tuple[str, ...] = ("tlm.", "evt.", "rsp.dispatch")
    # Ticks a forwarded command may wait for the stack (the dispatcher's own timeout is 10 s).
    response_timeout_ticks: int = 15
    max_pending: int = 64
    max_frame_bytes: int = MAX_FRAME_BYTES
    # Client frames read per service() call: a flood cannot starve the scheduler.
    max_requests_per_service: int = 256
    # The anti-replay store (JSON); None keeps the marks in memory only.
    replay_store_path: str | os.PathLike | None = None
    bus_hwm: int = 10_000

    def __post_init__(self) -> None:
        for name in ("response_timeout_ticks", "max_pending", "max_frame_bytes", "max_requests_per_service", "bus_hwm"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"GroundLinkConfig.{name} must be an int >= 1, got {value!r}")
        if self.max_frame_bytes > _SOCKET_MAX_MSG_BYTES:
            raise ValueError(f"GroundLinkConfig.max_frame_bytes must be <= {_SOCKET_MAX_MSG_BYTES} (the sockets' "
                             f"hard limit), got {self.max_frame_bytes}")
        if isinstance(self.telemetry_topics, str) or not self.telemetry_topics:
            raise ValueError("GroundLinkConfig.telemetry_topics must be a non-empty tuple of topics")


@dataclass
class _Pending:
    identity: bytes
    client_id: int
    client: str
    command: str
    sent_tick: int


_COUNTERS = (
    "clients_seen", "commands_received", "forwarded", "refused_role", "refused_replay", "refused_busy",
    "refused_unknown_key", "refused_handshake", "malformed", "responses_sent", "responses_timed_out",
    "responses_late", "responses_undeliverable", "telemetry_forwarded", "replay_store_errors",
)


class GroundLink:
    """The onboard end of the ground link. The runner calls ``service(tick)`` between ticks."""

    def __init__(
        self,
        bus: Bus,
        command_socket: zmq.Socket,
        telemetry_socket: zmq.Socket,
        allowed_clients: Mapping[bytes, ClientInfo] | None,
        config: GroundLinkConfig = GroundLinkConfig(),
        *,
        clock: Clock,
        dictionary: Dictionary | None = None,
        refusals: queue.SimpleQueue | None = None,
        monitors: Iterable[zmq.Socket] = (),
    ) -> None:
        self.config = config
        self.dictionary = dictionary if dictionary is not None else default_dictionary()
        self.clock = clock
        self.secure = allowed_clients is not None
        if not self.secure and not config.insecure:
            raise ValueError("ground link without allowed_clients: pass the allowed client keys, or set "
                             "GroundLinkConfig(insecure=True) for a local bench (no authentication)")
        if self.secure:
            for label, sock in (("command", command_socket), ("telemetry", telemetry_socket)):
                if sock.getsockopt(zmq.MECHANISM) != zmq.CURVE or not sock.getsockopt(zmq.CURVE_SERVER):
                    raise ValueError(f"ground link: the {label} socket is not a CURVE server (use secure_sockets)")
            self._roles = self._roles_by_name(allowed_clients)
        else:
            self._roles = {}
        self._command = command_socket
        self._telemetry = telemetry_socket
        self._command.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply to a vanished client is counted
        self.telemetry_endpoint = config.telemetry_endpoint or telemetry_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sockets: LinkSockets | None = None  # set by open(): then the link owns them
        self._refusals = refusals
        self._monitors = tuple(monitors)
        self.replay = ReplayGuard(config.replay_store_path)
        self.dictionary_sha256 = dictionary_sha256(self.dictionary)

        self._pub = bus.publisher(COMPONENT)
        self._events = EventReporter(bus, COMPONENT, self.dictionary)
        self.commands = CommandServer(bus, COMPONENT, {}, dictionary=self.dictionary,
                                      on_reset_counters=self.reset_counters)
        self._downlink = bus.subscribe([*config.telemetry_topics, "rsp.dispatch"], hwm=config.bus_hwm,
                                       name=f"{COMPONENT}-downlink")
        self._forwarded_topic: dict[str, bool] = {}
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._tick = 0
        self._seen: set[bytes] = set()
        self.closed = False
        if not self.secure:
            self._events.emit("WARNING_HI", "INSECURE_LINK",
                              "ground link without CURVE: every client is the operator 'local'; bench use only",
                              endpoint=command_socket.getsockopt_string(zmq.LAST_ENDPOINT))

    @classmethod
    def open(
        cls,
        bus: Bus,
        context: zmq.Context,
        command_endpoint: str,
        telemetry_endpoint: str,
        *,
        clock: Clock,
        server_keys: CurveKeyPair | None = None,
        allowed_clients: Mapping[bytes, ClientInfo] | None = None,
        config: GroundLinkConfig = GroundLinkConfig(),
        dictionary: Dictionary | None = None,
    ) -> GroundLink:
        """Bind the sockets (secure unless ``config.insecure``) and build the link; it owns them."""
        if config.insecure:
            if server_keys is not None or allowed_clients is not None:
                raise ValueError("an insecure link takes no server keys or allowed clients")
            sockets = insecure_sockets(context, command_endpoint, telemetry_endpoint)
        else:
            if server_keys is None or allowed_clients is None:
                raise ValueError("a secure link needs server_keys and allowed_clients (tools.keys)")
            sockets = secure_sockets(context, server_keys, allowed_clients, command_endpoint, telemetry_endpoint)
        try:
            link = cls(bus, sockets.command, sockets.telemetry, None if config.insecure else allowed_clients,
                       config, clock=clock, dictionary=dictionary, refusals=sockets.refusals,
                       monitors=sockets.monitors)
        except BaseException:
            sockets.close()
            raise
        link.sockets = sockets
        return link

    @staticmethod
    def _roles_by_name(allowed: Mapping[bytes, ClientInfo]) -> dict[str, str]:
        roles: dict[str, str] = {}
        for info in allowed.values():
            if not isinstance(info, ClientInfo):
                raise ValueError(f"allowed_clients values must be ClientInfo, got {info!r}")
            if roles.setdefault(info.name, info.role) != info.role:
                raise ValueError(f"client {info.name!r} is listed with two roles")
        return roles

    # -- the loop -------------------------------------------------------------------------------

    @property
    def command_socket(self) -> zmq.Socket:
        """For a runner that waits on client traffic (zmq.Poller) while idle between ticks."""
        return self._command

    @property
    def pending(self) -> int:
        return len(self._pending)

    def service(self, tick: int) -> None:
        """One non-blocking pass: refusals counted, stack answers and telemetry out, client
        requests in, commands forwarded, overdue commands answered. ``tick``: scheduler ticks done."""
        if self.closed:
            raise RuntimeError("service() on a closed ground link")
        if type(tick) is int and tick > self._tick:
            self._tick = tick
        self._take_refusals()
        self._take_handshake_failures()
        self.commands.execute_commands()
        self._drain_bus()
        self._read_clients()
        self._expire()

    def publish_telemetry(self, ctx: Any = None) -> None:
        """``tlm.ground_link``: the counters (a rate-group member)."""
        self._pub.publish(f"tlm.{COMPONENT}", {
            "secure": self.secure, **self.counters, "pending": len(self._pending),
            "telemetry_dropped": self._downlink.dropped_total,
            "cmd_accepted": self.commands.accepted, "cmd_rejected": self.commands.rejected,
        })

    def reset_counters(self) -> None:
        """Zero the counters and let throttled events through again (ground_link.RESET_COUNTERS)."""
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self._events.reset_throttles()

    def close(self) -> None:
        """Release the bus subscriptions and the sockets (and the authenticator, if ``open`` made it)."""
        if self.closed:
            return
        self.closed = True
        self._downlink.close()
        self.commands.subscription.close()
        if self.sockets is not None:
            self.sockets.close()
        else:
            self._command.close(linger=0)
            self._telemetry.close(linger=0)

    # -- refusals from the security layer ----------------------------------------------------------

    def _take_refusals(self) -> None:
        if self._refusals is None:
            return
        for _ in range(10_000):
            try:
                refusal = self._refusals.get_nowait()
            except queue.Empty:
                return
            self.counters["refused_unknown_key"] += 1
            shown = refusal.public_key.decode("ascii", "replace")
            self._events.emit("WARNING_HI", "CLIENT_REFUSED", f"refused client key {shown[:8]}...: {refusal.reason}",
                              public_key=shown, reason=refusal.reason)

    def _take_handshake_failures(self) -> None:
        for monitor in self._monitors:
            for _ in range(1000):
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.ZMQError:  # Again: nothing more; anything else: the monitor is gone
                    break
                if not event["event"] & _HANDSHAKE_EVENTS:
                    continue
                self.counters["refused_handshake"] += 1
                endpoint = event.get("endpoint", b"")
                endpoint = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else str(endpoint)
                self._events.emit("WARNING_LO", "HANDSHAKE_FAILED",
                                  f"security handshake failed on {endpoint} (wrong server key, or not CURVE)",
                                  endpoint=endpoint)

    # -- stack -> ground ----------------------------------------------------------------------------

    def _forwards(self, topic: str) -> bool:
        known = self._forwarded_topic.get(topic)
        if known is None:
            known = any(topic.startswith(t) if t.endswith(".") or t == "" else topic == t
                        for t in self.config.telemetry_topics)
            if len(self._forwarded_topic) < 4096:
                self._forwarded_topic[topic] = known
        return known

    def _drain_bus(self) -> None:
        send = self._telemetry.send
        for message in self._downlink.drain():
            if self._forwards(message.topic):
                try:
                    send(message.raw, zmq.NOBLOCK)  # PUB drops past its HWM rather than block
                    self.counters["telemetry_forwarded"] += 1
                except zmq.ZMQError:
                    pass
            if message.topic == "rsp.dispatch" and message.body.get("origin") == COMPONENT:
                self._route_response(message.body)

    def _route_response(self, body: dict[str, Any]) -> None:
        internal_id = body.get("id")
        pending = self._pending.pop(internal_id, None) if type(internal_id) is int else None
        if pending is None:
            self.counters["responses_late"] += 1
            return
        status = body.get("status")
        reason = body.get("reason")
        if status not in TERMINAL_STATUSES:
            status, reason = "EXECUTION_ERROR", f"the stack answered with an unknown status {_short(status)}"
        self._respond(pending.identity, pending.client_id, pending.command, status,
                      reason if type(reason) is str else "")

    def _expire(self) -> None:
        limit = self.config.response_timeout_ticks
        for internal_id, pending in list(self._pending.items()):
            if self._tick - pending.sent_tick > limit:
                del self._pending[internal_id]
                self.counters["responses_timed_out"] += 1
                reason = f"no response from the stack within {limit} ticks"
                self._events.emit("WARNING_HI", "COMMAND_TIMED_OUT", f"{pending.command} from {pending.client}: {reason}",
                                  client=pending.client, command=pending.command)
                self._respond(pending.identity, pending.client_id, pending.command, "EXECUTION_ERROR", reason)

    # -- ground -> stack ----------------------------------------------------------------------------

    def _read_clients(self) -> None:
        accepted: list[tuple[ClientInfo, bytes, CommandRequest]] = []
        for _ in range(self.config.max_requests_per_service):
            try:
                frames = self._command.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            request = self._handle(frames, len(accepted))
            if request is not None:
                accepted.append(request)
        if accepted or self.replay.dirty:  # a seq consumed by a BUSY refusal is persisted too
            self._forward(accepted)

    def _client_of(self, frame: zmq.Frame) -> ClientInfo | None:
        if not self.secure:
            return ClientInfo(LOCAL_CLIENT, "operator")
        try:
            name = frame.get("User-Id")
        except (zmq.ZMQError, KeyError):
            return None
        role = self._roles.get(name) if type(name) is str else None
        return None if role is None else ClientInfo(name, role)

    def _handle(self, frames: list[zmq.Frame], batch_len: int) -> tuple[ClientInfo, bytes, CommandRequest] | None:
        """One client message; returns an accepted command (forwarded with the batch) or None.
        ``batch_len``: commands already accepted in this pass and not yet forwarded."""
        identity = frames[0].bytes
        if len(frames) != 2:
            self.counters["malformed"] += 1
            self._reply(identity, {"type": "error", "reason": f"a request is one frame, got {len(frames) - 1}"})
            return None
        client = self._client_of(frames[1])
        if client is None:  # cannot happen behind ZAP; refuse rather than trust
            self.counters["malformed"] += 1
            self._reply(identity, {"type": "error", "reason": "connection is not authenticated as an allowed client"})
            return None
        request = decode_request(frames[1].bytes, self.config.max_frame_bytes)
        if isinstance(request, Hello):
            self._welcome(identity, client)
            return None
        if isinstance(request, DecodeFailure):
            self.counters["malformed"] += 1
            self._refused(client, "?", f"malformed request: {request.reason}")
            if request.id is None:
                self._reply(identity, {"type": "error", "reason": request.reason})
            else:
                self._respond(identity, request.id, "?", "FORMAT_ERROR", request.reason)
            return None
        self.counters["commands_received"] += 1
        reason = refusal_reason(client, request.command, self.dictionary)
        if reason is not None:
            self.counters["refused_role"] += 1
            return self._refuse(identity, client, request, reason)
        reason = self.replay.check(client.name, request.seq)
        if reason is not None:
            self.counters["refused_replay"] += 1
            return self._refuse(identity, client, request, reason)
        # The seq is consumed from here on, whatever becomes of the command: a captured frame
        # refused as BUSY must not run later either.
        self.replay.accept(client.name, request.seq)
        if len(self._pending) + batch_len >= self.config.max_pending:
            self.counters["refused_busy"] += 1
            return self._refuse(identity, client, request,
                                f"{self.config.max_pending} commands waiting for the stack; send again later",
                                status="BUSY")
        return client, identity, request

    def _forward(self, accepted: list[tuple[ClientInfo, bytes, CommandRequest]]) -> None:
        try:
            self.replay.persist()  # before anything runs: a restart must not forget these seqs
        except OSError as exc:
            self.counters["replay_store_errors"] += 1
            reason = f"anti-replay store could not be written ({type(exc).__name__}: {exc}); command not sent"
            self._events.emit("WARNING_HI", "REPLAY_STORE_FAILED", reason, path=str(self.replay.path))
            for client, identity, request in accepted:
                self._respond(identity, request.id, request.command, "EXECUTION_ERROR", reason)
            return
        for client, identity, request in accepted:
            self._next_id += 1
            self._pending[self._next_id] = _Pending(identity, request.id, client.name, request.command, self._tick)
            self._pub.publish("cmd.dispatch", {"id": self._next_id, "command": request.command, "args": request.args})
            self.counters["forwarded"] += 1

    def _refuse(self, identity: bytes, client: ClientInfo, request: CommandRequest, reason: str,
                status: str = "EXECUTION_ERROR") -> None:
        self._refused(client, request.command, reason)
        self._respond(identity, request.id, request.command, status, reason)
        return None

    def _refused(self, client: ClientInfo, command: str, reason: str) -> None:
        self._events.emit("WARNING_LO", "COMMAND_REFUSED", f"{command} from {client.name}: {reason}",
                          client=client.name, command=command)

    def _welcome(self, identity: bytes, client: ClientInfo) -> None:
        if identity not in self._seen:
            if len(self._seen) >= _SEEN_CONNECTIONS_MAX:
                self._seen.clear()
            self._seen.add(identity)
            self.counters["clients_seen"] += 1
            self._events.emit("ACTIVITY_HI", "CLIENT_CONNECTED", f"client {client.name} ({client.role}) connected",
                              client=client.name, role=client.role)
        self._reply(identity, {
            "type": "welcome", "protocol": PROTOCOL_VERSION, "client": client.name, "role": client.role,
            "telemetry_endpoint": self.telemetry_endpoint, "dictionary_sha256": self.dictionary_sha256,
            "mission_utc": iso_utc(self.clock.utc_at(self.clock.now_ns())),
            "last_seq": self.replay.last(client.name), "secure": self.secure,
        })

    def _respond(self, identity: bytes, client_id: int, command: str, status: str, reason: str) -> None:
        if self._reply(identity, {"type": "response", "id": client_id, "command": command,
                                  "status": status, "reason": reason}):
            self.counters["responses_sent"] += 1

    def _reply(self, identity: bytes, body: dict[str, Any]) -> bool:
        try:
            self._command.send_multipart([identity, msgpack.packb(body, use_bin_type=True)], zmq.NOBLOCK)
        except zmq.ZMQError:  # EHOSTUNREACH (client gone, ROUTER_MANDATORY) or EAGAIN (its queue is full)
            self.counters["responses_undeliverable"] += 1
            return False
        return True

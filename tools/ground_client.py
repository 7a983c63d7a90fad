"""The ground client: one library for the console, scripts and the pytest test API.

    with GroundClient("tcp://sat:5555", "keys/operator.key_secret", "keys/server.key") as link:
        result = link.send_command("eps.SET_SWITCH", {"switch": "gpu", "on": False})
        link.subscribe(("tlm.", "evt."))
        messages = link.receive(timeout_ms=1000)

Commands go through a DEALER to the satellite's ground link (flight/ground_link.py has the
protocol); telemetry comes from its PUB as exact bus frames, decoded into flight.bus.Message.
With key paths the client is a CURVE client (encrypted, authenticated by its key); without them
it talks to an insecure bench link.

Anti-replay: every command carries ``seq = max(last + 1, time.time_ns(), server's last + 1)``,
strictly increasing without any state on disk: a restarted client continues above its last seq
(the welcome also tells it the last seq the link accepted from this client name).

Errors: LinkTimeout (no answer in time), LinkRefused (the security handshake failed: this key
is not allowed, or server.key is not the satellite's), LinkError for anything else the link
says. Malformed replies and telemetry frames are counted, never raised.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from flight.bus import Message, Subscription
from flight.dictionary import Dictionary, default_dictionary
from flight.ground_link import CurveKeyPair, dictionary_sha256
from tools.keys import load_client_keys, load_public_key

__all__ = ["CommandResult", "GroundClient", "LinkError", "LinkRefused", "LinkTimeout", "resolve_endpoint"]

_HANDSHAKE_FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                       | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_RESPONSES_KEPT = 1000


class LinkError(Exception):
    """Something went wrong on the ground link."""


class LinkTimeout(LinkError, TimeoutError):
    """No answer within the timeout."""


class LinkRefused(LinkError):
    """The security handshake failed: the key is not allowed, or the server key is wrong."""


@dataclass(frozen=True)
class CommandResult:
    id: int
    command: str
    status: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def resolve_endpoint(advertised: str, command_endpoint: str) -> str:
    """The telemetry endpoint to connect to: an advertised wildcard host (``*``, ``0.0.0.0``,
    ``[::]``) is replaced by the host the client reached the command socket on."""
    if not advertised.startswith("tcp://"):
        return advertised
    host_port = advertised[len("tcp://"):]
    host, sep, port = host_port.rpartition(":")
    if not sep or host not in ("*", "0.0.0.0", "[::]", "::", ""):
        return advertised
    if not command_endpoint.startswith("tcp://"):
        return advertised
    command_host = urlsplit(command_endpoint).netloc.rpartition(":")[0]
    return f"tcp://{command_host}:{port}" if command_host else advertised


class GroundClient:
    """A connection to the satellite's ground link (say hello, command, watch telemetry)."""

    def __init__(self, endpoint: str, client_secret_path: str | Path | None = None,
                 server_public_path: str | Path | None = None, *, timeout_s: float = 5.0,
                 context: zmq.Context | None = None) -> None:
        if (client_secret_path is None) != (server_public_path is None):
            raise ValueError("give both client_secret_path and server_public_path (CURVE), or neither (insecure bench link)")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.endpoint = endpoint
        self.timeout_s = float(timeout_s)
        self._keys: CurveKeyPair | None = None
        self._server_public: bytes | None = None
        if client_secret_path is not None:
            self._keys = load_client_keys(client_secret_path)
            self._server_public = load_public_key(server_public_path)
        self._owned_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._subscription: Subscription | None = None
        self._responses: deque[CommandResult] = deque(maxlen=_RESPONSES_KEPT)
        self.errors: deque[str] = deque(maxlen=100)  # {"type": "error"} reasons from the link
        self.malformed_replies = 0
        self.welcome: dict[str, Any] = {}
        self.last_frame = b""  # the last command frame sent (tests replay it)
        self.closed = False
        self._next_id = 0
        self._last_seq = 0
        self._server_last_seq = 0
        self._welcomes = 0
        try:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.SNDHWM, 1000)
            self._socket.setsockopt(zmq.RCVHWM, 1000)
            self._socket.setsockopt(zmq.SNDTIMEO, max(1, round(self.timeout_s * 1000)))
            self._secure(self._socket)
            self._monitor = self._socket.get_monitor_socket(_HANDSHAKE_FAILURES)
            self._socket.connect(endpoint)
            self.hello()
        except BaseException:
            self.close()
            raise

    # -- connection -----------------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self._keys is not None

    def _secure(self, sock: zmq.Socket) -> None:
        if self._keys is None:
            return
        sock.setsockopt(zmq.CURVE_SERVERKEY, self._server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret)

    def hello(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Say hello; store and return the welcome (client name, role, telemetry endpoint...)."""
        self._send({"type": "hello"})
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        welcomes = self._welcomes
        while True:
            self._queue_replies(deadline)
            if self._welcomes != welcomes:
                return dict(self.welcome)
            if time.monotonic() >= deadline:
                raise LinkTimeout(f"no welcome from {self.endpoint} within {timeout:g} s (is the stack running "
                                  f"and servicing its ground link?)")

    def _accept_welcome(self, reply: dict[str, Any]) -> None:
        self.welcome = reply
        self._welcomes += 1
        last_seq = reply.get("last_seq")
        if type(last_seq) is int:
            self._server_last_seq = max(self._server_last_seq, last_seq)

    @property
    def client_name(self) -> str:
        return self.welcome.get("client", "")

    @property
    def role(self) -> str:
        return self.welcome.get("role", "")

    @property
    def telemetry_endpoint(self) -> str:
        return resolve_endpoint(str(self.welcome.get("telemetry_endpoint", "")), self.endpoint)

    @property
    def dictionary_sha256(self) -> str:
        return self.welcome.get("dictionary_sha256", "")

    @property
    def mission_utc(self) -> str:
        return self.welcome.get("mission_utc", "")

    def dictionary_matches(self, dictionary: Dictionary | None = None) -> bool:
        """Whether the satellite flies the same dictionary as ours (commands mean the same)."""
        return self.dictionary_sha256 == dictionary_sha256(dictionary if dictionary is not None else default_dictionary())

    # -- commands -------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._last_seq = max(self._last_seq + 1, time.time_ns(), self._server_last_seq + 1)
        return self._last_seq

    def send_command_async(self, command: str, args: dict[str, Any] | None = None) -> int:
        """Send a command; returns its id (its response comes through ``poll_responses``)."""
        if type(command) is not str:
            raise TypeError(f"command must be a str component.OPCODE, got {type(command).__name__}")
        self._next_id += 1
        body = {"type": "command", "id": self._next_id, "seq": self._next_seq(), "command": command,
                "args": {} if args is None else args}
        self.last_frame = self._send(body)
        return self._next_id

    def send_command(self, command: str, args: dict[str, Any] | None = None,
                     timeout_s: float | None = None) -> CommandResult:
        """Send a command and wait for its one terminal response (LinkTimeout if none in time)."""
        command_id = self.send_command_async(command, args)
        return self.wait_response(command_id, timeout_s, command)

    def wait_response(self, command_id: int, timeout_s: float | None = None, command: str = "") -> CommandResult:
        """Wait for the response to ``command_id``; other responses stay queued."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            for i, result in enumerate(self._responses):
                if result.id == command_id:
                    del self._responses[i]
                    return result
            if time.monotonic() >= deadline:
                raise LinkTimeout(f"no response to {command or 'command'} (id {command_id}) within {timeout:g} s")
            self._queue_replies(deadline)

    def poll_responses(self, timeout_ms: int = 0) -> list[CommandResult]:
        """Responses that arrived (waiting up to ``timeout_ms`` for the first one)."""
        if not self._responses:
            self._queue_replies(time.monotonic() + max(0, timeout_ms) / 1000)
        self._queue_replies(time.monotonic())  # and whatever else is already there
        out = list(self._responses)
        self._responses.clear()
        return out

    def send_raw(self, frame: bytes) -> None:
        """Send one frame exactly as given (tests: replays, malformed requests)."""
        self._require_open()
        try:
            self._socket.send(frame)
        except zmq.Again:
            raise LinkTimeout(f"could not send to {self.endpoint} within {self.timeout_s:g} s") from None

    # -- telemetry ------------------------------------------------------------------------------

    def subscribe(self, prefixes: Iterable[str] = ("tlm.", "evt."), *, hwm: int = 100_000) -> Subscription:
        """Open (or reopen) the telemetry subscription: "x." is a topic prefix, anything else exact.

        Subscriptions reach the satellite asynchronously: the first messages after this call may
        be missed (the slow-joiner rule); wait for a first message before relying on delivery.
        """
        self._require_open()
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        sock = self._context.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, hwm)
            self._secure(sock)
            subscription = Subscription(sock, list(prefixes), name=f"ground-{self.client_name or 'client'}")
            sock.connect(self.telemetry_endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        self._subscription = subscription
        return subscription

    def receive(self, timeout_ms: int = 0, max_messages: int | None = None) -> list[Message]:
        """Decoded telemetry that arrived (waiting up to ``timeout_ms`` for the first frame)."""
        if self._subscription is None:
            raise LinkError("no telemetry subscription: call subscribe() first")
        if timeout_ms > 0:
            self._subscription.poll(timeout_ms)
        return self._subscription.drain(max_messages)

    @property
    def telemetry_malformed(self) -> int:
        return 0 if self._subscription is None else self._subscription.malformed

    @property
    def telemetry_dropped(self) -> int:
        return 0 if self._subscription is None else self._subscription.dropped_total

    # -- plumbing -------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.closed:
            raise LinkError("the ground client is closed")

    def _send(self, body: dict[str, Any]) -> bytes:
        self._require_open()
        frame = msgpack.packb(body, use_bin_type=True)
        try:
            self._socket.send(frame)
        except zmq.Again:
            raise LinkTimeout(f"could not send to {self.endpoint} within {self.timeout_s:g} s") from None
        return frame

    def _check_handshake(self) -> None:
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind = event["event"]
            if kind & zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise LinkRefused(f"{self.endpoint} refused this client's key (it is not in the satellite's allowed "
                                  f"clients)")
            if kind & _HANDSHAKE_FAILURES:
                raise LinkRefused(f"security handshake with {self.endpoint} failed: server.key is not this "
                                  f"satellite's key, or one side does not use CURVE")

    def _receive_replies(self, deadline: float) -> list[dict[str, Any]]:
        """Replies that arrive before ``deadline`` (at least one if any comes); decodes and sorts."""
        self._check_handshake()
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        wait_ms = max(0, round((deadline - time.monotonic()) * 1000))
        ready = dict(poller.poll(wait_ms))
        if self._monitor in ready:
            self._check_handshake()
        replies = []
        while True:
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                reply = msgpack.unpackb(frame, raw=False)
            except Exception:  # noqa: BLE001 - a bad reply is counted, not raised
                self.malformed_replies += 1
                continue
            if type(reply) is not dict:
                self.malformed_replies += 1
                continue
            replies.append(reply)
        return replies

    def _queue_replies(self, deadline: float) -> None:
        for reply in self._receive_replies(deadline):
            kind = reply.get("type")
            if kind == "response":
                result = self._result(reply)
                if result is None:
                    self.malformed_replies += 1
                else:
                    self._responses.append(result)
            elif kind == "welcome":
                self._accept_welcome(reply)
            elif kind == "error":
                self.errors.append(str(reply.get("reason", "")))
            else:
                self.malformed_replies += 1

    @staticmethod
    def _result(reply: dict[str, Any]) -> CommandResult | None:
        command_id, status = reply.get("id"), reply.get("status")
        if type(command_id) is not int or type(status) is not str:
            return None
        command, reason = reply.get("command"), reply.get("reason")
        return CommandResult(command_id, command if type(command) is str else "?", status,
                             reason if type(reason) is str else "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._subscription is not None:
            self._subscription.close()
        if self._socket is not None:
            if self._monitor is not None:
                try:
                    self._socket.disable_monitor()
                except zmq.ZMQError:
                    pass
                self._monitor.close(linger=0)
            self._socket.close(linger=0)
        if self._owned_context:
            self._context.term()

    def __enter__(self) -> GroundClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

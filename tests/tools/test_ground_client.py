"""The ground client against a hand-written fake link (its protocol as documented, nothing more)."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import zmq

from flight.bus import encode_message
from flight.dictionary import default_dictionary
from flight.ground_link import dictionary_sha256
from tools.ground_client import GroundClient, LinkError, LinkTimeout, resolve_endpoint
from tools.keys import KeyFileError

WAIT_S = 5.0  # hang guard only


def welcome(**overrides) -> dict:
    return {"type": "welcome", "protocol": 1, "client": "local", "role": "operator", "telemetry_endpoint": "",
            "dictionary_sha256": "0" * 64, "mission_utc": "2026-01-01T00:00:00Z", "last_seq": 0, "secure": False,
            **overrides}


def ok_response(request: dict) -> list[bytes]:
    return [msgpack.packb({"type": "response", "id": request["id"], "command": request["command"],
                           "status": "OK", "reason": ""})]


class FakeLink:
    """A ROUTER that answers like the ground link: ``answer(request) -> reply frames``."""

    def __init__(self, answer=ok_response, *, hello=True, **welcome_fields) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        pub_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        # Advertised with a wildcard host, as a link bound to tcp://*:port would.
        self.welcome = welcome(telemetry_endpoint=f"tcp://0.0.0.0:{pub_port}", **welcome_fields)
        self.answer = answer
        self.hello = hello
        self.requests: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.router.poll(10):
                continue
            identity, payload = self.router.recv_multipart()
            request = msgpack.unpackb(payload)
            self.requests.append(request)
            if request["type"] == "hello":
                replies = [msgpack.packb(self.welcome)] if self.hello else []
            else:
                replies = self.answer(request)
            for reply in replies:
                self.router.send_multipart([identity, reply])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.context.term()


@pytest.fixture
def make_link():
    links: list[FakeLink] = []
    clients: list[GroundClient] = []

    def make(answer=ok_response, **kwargs) -> tuple[FakeLink, type]:
        link = FakeLink(answer, **kwargs)
        links.append(link)

        def client(**client_kwargs) -> GroundClient:
            made = GroundClient(link.endpoint, timeout_s=client_kwargs.pop("timeout_s", WAIT_S), **client_kwargs)
            clients.append(made)
            return made

        return link, client

    yield make
    for client in clients:
        client.close()
    for link in links:
        link.close()


def test_hello_stores_the_welcome(make_link):
    link, client = make_link(client="op", role="observer", dictionary_sha256=dictionary_sha256(default_dictionary()))
    ground = client()
    assert (ground.client_name, ground.role, ground.mission_utc) == ("op", "observer", "2026-01-01T00:00:00Z")
    port = link.welcome["telemetry_endpoint"].rpartition(":")[2]
    assert ground.telemetry_endpoint == f"tcp://127.0.0.1:{port}"  # the wildcard host resolved
    assert ground.dictionary_matches()
    assert link.requests[0] == {"type": "hello"}


def test_dictionary_mismatch_is_visible(make_link):
    _, client = make_link()
    assert not client().dictionary_matches()


def test_seq_increases_across_commands_and_client_restarts(make_link):
    link, client = make_link()
    first = client()
    for _ in range(3):
        assert first.send_command("eps.NOOP").ok
    first.close()
    second = client()
    assert second.send_command("eps.NOOP", {"x": 1}).ok
    commands = [r for r in link.requests if r["type"] == "command"]
    seqs = [r["seq"] for r in commands]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    assert commands[-1]["args"] == {"x": 1} and commands[0]["args"] == {}
    assert [r["id"] for r in commands] == [1, 2, 3, 1]  # ids are per client, seqs are not


def test_seq_starts_above_the_links_last_accepted(make_link):
    link, client = make_link(last_seq=2**62)  # a mark far ahead of this host's clock
    assert client().send_command("eps.NOOP").ok
    assert link.requests[-1]["seq"] == 2**62 + 1


def test_no_welcome_is_a_timeout(make_link):
    _, client = make_link(hello=False)
    with pytest.raises(LinkTimeout, match="no welcome"):
        client(timeout_s=0.2)


def test_no_response_is_a_timeout_and_a_late_one_is_kept(make_link):
    held: list[dict] = []
    link, client = make_link(lambda request: held.append(request) or [])
    ground = client()
    with pytest.raises(LinkTimeout, match=r"modes.SET_MODE \(id 1\)"):
        ground.send_command("modes.SET_MODE", {"mode": "IDLE"}, timeout_s=0.2)
    link.answer = ok_response
    assert ground.send_command("eps.NOOP").id == 2
    assert [r.id for r in ground.poll_responses()] == []  # the first never got an answer


def test_responses_out_of_order_and_malformed_replies(make_link):
    queued: list[dict] = []

    def answer(request: dict) -> list[bytes]:
        queued.append(request)
        if len(queued) < 2:
            return []
        # Both answers, newest first, after two malformed replies and a link error.
        return [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "error", "reason": "bad"}),
                *ok_response(queued[1]), *ok_response(queued[0])]

    _, client = make_link(answer)
    ground = client()
    first = ground.send_command_async("eps.NOOP")
    second = ground.send_command_async("eps.SET_SWITCH", {"switch": "gpu", "on": True})
    assert ground.wait_response(first).command == "eps.NOOP"
    assert [r.id for r in ground.poll_responses(1000)] == [second]
    assert ground.malformed_replies == 2
    assert list(ground.errors) == ["bad"]


def test_telemetry_is_decoded_and_malformed_frames_counted(make_link):
    link, client = make_link()
    ground = client()
    ground.subscribe(("tlm.",))
    frame = encode_message("tlm.eps", 0, 5, "eps", {"battery_soc": 0.5})
    deadline = time.monotonic() + WAIT_S
    received = []
    while not received:  # slow joiner: publish until the subscription is through
        assert time.monotonic() < deadline, "no telemetry arrived"
        link.pub.send(frame)
        received = ground.receive(20)
    assert (received[0].topic, received[0].source, received[0].body) == ("tlm.eps", "eps", {"battery_soc": 0.5})
    link.pub.send(b"tlm.eps\x00not msgpack \xc1")
    link.pub.send(b"evt.x\x00filtered out by prefix")
    link.pub.send(encode_message("tlm.gpu", 0, 6, "gpu", {"power_w": 80.0}))
    later = []
    while not later:
        assert time.monotonic() < deadline
        later = ground.receive(50)
    assert [m.topic for m in later] == ["tlm.gpu"]
    assert ground.telemetry_malformed == 1


def test_receive_needs_a_subscription_and_closed_clients_refuse(make_link):
    _, client = make_link()
    with client() as ground:
        with pytest.raises(LinkError, match="subscribe"):
            ground.receive()
    with pytest.raises(LinkError, match="closed"):
        ground.send_command("eps.NOOP")


def test_key_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="both"):
        GroundClient("tcp://127.0.0.1:1", tmp_path / "op.key_secret", None)
    with pytest.raises(KeyFileError, match="op.key_secret"):
        GroundClient("tcp://127.0.0.1:1", tmp_path / "op.key_secret", tmp_path / "server.key")


def test_resolve_endpoint():
    assert resolve_endpoint("tcp://0.0.0.0:6000", "tcp://sat.example:5555") == "tcp://sat.example:6000"
    assert resolve_endpoint("tcp://*:6000", "tcp://10.0.0.2:5555") == "tcp://10.0.0.2:6000"
    assert resolve_endpoint("tcp://10.0.0.9:6000", "tcp://10.0.0.2:5555") == "tcp://10.0.0.9:6000"
    assert resolve_endpoint("ipc:///tmp/x/tlm", "tcp://10.0.0.2:5555") == "ipc:///tmp/x/tlm"

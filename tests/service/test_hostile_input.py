"""Hostile requests: bodies over the size limit are refused with 413 before they are read, admin bodies are not
read before the token is checked, and bodies JSON cannot hold (too deep, not UTF-8, huge integers) are a 400
naming the problem. Every answer is the error envelope."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from service_helpers import admin_headers, assert_error, history, tiny_settings

MB = 1_000_000
ANSWER_WITHIN_S = 5.0  # far under what reading (and parsing) 20 MB would take on a busy machine, far over a reply


@dataclass
class RawReply:
    status: int
    body: str
    seconds: float


def raw_post(url: str, path: str, headers: dict[str, str], body_start: bytes = b"") -> RawReply:
    """POST with the given headers (e.g. a Content-Length of 20 MB) but send only `body_start`, then wait for the
    reply: a server that tried to read the whole body would never answer (the socket times out)."""
    parts = urlsplit(url)
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    start = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_WITHIN_S) as sock:
        sock.sendall(head.encode() + b"\r\n" + body_start)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except TimeoutError:
            pytest.fail(f"no answer within {ANSWER_WITHIN_S} s: the server waits for the body it should refuse")
    status_line, _, rest = received.partition(b"\r\n")
    return RawReply(int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(), time.monotonic() - start)


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def test_a_20mb_admin_post_without_a_token_is_401_without_reading_it(gateway):
    headers = {"content-type": "application/json", "content-length": str(20 * MB)}
    reply = raw_post(gateway.url, "/admin/items", headers, b'{"items": [')
    assert reply.status == 401 and '"unauthorized"' in reply.body, reply


def test_malformed_admin_json_without_a_token_is_401_not_422(gateway):
    response = gateway.client.post("/admin/items", content=b'{"items": [', headers={"content-type": "application/json"})
    assert_error(response, 401, "unauthorized", "Authorization")


@pytest.mark.parametrize("path", ["/recommend", "/rate"])
def test_a_body_over_the_limit_is_413_without_reading_it(gateway, path):
    headers = {"content-type": "application/json", "content-length": str(20 * MB)}
    reply = raw_post(gateway.url, path, headers, b'{"history": [')
    assert reply.status == 413 and '"payload_too_large"' in reply.body and "REASONREC_MAX_BODY_BYTES" in reply.body


def test_the_admin_limit_applies_after_the_token(gateway):
    headers = {"content-type": "application/json", "content-length": str(20 * MB), **admin_headers()}
    reply = raw_post(gateway.url, "/admin/items", headers, b'{"items": [')
    assert reply.status == 413 and "REASONREC_MAX_ADMIN_BODY_BYTES" in reply.body


def chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    """A JSON body streamed without a Content-Length (chunked), `total` bytes long."""
    yield b'{"history": [{"title": "'
    sent = 24
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}]}'


def test_limits_are_configurable_and_count_chunked_bodies(serve, index_dir, tiny_engine):
    server = serve(tiny_settings(index_dir, max_body_bytes=2048, max_admin_body_bytes=4096), tiny_engine)
    ok = server.client.post("/recommend", json={"history": history("1"), "k": 2})
    assert ok.status_code == 200, ok.text
    too_big = {"history": [{"title": "t" * 300} for _ in range(10)]}  # valid, but ~3.4 kB
    error = assert_error(server.client.post("/recommend", json=too_big), 413, "payload_too_large")
    assert "2048 bytes" in error["message"]
    streamed = server.client.post("/recommend", content=chunks(10_000), headers={"content-type": "application/json"})
    assert_error(streamed, 413, "payload_too_large")
    item = {"item_id": "big", "title": "Big", "description": "d" * 3000}  # over 2048, under the admin 4096
    added = server.client.post("/admin/items", json={"items": [item]}, headers=admin_headers())
    assert added.status_code == 200, added.text
    assert server.client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"history": [{"title": "caf\xe9"}]}', "not valid UTF-8"),
        (b'{"history": [{"item_id": "1"}], "k": ' + b"9" * 5000 + b"}", "digits"),
    ],
    ids=["deep-nesting", "invalid-utf8", "huge-integer"],
)
def test_bodies_json_cannot_hold_are_a_400_naming_the_problem(gateway, raw, words):
    response = gateway.client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    error = assert_error(response, 400, "bad_request")
    assert words in error["message"], error


TOO_LONG_UNTIL_STRIPPED = ["t" * 300 + " ", "t" * 300 + "\r\n", "\t" + "t" * 300]


@pytest.mark.parametrize("title", TOO_LONG_UNTIL_STRIPPED, ids=["space", "line-break", "tab"])
def test_a_title_over_its_max_length_is_a_422_even_when_stripping_would_shorten_it(gateway, title):
    """The documented limit (maxLength 300 in the OpenAPI schema) is the one enforced: on the body as sent, before
    surrounding whitespace (spaces and control characters such as tabs and line breaks) is stripped."""
    new = {"items": [{"item_id": "long-title", "title": title}]}
    response = gateway.client.post("/admin/items", json=new, headers=admin_headers())
    assert_error(response, 422, "invalid_request", "items[0].title")
    body = {"history": [{"title": title, "rating": 4}]}
    assert_error(gateway.client.post("/recommend", json=body), 422, "invalid_request", "history[0].title")


@pytest.mark.parametrize("title", [" ", "\x1f\t"], ids=["space", "separator-and-tab"])
def test_a_blank_title_is_a_422_naming_it(gateway, title):
    response = gateway.client.post("/admin/items", json={"items": [{"item_id": "blank", "title": title}]},
                                   headers=admin_headers())
    assert_error(response, 422, "invalid_request", "items[0].title")

"""A fast HTTP sink for the benchmarks, run in its own process (stdlib only, asyncio streams).

It answers every request ``200 ok`` as soon as its body is read (before parsing it), over
HTTP/1.1 keep-alive, and counts what it received, per wire format:

- ``form``   (``application/x-www-form-urlencoded``, or a GET with a query string): 1 record;
- ``json``   (``application/json`` holding an array): 1 record per ``"message"`` key;
- ``ndjson`` (``application/x-ndjson``): 1 record per line;
- ``otlp``   (``application/json`` holding ``resourceLogs``): 1 record per ``"body"``;
- ``other``: anything else, 1 request = 1 record.

Each benchmark record carries a unique id in its message (``msg id=<n>``); the sink collects the
distinct ids (form: from the ``message`` field; json, ndjson, otlp: one regex scan of the body
for ``id=<digits>``, which only a message holds), so a run can tell delivered, lost and
duplicated records apart. Parsing is that cheap so that the client, not the sink, is the
bottleneck; and the sink answers before it parses, so the two overlap.

Faults: a path that starts with ``/flaky/<percent>/`` (e.g. ``/flaky/30/sink/BENCH/bench``) is
answered ``503`` without ``Retry-After``, and not counted, for that share of its requests, drawn at
random (seeded, so runs are comparable).

Control endpoints (not counted)::

    GET  /stats   -> JSON: requests, records and bytes per format, distinct ids, duplicates,
                     the sink's own CPU seconds (to check it is not the bottleneck)
    POST /reset   -> clears every count

Run it with ``python sink.py --port 0``: it prints the port it listens on (one line on stdout)
and serves 127.0.0.1 until killed. ``SinkProcess`` starts, queries and stops it from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import http.client
import json
import random
import re
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import unquote_plus

HOST = "127.0.0.1"
FORMATS = ("form", "json", "ndjson", "otlp", "other")

_ID = re.compile(rb"\bid=(\d+)")
_FORM_MESSAGE = re.compile(rb"(?:^|&)message=([^&]*)")
# Batches: one scan of the whole body for "id=<digits>" (only a benchmark record's message has
# one: its msg is "msg id=%s"), and records counted by their message (json) or body (otlp) key.
_BODY_ID = re.compile(rb"id=(\d+)")
_JSON_MESSAGE_KEY = b'"message":'
_OTLP_BODY_KEY = b'"body":{"stringValue":'
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)
_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
_FLAKY = re.compile(r"/flaky/(\d+)/")
_MAX_HEAD = 1 << 20


class Counts:
    """What the sink has received since it started or was last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Dict[str, int] = dict.fromkeys(FORMATS, 0)
        self.records: Dict[str, int] = dict.fromkeys(FORMATS, 0)
        self.body_bytes: Dict[str, int] = dict.fromkeys(FORMATS, 0)
        self.ids: Set[bytes] = set()  # the digits of each id, as sent
        self.id_hits = 0
        self.connections = 0
        self.first_at: Optional[float] = None
        self.last_at: Optional[float] = None

    def add(self, fmt: str, records: int, body_bytes: int, ids: List[bytes]) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.requests[fmt] += 1
        self.records[fmt] += records
        self.body_bytes[fmt] += body_bytes
        self.id_hits += len(ids)
        self.ids.update(ids)

    def as_json(self) -> Dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "requests": self.requests,
            "records": self.records,
            "bytes": self.body_bytes,
            "total_records": sum(self.records.values()),
            "distinct_ids": len(self.ids),
            "duplicate_ids": self.id_hits - len(self.ids),
            "connections": self.connections,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }


def classify(
    method: str, target: str, content_type: str, body: bytes
) -> Tuple[str, int, List[bytes]]:
    """(format, record count, ids) of one request."""
    if method == "GET":
        _, _, query = target.partition("?")
        if not query:
            return "other", 1, []
        return "form", 1, _form_ids(query.encode("ascii", "replace"))
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return "form", 1, _form_ids(body)
    if ctype == "application/x-ndjson":
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
        return "ndjson", lines, _BODY_ID.findall(body)
    if ctype == "application/json":
        if body[:64].lstrip()[:1] == b"[":
            ids = _BODY_ID.findall(body)
            return "json", body.count(_JSON_MESSAGE_KEY), ids
        if b'"resourceLogs"' in body:
            ids = _BODY_ID.findall(body)
            return "otlp", body.count(_OTLP_BODY_KEY), ids
    return "other", 1, []


def _form_ids(body: bytes) -> List[bytes]:
    match = _FORM_MESSAGE.search(body)
    if match is None:
        return []
    found = _ID.search(unquote_plus(match.group(1).decode("ascii", "replace")).encode())
    return [found.group(1)] if found else []


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def fails_now(path: str, draw: random.Random) -> bool:
    """A ``/flaky/<percent>/`` path fails that share of its requests."""
    match = _FLAKY.match(path)
    return match is not None and draw.random() * 100 < int(match.group(1))


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counts,
    draw: random.Random,
) -> None:
    counts.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            method, target, version = parts
            headers: Dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n")
                return
            length = int(headers.get("content-length", "0") or "0")
            try:
                body = await reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            close = version != "HTTP/1.1" or headers.get("connection", "").lower() == "close"
            path = target.split("?", 1)[0]
            if path == "/stats" and method == "GET":
                payload = json.dumps(counts.as_json()).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                )
            elif path == "/reset" and method == "POST":
                counts.reset()
                writer.write(_OK_CLOSE if close else _OK)
            elif fails_now(path, draw):
                writer.write(_UNAVAILABLE)
            else:
                # Answer first, count after: the client gets its response while the sink parses.
                # Counting finishes before the event loop serves anything else, so a /stats
                # request made after the client saw this response counts this body.
                writer.write(_OK_CLOSE if close else _OK)
                try:
                    decoded = _decode(body, headers.get("content-encoding", ""))
                    fmt, records, ids = classify(
                        method, target, headers.get("content-type", ""), decoded
                    )
                except Exception:  # a body we cannot read is still a request we answered
                    fmt, records, ids = "other", 1, []
                counts.add(fmt, records, len(body), ids)
            if close:
                return
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def main_async(port: int) -> None:
    counts = Counts()
    draw = random.Random(7)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, counts, draw)

    server = await asyncio.start_server(handle, HOST, port, limit=_MAX_HEAD, backlog=1024)
    sockets = server.sockets or []
    print(sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args.port))


class SinkProcess:
    """Starts ``sink.py`` as a subprocess; ``stats()``/``reset()`` over HTTP; ``stop()`` kills it.

    Use it as a context manager so the process never outlives the benchmark.
    """

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    def start(self) -> SinkProcess:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", "0"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the sink did not start (printed {line!r})")
        self.port = int(line)
        return self

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def url(self, path: str = "/sink/BENCH/bench") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def _request(self, method: str, path: str) -> bytes:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request(method, path, headers={"Connection": "close"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"sink {method} {path}: HTTP {response.status}")
            return data
        finally:
            conn.close()

    def stats(self) -> Dict[str, Any]:
        result: Dict[str, Any] = json.loads(self._request("GET", "/stats"))
        return result

    def reset(self) -> None:
        self._request("POST", "/reset")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()

"""What Grafana Loki and Elasticsearch check of a request, as ``FaultServer`` scripts.

Neither server can run here (no container engine; neither is on PyPI or in Debian), so these
scripts check what their documentation says the real ones check, and answer as they answer:

``LokiPush``  ``POST /loki/api/v1/push`` with ``application/json``: ``{"streams": [{"stream":
              {labels}, "values": [["<ns>", "<line>"(, {metadata})], ...]}]}``; label names
              ``[a-zA-Z_][a-zA-Z0-9_]*`` (not ``__``-prefixed), at least one label, values as
              strings; a stream's values in time order within a push (Loki before 2.4 refused
              anything else, and the handler promises it), and across pushes no entry more than
              an hour behind the stream's newest (the window of Loki 2.4+, half of its
              ``max_chunk_age``). 204 when all is well, 400 with Loki's wording (and, unlike
              Loki, nothing of the push stored) when not.
``Bulk``      ``POST /<target>/_bulk`` with ``application/x-ndjson``: pairs of lines, each pair a
              ``{"create":{}}`` action (the one a data stream accepts) and a document with an
              ISO 8601 ``@timestamp``, the body ending with a newline. Fields are mapped as
              they come (dynamic mapping): a document whose field has another JSON type than
              the mapping took from an earlier one is refused with a 400
              ``document_parsing_exception``, as Elasticsearch does. Documents whose message
              says "busy" are refused with a 429 ``es_rejected_execution_exception`` the first
              ``busy_times`` times. The answer is a 200 with an item per document, in order.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from faultserver import Action, ReceivedRequest

#: How far behind its newest entry a stream still takes one (Loki 2.4+: max_chunk_age / 2).
WINDOW_NANOS = 3600 * 10**9

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
BULK_PATH = re.compile(r"/[^/_][^/]*/_bulk\Z")


class Refused(Exception):
    """The request is not one the real server would take: answered 400 with this text."""


# -- Loki ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LokiEntry:
    labels: Dict[str, str]
    nanos: int
    line: Dict[str, Any]  # the line, parsed as LogQL's | json would


class LokiPush:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: List[LokiEntry] = []
        self.refusals: List[str] = []
        self._newest: Dict[Tuple[Tuple[str, str], ...], int] = {}

    def __call__(self, index: int, request: ReceivedRequest) -> Action:
        try:
            entries = self._check(request)
        except Refused as exc:
            with self._lock:
                self.refusals.append(str(exc))
            return Action.status(400, body=str(exc).encode())
        with self._lock:
            self.entries.extend(entries)
        return Action.status(204)

    def _check(self, request: ReceivedRequest) -> List[LokiEntry]:
        if (request.method, request.path) != ("POST", "/loki/api/v1/push"):
            raise Refused(f"404 page not found: {request.method} {request.path}")
        if request.content_type != "application/json":
            raise Refused(f"unsupported Content-Type {request.content_type!r}")
        try:
            push = json.loads(request.body.decode("utf-8"))
        except ValueError as exc:
            raise Refused(f"loghttp.PushRequest: {exc}") from None
        if not isinstance(push, dict) or not isinstance(push.get("streams"), list):
            raise Refused("loghttp.PushRequest: streams missing")
        accepted: List[LokiEntry] = []
        newest = dict(self._newest)
        for stream in push["streams"]:
            labels = stream.get("stream") if isinstance(stream, dict) else None
            if not isinstance(labels, dict) or not labels:
                raise Refused("error at least one label pair is required per stream")
            for name, value in labels.items():
                if not LABEL_NAME.match(name) or name.startswith("__"):
                    raise Refused(f"error parsing labels: invalid label name {name!r}")
                if not isinstance(value, str) or not value:
                    raise Refused(f"error parsing labels: value of {name!r} is not a string")
            key = tuple(sorted(labels.items()))
            previous = 0
            for value in stream.get("values", None) or []:
                if not (isinstance(value, list) and len(value) in (2, 3)
                        and isinstance(value[0], str) and isinstance(value[1], str)):
                    raise Refused(f"loghttp.PushRequest: bad value {value!r:.80}")
                if len(value) == 3 and not (
                    isinstance(value[2], dict)
                    and all(isinstance(v, str) for v in value[2].values())
                ):
                    raise Refused("structured metadata must map strings to strings")
                if not value[0].isdigit() or int(value[0]) >= 2**63:
                    raise Refused(f"timestamp {value[0]!r} is not int64 nanoseconds")
                nanos = int(value[0])
                if nanos < previous:
                    raise Refused(
                        f"entry with timestamp {nanos} ignored, reason: 'entry out of order'"
                        f" for stream: {labels}"
                    )
                if nanos < newest.get(key, 0) - WINDOW_NANOS:
                    raise Refused(
                        f"entry with timestamp {nanos} ignored, reason: 'entry too far behind'"
                        f" for stream: {labels}"
                    )
                previous = nanos
                newest[key] = max(nanos, newest.get(key, 0))
                try:
                    line = json.loads(value[1])
                except ValueError:
                    raise Refused("the line is not the JSON this test expects") from None
                accepted.append(LokiEntry(dict(labels), nanos, line))
        self._newest = newest
        return accepted


# -- Elasticsearch ---------------------------------------------------------------------------------


@dataclass
class Bulk:
    busy_times: int = 1
    index: List[Dict[str, Any]] = field(default_factory=list)  # the documents stored, in order
    requests: List[List[str]] = field(default_factory=list)  # each request's messages
    refusals: List[str] = field(default_factory=list)
    _mapping: Dict[str, str] = field(default_factory=dict)
    _busy_seen: Dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, index: int, request: ReceivedRequest) -> Action:
        with self._lock:
            try:
                documents = self._parse(request)
            except Refused as exc:
                self.refusals.append(str(exc))
                error = {"error": {"type": "illegal_argument_exception", "reason": str(exc)},
                         "status": 400}
                return Action.status(400, body=json.dumps(error).encode(), headers=JSON)
            self.requests.append([str(d.get("message")) for d in documents])
            items = [self._create(document) for document in documents]
        answer = {"errors": any("error" in i["create"] for i in items), "took": 3, "items": items}
        return Action.status(200, body=json.dumps(answer).encode(), headers=JSON)

    def _parse(self, request: ReceivedRequest) -> List[Dict[str, Any]]:
        if request.method != "POST" or not BULK_PATH.match(request.path):
            raise Refused(f"no handler found for uri [{request.path}] and method [POST]")
        if request.content_type not in ("application/x-ndjson", "application/json"):
            raise Refused(f"Content-Type header [{request.content_type}] is not supported")
        text = request.body.decode("utf-8")
        if not text.endswith("\n"):
            raise Refused("The bulk request must be terminated by a newline [\\n]")
        lines = text[:-1].split("\n")
        if len(lines) % 2:
            raise Refused("Validation Failed: 1: no requests added;")
        documents = []
        for action, source in zip(lines[0::2], lines[1::2]):
            if json.loads(action) != {"create": {}}:
                raise Refused(f"only write ops with an op_type of create are allowed in data"
                              f" streams, got {action}")
            document = json.loads(source)
            if not isinstance(document, dict):
                raise Refused("Malformed content, must start with an object")
            documents.append(document)
        return documents

    def _create(self, document: Dict[str, Any]) -> Dict[str, Any]:
        target = ".ds-logs-app-default-2024.05.01-000001"
        error = self._refusal(document)
        if error is not None:
            status, kind, reason = error
            return {"create": {"_index": target, "_id": None, "status": status,
                               "error": {"type": kind, "reason": reason}}}
        self.index.append(document)
        return {"create": {
            "_index": target, "_id": f"id-{len(self.index)}", "_version": 1,
            "result": "created", "_shards": {"total": 2, "successful": 1, "failed": 0},
            "_seq_no": len(self.index) - 1, "_primary_term": 1, "status": 201,
        }}

    def _refusal(self, document: Dict[str, Any]) -> Optional[Tuple[int, str, str]]:
        stamp = document.get("@timestamp")
        try:
            datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return 400, "document_parsing_exception", "data stream timestamp field missing"
        message = str(document.get("message"))
        if "busy" in message and self._busy_seen.get(message, 0) < self.busy_times:
            self._busy_seen[message] = self._busy_seen.get(message, 0) + 1
            return 429, "es_rejected_execution_exception", "rejected execution of coordinating"
        fields = dict(_leaves(document))
        for path, kind in fields.items():
            mapped = self._mapping.get(path)
            if mapped is not None and mapped != kind:
                return (400, "document_parsing_exception",
                        f"failed to parse field [{path}] of type [{mapped}]")
        self._mapping.update(fields)
        return None


JSON = {"Content-Type": "application/json"}


def _leaves(value: Any, path: str = "") -> List[Tuple[str, str]]:
    """(dotted path, JSON type) of every leaf of a document, as dynamic mapping sees them."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    kind = ("boolean" if isinstance(value, bool) else "long" if isinstance(value, int)
            else "double" if isinstance(value, float) else "keyword" if isinstance(value, str)
            else "null" if value is None else "array")
    return [(path, kind)] if kind not in ("null", "array") else []

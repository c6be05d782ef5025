"""max_batch_bytes: no request body larger than it, whatever the records; and each batch request's
Idempotency-Key, the same across its retries."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List

import pytest
from faultserver import Action, FaultServer, fail_first, sequence

from ex_loghandlers import ExHTTPHandler
from ex_loghandlers._sizing import CUT_MARK, limited
from ex_loghandlers._wire import encoder_for

WAIT = 10.0


def record(i: int, size: int = 100) -> Dict[str, Any]:
    return {"message": f"record {i} " + "x" * size, "levelname": "INFO", "_ex_seq": i}


@pytest.mark.parametrize("wire_format", ["json", "ndjson", "otlp", "loki", "elasticsearch"])
def test_a_batch_too_large_is_split_and_nothing_is_lost(wire_format: str) -> None:
    encode = limited(encoder_for(wire_format, False, "_ex_"), 4096, "_ex_")
    records = [record(i) for i in range(200)]
    payloads = encode(records)
    assert len(payloads) > 1
    assert all(len(p.body) <= 4096 for p in payloads)
    sent = [r["_ex_seq"] for p in payloads for r in p.records]
    assert sent == list(range(200))  # all of them, in order


@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson", "otlp", "loki", "elasticsearch"])
def test_a_record_too_large_on_its_own_is_cut_and_marked(wire_format: str) -> None:
    encode = limited(encoder_for(wire_format, False, "_ex_"), 4096, "_ex_")
    huge = record(7, size=1_000_000)
    huge["_ex_traceback"] = "Traceback (most recent call last):\n" + "  frame\n" * 1000
    [payload] = encode([huge])
    assert len(payload.body) <= 4096
    [fields] = payload.records
    assert fields["_ex_truncated"] > 900_000
    assert fields["message"].startswith("record 7 xxx") and fields["message"].endswith(CUT_MARK)


@pytest.mark.parametrize("wire_format", ["form", "json", "ndjson", "otlp", "loki", "elasticsearch"])
def test_a_record_with_too_many_extra_fields_keeps_logging_s_own(
    logger: logging.Logger, wire_format: str,
) -> None:
    """Cutting texts is not enough: its extra fields go, the largest first, and what logging
    gives every record stays (a bare mark took their place: the server refused it)."""
    stored = b'{"errors":false,"items":[{"create":{"status":201}}]}'  # (elasticsearch reads it)
    with FaultServer(sequence([], then=Action.ok(200, body=stored))) as server:
        handler = ExHTTPHandler(url=server.url_for("/x"), wire_format=wire_format,
                                max_batch_bytes=4096)
        logger.addHandler(handler)
        extra = {f"field_{i:03}": f"value {i}" for i in range(150)}
        extra["field_big"] = "b" * 5000
        logger.warning("many fields", extra=extra)
        assert handler.flush(WAIT)
        [request] = server.requests()
    assert len(request.body) <= 4096
    text = json.dumps(request.records()[-1])  # (elasticsearch: after its action line)
    assert "many fields" in text and "WARNING" in text and logger.name in text
    assert "field_big" not in text  # the largest went first
    assert "field_000" in text  # and no more than had to
    assert handler.stats.sent == 1


def test_a_small_limit_is_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="max_batch_bytes must be at least 1024"):
        ExHTTPHandler(url="http://127.0.0.1:9/x", max_batch_bytes=100)


def test_a_huge_record_arrives_cut_rather_than_refused(logger: logging.Logger) -> None:
    def script(index: int, request: Any) -> Action:  # a server that refuses large bodies
        return Action.status(413) if len(request.body) > 8192 else Action.ok()

    with FaultServer(script) as server:
        handler = ExHTTPHandler(url=server.url_for("/x"), wire_format="json",
                                max_batch_bytes=8192)
        logger.addHandler(handler)
        logger.info("big %s", "y" * 500_000)
        logger.info("small")
        assert handler.flush(WAIT)
        messages = [str(r["message"]) for r in server.accepted_records()]
        assert messages[0].startswith("big yyy") and messages[0].endswith(CUT_MARK)
        assert messages[1] == "small"
        assert all(len(r.body) <= 8192 for r in server.requests())
        assert handler.stats.sent == 2 and handler.stats.failed == 0


def test_a_batch_keeps_its_idempotency_key_across_retries(logger: logging.Logger) -> None:
    with FaultServer(fail_first(1, Action.status(503, retry_after="0"))) as server:
        handler = ExHTTPHandler(url=server.url_for("/x"), wire_format="json", batch_size=500)
        logger.addHandler(handler)
        logger.info("first")
        assert handler.flush(WAIT)
        logger.info("second")
        assert handler.flush(WAIT)
        keys: List[str] = [r.headers["idempotency-key"] for r in server.requests()]
        bodies = [json.loads(r.body)[0]["message"] for r in server.requests()]
    assert bodies == ["first", "first", "second"]
    assert keys[0] == keys[1] != keys[2]  # a retry is the same request; a new batch is not


def test_form_requests_carry_no_idempotency_key(logger: logging.Logger) -> None:
    with FaultServer() as server:
        handler = ExHTTPHandler(url=server.url_for("/x"))
        logger.addHandler(handler)
        logger.info("one record, one request: its _ex_seq identifies it")
        assert handler.flush(WAIT)
        [request] = server.requests()
    assert "idempotency-key" not in request.headers

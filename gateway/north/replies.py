"""Parsing incoming command and request payloads, and answering them exactly once."""

from __future__ import annotations

import json
from typing import Any

import aiomqtt

from gateway.core.commands import CommandError
from gateway.north.message import Kind
from gateway.north.mqtt import MqttLink, response_info

MAX_PAYLOAD = 64 * 1024
MAX_TRANSACTION = 128


def parse(message: aiomqtt.Message, allowed: set[str]) -> tuple[dict[str, Any], str | None]:
    """The payload as a JSON object, and its transaction id; CommandError(bad_json) otherwise.

    The transaction is recovered whenever possible, so even a refusal can be matched
    to the command that caused it.
    """
    raw = message.payload
    if not isinstance(raw, bytes | bytearray):
        raw = str(raw).encode()
    if len(raw) > MAX_PAYLOAD:
        raise CommandError("bad_json", f"payload of {len(raw)} bytes is larger than {MAX_PAYLOAD}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("bad_json", "the payload must be a JSON object")
    transaction = data.get("transaction")
    if transaction is not None and (not isinstance(transaction, str) or len(transaction) > MAX_TRANSACTION):
        raise CommandError("bad_json", f"transaction must be a string of at most {MAX_TRANSACTION} characters")
    unknown = set(data) - allowed - {"transaction"}
    if unknown:
        raise CommandError(
            "bad_json",
            f"unknown field {sorted(unknown)[0]!r} (fields: {', '.join(sorted(allowed))})",
        ) from None
    return data, transaction


def transaction_of(message: aiomqtt.Message) -> str | None:
    """Best-effort transaction id of a payload that failed to parse."""
    try:
        data = json.loads(message.payload if isinstance(message.payload, bytes | bytearray) else b"")
    except (ValueError, UnicodeDecodeError, TypeError):
        return None
    value = data.get("transaction") if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_TRANSACTION else None


def answer(mqtt: MqttLink, message: aiomqtt.Message, default_topic: str, body: dict[str, Any]) -> None:
    """Publish the one answer: to the MQTT 5 response topic when given (with its correlation data)."""
    topic, correlation = response_info(message)
    properties: dict[str, Any] = {}
    if topic and not any(c in topic for c in "+#\0"):
        if correlation is not None:
            properties["correlation_data"] = correlation
    else:
        topic = default_topic
    mqtt.publish(topic, body, Kind.REPLY, qos=1, properties=properties)


def error_body(transaction: str | None, error: CommandError) -> dict[str, Any]:
    return {"transaction": transaction, "status": "error", "error": error.to_json()}

"""Parsing incoming command and request payloads, and answering them exactly once."""

from __future__ import annotations

from typing import Any

import aiomqtt

from gateway.core.commands import CommandError
from gateway.core.inputs import InputError, parse_json
from gateway.north.message import Kind
from gateway.north.mqtt import MqttLink, response_info

MAX_PAYLOAD = 64 * 1024
MAX_TRANSACTION = 128
MAX_RESPONSE_TOPIC = 256


def _payload(message: aiomqtt.Message) -> bytes | bytearray | str:
    raw = message.payload
    return raw if isinstance(raw, bytes | bytearray | str) else str(raw)


def parse(message: aiomqtt.Message, allowed: set[str]) -> tuple[dict[str, Any], str | None]:
    """The payload as a JSON object, and its transaction id; CommandError(bad_json | payload_too_large) otherwise.

    The transaction is recovered whenever possible, so even a refusal can be matched
    to the command that caused it.
    """
    try:
        data = parse_json(_payload(message), max_bytes=MAX_PAYLOAD)
    except InputError as exc:
        raise CommandError(exc.code, str(exc)) from None
    if not isinstance(data, dict):
        raise CommandError("bad_json", "the payload must be a JSON object")
    transaction = data.get("transaction")
    if transaction is not None and (not isinstance(transaction, str) or len(transaction) > MAX_TRANSACTION):
        raise CommandError("bad_json", f"transaction must be a string of at most {MAX_TRANSACTION} characters")
    unknown = set(data) - allowed - {"transaction"}
    if unknown:
        raise CommandError(
            "bad_json",
            f"unknown field {str(sorted(map(str, unknown))[0])[:40]!r} (fields: {', '.join(sorted(allowed))})",
        ) from None
    return data, transaction


def transaction_of(message: aiomqtt.Message) -> str | None:
    """Best-effort transaction id of a payload that failed to parse."""
    try:
        data = parse_json(_payload(message), max_bytes=MAX_PAYLOAD)
    except InputError:
        return None
    value = data.get("transaction") if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_TRANSACTION else None


def answer(mqtt: MqttLink, message: aiomqtt.Message, default_topic: str, body: dict[str, Any]) -> None:
    """Publish the one answer: to the MQTT 5 response topic when given (with its correlation data)."""
    topic, correlation = response_info(message)
    properties: dict[str, Any] = {}
    if topic and may_answer_on(mqtt, topic):
        if correlation is not None:
            properties["correlation_data"] = correlation
    else:
        topic = default_topic
    mqtt.publish(topic, body, Kind.REPLY, qos=1, properties=properties)


def may_answer_on(mqtt: MqttLink, topic: str) -> bool:
    """A response topic is the requester's own: never one of the trees the gateway speaks for.

    Otherwise a response topic could make the gateway publish onto a node's command
    topic, a device's state or its own status.
    """
    if len(topic) > MAX_RESPONSE_TOPIC or topic.startswith("$") or any(c in topic for c in "+#\0"):
        return False
    return not any(topic == root or topic.startswith(root + "/") for root in mqtt.session.owned)


def error_body(transaction: str | None, error: CommandError) -> dict[str, Any]:
    return {"transaction": transaction, "status": "error", "error": error.to_json()}


def busy_error(what: str) -> CommandError:
    return CommandError("busy", f"the gateway is handling too many {what} at once; try again shortly")


def internal_error(exc: Exception) -> CommandError:
    """An answer for a failure nobody foresaw: the sender still hears back, with a reason."""
    return CommandError("internal_error", f"the gateway failed to handle this ({type(exc).__name__}); see its log")

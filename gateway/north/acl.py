"""A mosquitto ACL file for one gateway: each client may use only its own topics.

The gateway gets its tree, the node topics it bridges and Home Assistant discovery;
each configured ESP32 node (username = node id) only its own topics; operators may
send commands and requests and read the tree, with MQTT 5 response topics under
`replies/<user>/`; viewers may only read; technicians may watch the nodes. Generated from the configuration, so it
follows the nodes and the base topic as they change.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config.model import GatewayConfig

REPLIES = "replies"  # operators' MQTT 5 response topics: replies/<user>/...
NODE_WRITES = ("telemetry", "status", "health", "info", "cmd/result")
NODE_READS = ("cmd", "maintenance")


def mosquitto_acl(
    config: GatewayConfig,
    source: str,
    operators: Sequence[str],
    viewers: Sequence[str],
    technicians: Sequence[str] = (),
) -> str:
    base = config.base_topic
    nodes = config.mqtt.node_prefix
    gateway_user = config.mqtt.username or config.client_id
    lines = [
        f"# Mosquitto ACL for CityEdge gateway {config.gateway.id}, made by `cityedge acl -c {source}`.",
        "# In mosquitto.conf: acl_file <this file>, allow_anonymous false and a password_file:",
        "# every client must log in, and may use only the topics granted to it here.",
        "",
        "# The gateway: its own tree, the nodes it bridges, Home Assistant discovery, answers to operators.",
        f"user {gateway_user}",
        f"topic readwrite {base}/#",
        f"topic readwrite {nodes}/#",
    ]
    if config.homeassistant.enabled:
        lines.append(f"topic readwrite {config.homeassistant.prefix}/#")
    lines += [f"topic write {REPLIES}/#", ""]
    for user in operators:
        lines += [
            f"# Operator {user}: commands and requests, the whole tree to read, answers under {REPLIES}/{user}/.",
            f"user {user}",
            f"topic read {base}/#",
            f"topic write {base}/+/set",
            f"topic write {base}/request/+",
            f"topic read {REPLIES}/{user}/#",
            "",
        ]
    for user in viewers:
        lines += [f"# Viewer {user}: reads the tree, changes nothing.", f"user {user}", f"topic read {base}/#", ""]
    for user in technicians:
        lines += [
            f"# Technician {user}: watches the nodes (`cityedge node monitor`), commands nothing.",
            f"user {user}",
            f"topic read {nodes}/#",
            "",
        ]
    if config.nodes:
        lines.append("# ESP32 nodes log in with their node id as username and reach only their own topics.")
    for node in config.nodes:
        prefix = f"{nodes}/{node.id}"
        lines.append(f"user {node.id}")
        lines += [f"topic write {prefix}/{kind}" for kind in NODE_WRITES]
        lines += [f"topic read {prefix}/{kind}" for kind in NODE_READS]
        lines += [f"topic read {nodes}/time", ""]
    return "\n".join(lines).rstrip() + "\n"

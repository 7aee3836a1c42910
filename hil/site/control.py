"""Run-time control of a running site over a local Unix socket: one JSON object per line each way.

Requests look like `{"op": "fault", "device": "feeder-meter", "set": {"timeout": true}}`;
answers are `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`. A Unix
socket keeps control local to the machine and guarded by file permissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from hil.site.emulated import Site

MAX_LINE = 64 * 1024
OPS = ("status", "fault", "clear", "reboot", "drop", "refuse", "noise", "stimulus", "set", "get")


class ControlServer:
    def __init__(self, site: Site, path: Path) -> None:
        self.site, self.path = site, path
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self.handle(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            return {"ok": True, "data": await self._dispatch(request)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"}

    async def _dispatch(self, r: dict[str, Any]) -> Any:
        op, site = r.get("op"), self.site
        if op == "status":
            return site.describe()
        if op == "fault":
            return site.set_fault(r["device"], dict(r["set"]))
        if op == "clear":
            site.clear_faults(r.get("device"))
            return None
        if op == "reboot":
            await site.reboot(r["device"], float(r.get("downtime", 2.0)))
            return None
        if op == "drop":
            return site.drop(r["link"])
        if op == "refuse":
            await site.refuse(r["link"], bool(r.get("on", True)))
            return None
        if op == "noise":
            site.noise(r["link"], int(r.get("bytes", 16)))
            return None
        if op == "stimulus":
            site.stimulus(r["device"], r["name"], dict(r.get("args", {})))
            return None
        if op == "set":
            site.set_value(r["device"], r["point"], r["value"])
            return None
        if op == "get":
            return site.get_value(r["device"], r["point"])
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")


async def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running site and return its answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=MAX_LINE), timeout)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), timeout))
        return answer
    finally:
        writer.close()

"""Finding the meters on an M-Bus segment, so an integrator can write the configuration.

- Primary scan: SND_NKE to each address; those that answer E5 are asked for a telegram,
  whose header gives the secondary address.
- Secondary search (wildcards): select with the digits found so far and F for the rest.
  No answer: nobody there. E5 and a clean RSP_UD: exactly one meter. A damaged answer (two
  or more meters answering at once): try each next digit, as EN 13757-3's search does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.south.driver import Timeout, TransactionError
from gateway.south.mbus import frame
from gateway.south.mbus.driver import MbusTransport
from gateway.south.mbus.records import Header, parse_rsp_ud

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Found:
    header: Header
    primary: int | None  # the address it answered at (primary scan), or None (secondary search)
    records: int


async def _read(line: MbusTransport, target: int, timeout: float) -> tuple[Header, int] | None:
    answer = await line.exchange(frame.req_ud2(target, True), timeout, "RSP_UD")
    if answer.kind != "long":
        return None
    telegram = parse_rsp_ud(answer.ci or 0, answer.data)
    return (telegram.header, len(telegram.records)) if telegram.header is not None else None


async def scan_primary(
    line: MbusTransport, addresses: range = range(251), timeout: float = 0.5, progress: Progress | None = None
) -> list[Found]:
    found: list[Found] = []
    for address in addresses:
        try:
            ack = await line.exchange(frame.snd_nke(address), timeout, "E5")
        except Timeout:
            continue
        except TransactionError as exc:
            if progress:
                progress(f"address {address}: damaged answer ({exc}); two meters with one address?")
            continue
        if ack.kind != "ack":
            continue
        try:
            read = await _read(line, address, timeout)
        except TransactionError as exc:
            if progress:
                progress(f"address {address}: answered E5 but no telegram ({exc})")
            continue
        if read is not None:
            found.append(Found(read[0], address, read[1]))
            if progress:
                progress(f"address {address}: {read[0].secondary}")
    return found


async def scan_secondary(line: MbusTransport, timeout: float = 0.5, progress: Progress | None = None) -> list[Found]:
    found: dict[str, Found] = {}
    pending = ["FFFFFFFF"]
    tried = 0
    while pending:
        pattern = pending.pop()
        tried += 1
        if tried > 2000:  # eight levels of ten digits cannot need more: a bus that keeps colliding
            raise TransactionError("the secondary search did not converge: a meter answering every selection?")
        outcome = await _probe(line, pattern, timeout)
        if outcome == "none":
            continue
        if isinstance(outcome, Found):
            found.setdefault(outcome.header.secondary, outcome)
            if progress:
                progress(f"{pattern}: {outcome.header.secondary}")
            continue
        level = pattern.find("F")
        if level < 0:
            if progress:
                progress(f"{pattern}: answers collide even with every digit given (two meters, one number?)")
            continue
        pending.extend(pattern[:level] + str(d) + pattern[level + 1 :] for d in range(9, -1, -1))
    await _deselect(line, timeout)
    return sorted(found.values(), key=lambda f: f.header.ident)


async def _probe(line: MbusTransport, pattern: str, timeout: float) -> str | Found:
    """none, collision, or the one meter that matches."""
    try:
        ack = await line.exchange(frame.select(pattern), timeout, "E5")
    except Timeout:
        return "none"
    except TransactionError:
        return "collision"
    if ack.kind != "ack":
        return "collision"
    try:
        read = await _read(line, frame.SELECTED, timeout)
    except Timeout:
        return "none"
    except TransactionError:
        return "collision"
    if read is None:
        return "collision"
    return Found(read[0], None, read[1])


async def _deselect(line: MbusTransport, timeout: float) -> None:
    with contextlib.suppress(TransactionError):
        await line.exchange(frame.snd_nke(frame.SELECTED), timeout, "E5")

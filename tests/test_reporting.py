"""Report strategies: on change with deadbands, periodic, on change with a maximum silence."""

from __future__ import annotations

from gateway.config.model import ReportSettings
from gateway.core.health import DeviceHealth, State
from gateway.core.reporting import Reporter


def settings(**kw: object) -> ReportSettings:
    return ReportSettings.model_validate(kw)


def test_change_with_absolute_and_percent_deadbands() -> None:
    r = Reporter(settings(mode="change", deadband=0.5, points={"energy": {"deadband_pct": 1}}))
    assert r.due({"v": 230.0, "energy": 1000.0}, {}, 0)  # first cycle
    assert not r.due({"v": 230.4, "energy": 1000.0}, {}, 1)
    assert r.due({"v": 230.6, "energy": 1000.0}, {}, 2)
    assert not r.due({"v": 230.6, "energy": 1009.0}, {}, 3)  # 0.9 % of 1000
    assert r.due({"v": 230.6, "energy": 1011.0}, {}, 4)
    assert r.due({"v": 230.6, "energy": 1011.0, "state": "on"}, {}, 5)  # a new point
    assert not r.due({"v": 230.6, "energy": 1011.0, "state": "on"}, {}, 500)  # no silence limit in change mode


def test_errors_and_non_numbers_always_count_as_change() -> None:
    r = Reporter(settings(mode="change", deadband=100))
    assert r.due({"mode": "auto", "on": True}, {}, 0)
    assert r.due({"mode": "manual", "on": True}, {}, 1)
    assert r.due({"mode": "manual", "on": False}, {}, 2)
    assert r.due({"mode": "manual"}, {"on": "timeout"}, 3)
    assert not r.due({"mode": "manual"}, {"on": "timeout"}, 4)


def test_change_or_silence_and_periodic() -> None:
    r = Reporter(settings(max_silence=10))
    assert r.due({"v": 1}, {}, 0)
    assert not r.due({"v": 1}, {}, 5)
    assert r.due({"v": 1}, {}, 10)
    periodic = Reporter(settings(mode="periodic"))
    assert all(periodic.due({"v": 1}, {}, t) for t in range(5))


def test_health_state_machine() -> None:
    h = DeviceHealth(poll=1.0, offline_after=3, max_backoff=8)
    assert h.cycle_done(ok=True, partial=False)  # first known state
    assert not h.cycle_done(ok=True, partial=False)
    assert h.cycle_done(ok=True, partial=True, reason="illegal_data_address") and h.state is State.DEGRADED
    assert h.cycle_done(ok=False, partial=False, reason="timeout") is False  # still degraded
    h.cycle_done(ok=False, partial=False, reason="timeout")
    assert h.cycle_done(ok=False, partial=False, reason="timeout") and h.state is State.OFFLINE
    backoffs = [h.backoff]
    for _ in range(6):
        h.cycle_done(ok=False, partial=False, reason="timeout")
        backoffs.append(h.backoff)
    assert backoffs == [1, 2, 4, 8, 8, 8, 8]
    assert all(0.8 * 8 <= h.next_probe_in() <= 1.2 * 8 for _ in range(50))
    assert h.cycle_done(ok=True, partial=False) and h.state is State.ONLINE and h.backoff == 0
    report = h.to_json()
    assert report["state"] == "online" and report["failed_cycles"] == 9 and report["consecutive_failures"] == 0

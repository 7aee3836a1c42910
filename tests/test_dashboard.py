"""The dashboard in Debian's Chromium, driven by Playwright, against an emulated site through the whole gateway:
every device shown, live values, an offline device with its reason, commands refused without a login and applied
(and audited) with one, an alarm acknowledged, a breaker opened by select-before-operate in two visible steps, an
override; and on a phone's screen. Set CITYEDGE_SCREENSHOTS=DIR to keep screenshots of the main views."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from gateway.core.events import CommandAudited
from hil.broker import MosquittoBroker
from hil.fixtures import SiteFactory
from tests.waiting import until
from tests.web_harness import PASSWORD, SITE, add_user, chromium, dashboard_url, running, site_file

SHOTS = os.environ.get("CITYEDGE_SCREENSHOTS")


async def _page(browser: Any) -> Any:
    """A desktop-sized page. The test's own probes (wait_for_function) are evaluated strings, which the dashboard's
    Content-Security-Policy forbids, rightly: the test context lets them through; test_dashboard_security checks
    the policy itself."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    return await context.new_page()


async def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def test_every_device_live_values_and_an_offline_device_with_its_reason(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = site_file(site, mosquitto, tmp_path)
    async with running(path) as gateway, chromium() as browser:
        page = await _page(browser)
        await page.goto(dashboard_url(gateway))
        for device in ("lamps", "meter", "relay"):
            await page.wait_for_selector(f'li[data-device="{device}"][data-state="online"]', timeout=15_000)
        assert await page.text_content("#who") == "read-only"
        # the meter's points, live: its voltage moves with the emulated noise, on screen, without a reload
        await page.click('li[data-device="meter"] .device-link')
        cell = 'tr[data-point="voltage_l1"] td.value'
        await page.wait_for_function(f"document.querySelector('{cell}')?.textContent.endsWith(' V')", timeout=10_000)
        first = await page.text_content(cell)
        await page.wait_for_function(
            f"document.querySelector('{cell}').textContent !== {first!r}", timeout=10_000
        )  # a new value arrived through the stream
        assert 200 < float((await page.text_content(cell) or "0").split()[0]) < 260
        await _shot(page, "dashboard")
        # the meter stops answering: offline with its reason, within the health interval of it happening
        site.set_fault("meter", {"timeout": True})
        offline = await page.wait_for_selector('li[data-device="meter"][data-state="offline"]', timeout=20_000)
        assert offline is not None
        assert "timeout" in (await offline.text_content() or "")
        assert "timeout" in (await page.text_content("#device-title") or "")
        devices = await page.eval_on_selector_all("#devices li", "items => items.map(i => i.dataset.device)")
        assert devices[0] == "meter"  # offline devices first
        await _shot(page, "dashboard-offline")


async def test_commands_need_a_login_and_are_applied_audited_and_acknowledged(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = site_file(site, mosquitto, tmp_path)
    add_user(tmp_path / "users.json", "ana")
    async with running(path) as gateway, chromium() as browser:
        audited: list[CommandAudited] = []
        gateway.bus.subscribe(CommandAudited, audited.append)
        page = await _page(browser)
        await page.goto(dashboard_url(gateway))
        await page.click('li[data-device="lamps"] .device-link')
        row = 'tr[data-point="ballast_0_arc_power"]'
        await page.fill(f"{row} input", "40")
        await page.click(f"{row} button.set")
        await page.wait_for_selector("#result.error", timeout=5_000)
        assert "login_required" in (await page.text_content("#result") or "")
        assert site.get_value("lamps", "ballast_0_arc_power") != 40
        # a wrong password, then the right one
        await page.click("#login-open")
        await page.fill("#login-user", "ana")
        await page.fill("#login-password", "not the password")
        await page.click("#login-submit")
        await page.wait_for_function("document.querySelector('#login-error').textContent.includes('bad_login')")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-submit")
        await page.wait_for_function("document.querySelector('#who').textContent === 'logged in: ana'")
        # a point set: applied, and audited with the user
        await page.fill(f"{row} input", "40")
        await page.click(f"{row} button.set")
        said = "document.querySelector('#result').textContent"
        await page.wait_for_function(f"{said}.includes('set ballast_0_arc_power: done')")
        await until(lambda: site.get_value("lamps", "ballast_0_arc_power") == 40, 5, "the level written")
        mine = [a for a in audited if a.status == "ok" and (a.sender or {}).get("user") == "ana"]
        assert mine and mine[0].sender == {"via": "dashboard", "user": "ana"} and mine[0].device == "lamps"
        # a lamp fails: its alarm appears; acknowledged by ana
        site.stimulus("lamps", "lamp_failure", {"ballast": 3})
        alarm = 'li[data-alarm="lamps.lamp-failure.ballast_3_lamp_failure"]'
        await page.wait_for_selector(f"{alarm} button.ack", timeout=15_000)
        await _shot(page, "dashboard-alarm")
        await page.click(f"{alarm} button.ack")
        await page.wait_for_selector(f"{alarm} .acked", timeout=10_000)
        assert "acknowledged by ana" in (await page.text_content(f"{alarm} .acked") or "")
        # the breaker: select, then operate, each step on screen
        await page.click('li[data-device="relay"] .device-link')
        control = 'tr[data-point="breaker_command"]'
        await page.select_option(f"{control} select", "open")
        assert await page.is_disabled(f"{control} button.operate")
        await page.click(f"{control} button.select")
        await page.wait_for_function(
            f"document.querySelector('{control} .step.done')?.textContent.startsWith('1 selected open')"
        )
        await _shot(page, "dashboard-select-before-operate")
        await page.click(f"{control} button.operate")
        await page.wait_for_function(f"[...document.querySelectorAll('{control} .step.done')].length === 2")
        await until(lambda: site.get_value("relay", "breaker_open") is True, 10, "the breaker open")
        selects = [a for a in audited if a.device == "relay" and a.selected is not None]
        assert selects and selects[0].sender == {"via": "dashboard", "user": "ana"}
        # an override of the street lamps, with its reason on screen
        await page.select_option("#override-target", "street")
        await page.fill("#override-level", "20")
        await page.click("#override-apply")
        await page.wait_for_function(
            "document.querySelector('li[data-target=\"street\"] .level')?.textContent === '20 %'", timeout=10_000
        )
        assert "override" in (await page.text_content('li[data-target="street"]') or "")
        await until(lambda: site.get_value("lamps", "group_0_arc_power") == 20, 10, "the override applied")


async def test_the_dashboard_on_a_phone_held_in_front_of_the_cabinet(
    site_factory: SiteFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    site = await site_factory(SITE)
    path = site_file(site, mosquitto, tmp_path)
    async with running(path) as gateway, chromium() as browser:
        context = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                            is_mobile=True, has_touch=True, bypass_csp=True)  # fmt: skip
        page = await context.new_page()
        await page.goto(dashboard_url(gateway))
        await page.wait_for_selector('li[data-device="relay"]', timeout=15_000)
        await page.tap('li[data-device="meter"] .device-link')
        await page.wait_for_selector('tr[data-point="voltage_l1"]')
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page is {wide} px wide on a 390 px screen: it scrolls sideways"
        height = await page.evaluate("document.querySelector('#login-open').getBoundingClientRect().height")
        assert height >= 36  # a button a thumb can hit
        await _shot(page, "dashboard-phone")
        await context.close()
        await asyncio.sleep(0)

# Boots the unchanged node firmware on the unix port, with fake machine and network modules.
# Run from the node's flash directory: micropython <this file>; sys.path has the firmware and the fakes.
import sys

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")  # the firmware (the node's flash)
sys.path.insert(1, sys.argv[2] if len(sys.argv) > 2 else ".")  # the fakes
import fake_machine  # noqa: E402
import fake_network  # noqa: E402

sys.modules["machine"] = fake_machine
sys.modules["network"] = fake_network

import asyncio  # noqa: E402


async def _watch():
    while True:
        fake_machine.check_watchdogs()
        await asyncio.sleep(1)


_run = asyncio.run


def _with_watchdog(coro):
    async def both():
        asyncio.create_task(_watch())
        await coro

    return _run(both())


asyncio.run = _with_watchdog
import app  # noqa: E402

app.run()

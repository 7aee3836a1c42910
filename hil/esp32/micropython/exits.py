# How an emulated ESP32 tells its host why it stopped, and how the host tells it why it boots.
# One contract for both hosts (hil/esp32/node.py NodeEmulator, hil/esp32/emulated_board.py EmulatedBoard) and both
# MicroPython programs (fake_machine.py, chip.py); plain constants, so MicroPython and CPython both import it.

# The micropython process's exit status: what the program asked the chip to do.
EXIT_RESET = 75  # machine.reset(): the chip restarts (esp_restart, "rst:0xc (SW_CPU_RESET)")
EXIT_DEEPSLEEP = 76  # machine.deepsleep(): the chip sleeps, then boots
EXIT_SOFT = 77  # machine.soft_reset(), or Ctrl-D in the friendly REPL: MicroPython restarts, the chip does not
EXIT_SOFT_RAW = 78  # Ctrl-D in the raw REPL: a soft reboot that returns to the raw REPL
EXIT_WATCHDOG = 85  # a watchdog that was not fed in time

# How the board boots next after each exit status. Any other status means the process died:
# the host then boots it as it decided (a power cycle, pulling the plug, EN from esptool: "power_on").
NEXT_BOOT = {
    EXIT_RESET: "reset",
    EXIT_DEEPSLEEP: "deep_sleep",
    EXIT_SOFT: "soft",
    EXIT_SOFT_RAW: "soft_raw",
    EXIT_WATCHDOG: "watchdog",
}
SOFT_BOOTS = ("soft", "soft_raw")  # no chip reset: machine.reset_cause() still says why the chip last booted

# machine.reset_cause() after each chip-level boot, as MicroPython's ESP32 port reports it: machine.reset()
# is a software CPU reset, which the port reports as SOFT_RESET (ports/esp32/modmachine.c).
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
RESET_CAUSES = {"power_on": PWRON_RESET, "reset": SOFT_RESET, "watchdog": WDT_RESET, "deep_sleep": DEEPSLEEP_RESET}

"""Emulated ESP32s: a node running the real firmware (`node.py`) and a board on a serial port for the
technician tools (`emulated_board.py`, with its bootloader in `esprom.py`), both the MicroPython unix
port with fake hardware (`micropython/`), sharing one exit-code and reset-cause contract
(`micropython/exits.py`)."""

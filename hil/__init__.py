"""Hardware-in-the-loop harness: device emulators, fault injection, scenarios."""

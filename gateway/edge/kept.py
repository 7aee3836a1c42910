"""What edge features keep across restarts (the alarm list, the indicators): a JSON file next to the outbox,
replaced atomically, so a power cut leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("cityedge.edge")


def keep(path: Path, data: Any, what: str) -> None:
    """Write `data` to `path`; a full or read-only disk is logged: the feature still works, it is not kept."""
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("cannot keep %s in %s: %s", what, path, exc)

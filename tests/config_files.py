"""Writing a test's configuration and its profiles into a directory, as an integrator's site would have them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_site(tmp: Path, config: str, profiles: Mapping[str, str], file: str) -> tuple[Path, Path]:
    """`config` as tmp/site.yaml and each profile as tmp/profiles/<name>.yaml; (the config, the file `file` names)."""
    path = tmp / "site.yaml"
    path.write_text(config)
    (tmp / "profiles").mkdir()
    for name, text in profiles.items():
        (tmp / "profiles" / f"{name}.yaml").write_text(text)
    return path, path if file == "config" else tmp / "profiles" / f"{file}.yaml"

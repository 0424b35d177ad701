"""The bundle as `kubectl apply -k .` installs it, optionally with other install settings.

    build()                                  # kubectl kustomize of the repository
    build({"repositories": "...", ...})      # the same, its settings.env values replaced

With settings, the bundle is rebuilt through a scratch overlay that patches the ConfigMap
canary-rollout-settings and applies replacements.yaml again, which is what copies the
settings into the EventListener and the Tasks (hack/quickstart.sh does the same).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


class BuildFailed(Exception):
    """kustomize could not build the bundle; the message is its last line."""


def kustomize(directory: Path) -> list[dict]:
    proc = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True)
    if proc.returncode:
        raise BuildFailed((proc.stderr.strip().splitlines() or ["kustomize failed"])[-1])
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def build(settings: dict[str, str] | None = None) -> list[dict]:
    if not settings:
        return kustomize(ROOT)
    with tempfile.TemporaryDirectory(prefix="bundle-") as scratch:
        overlay = Path(scratch)
        (overlay / "replacements.yaml").write_text((ROOT / "replacements.yaml").read_text())
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [os.path.relpath(ROOT, overlay)],
            "patches": [{"target": {"kind": "ConfigMap", "name": "canary-rollout-settings"},
                         "patch": yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "canary-rollout-settings"}, "data": settings})}],
            "replacements": [{"path": "replacements.yaml"}],
        }))
        return kustomize(overlay)

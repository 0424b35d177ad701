"""The install's settings: the ConfigMap canary-rollout-settings (triggers/settings.env).

Written by the install's administrators, so trusted: which repositories roll out which
service, where images go, the caps on what an app's settings file may ask for, and what a
service's candidates may use beyond their serving version's rights. read-settings, deploy
and canary-start read it; the EventListener gets `repositories` and `git-base-url`, and
the Tasks their images, through kustomize replacements (kustomization.yaml).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .common import BadInput, log
from .kube import CONFIGMAPS, Kube
from .privileges import Allowance

NAME = "canary-rollout-settings"
DEFAULT_SETTINGS_FILE = ".iter8-tekton.yaml"
# One entry of `repositories`: SERVICE=OWNER/NAME@BRANCH[:SETTINGS-FILE]. The EventListener's
# CEL uses the same pattern (triggers/eventlistener.yaml), so both read a list alike.
ENTRY = re.compile(r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)=(?P<repository>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)"
                   r"@(?P<branch>[^=:@ ,]+)(:(?P<file>[.]?[A-Za-z0-9_-][A-Za-z0-9._-]*(/[.]?[A-Za-z0-9_-][A-Za-z0-9._-]*)*))?$")
# Keys only kustomize reads (the Tasks' images, kustomization.yaml replacements).
IMAGE_KEYS = ("steps-image", "git-image", "builder-image")


@dataclass(frozen=True)
class Binding:
    """A listed repository and branch, and the one service its settings file may roll out."""

    service: str
    repository: str  # OWNER/NAME
    branch: str
    settings_file: str = DEFAULT_SETTINGS_FILE

    @property
    def folder(self) -> str:
        """The app's folder: what a push must touch to roll it out ('' for the whole repository)."""
        return self.settings_file.rpartition("/")[0] + "/" if "/" in self.settings_file else ""

    def __str__(self) -> str:
        return f"{self.service}={self.repository}@{self.branch}:{self.settings_file}"


def parse_repositories(text: str) -> tuple[list[Binding], list[str]]:
    """The bindings, and one line per entry that binds nothing (it starts no run)."""
    bindings, problems = [], []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        match = ENTRY.fullmatch(entry)
        if not match:
            problems.append(f"repositories entry {entry!r} is not SERVICE=OWNER/NAME@BRANCH[:SETTINGS-FILE]; it starts no run")
            continue
        bindings.append(Binding(match["service"], match["repository"], match["branch"], match["file"] or DEFAULT_SETTINGS_FILE))
    return bindings, problems


def _pairs(text: str, key: str) -> dict[str, frozenset[str]]:
    """SERVICE:NAME,... as {service: {names}}."""
    out: dict[str, set[str]] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        service, sep, name = item.partition(":")
        if not sep or not service.strip() or not name.strip():
            raise BadInput(f"install setting {key}: {item!r} is not SERVICE:NAME; fix the ConfigMap {NAME}")
        out.setdefault(service.strip(), set()).add(name.strip())
    return {k: frozenset(v) for k, v in out.items()}


@dataclass
class Install:
    """Defaults, allowlists and caps. The key of each field is its name with dashes."""

    repositories: str = ""
    git_base_url: str = "https://github.com"
    image_registry: str = ""
    insecure_registry: str = "false"
    builder_extra_args: tuple[str, ...] = ()
    default_load_url: str = ""
    default_load_host: str = ""
    load_hosts: tuple[str, ...] = ()
    max_load_rate: float = 100
    max_load_concurrency: int = 16
    max_experiment_timeout: int = 3600
    max_rollout_timeout: int = 1800
    max_keep_runs: int = 20
    max_interval: int = 300
    max_iterations: int = 100
    candidate_service_accounts: dict[str, frozenset[str]] = field(default_factory=dict)
    candidate_secrets: dict[str, frozenset[str]] = field(default_factory=dict)
    dashboard_url: str = ""
    github_api_url: str = "https://api.github.com"

    @classmethod
    def from_data(cls, data: dict[str, str]) -> "Install":
        known = {f.name.replace("_", "-"): f for f in fields(cls)}
        for key in sorted(set(data) - set(known) - set(IMAGE_KEYS)):
            log(f"warning: the install setting {key} is unknown (ConfigMap {NAME}); it is ignored")
        values = {}
        for key, spec in known.items():
            raw = (data.get(key) or "").strip()
            if not raw:
                continue
            if spec.type.startswith("dict"):
                values[spec.name] = _pairs(raw, key)
            elif spec.type.startswith("tuple"):
                values[spec.name] = tuple(raw.split()) if key == "builder-extra-args" else tuple(
                    h.strip() for h in raw.split(",") if h.strip())
            else:
                kind = {"str": str, "int": int, "float": float}[spec.type]
                try:
                    values[spec.name] = kind(raw)
                    if kind is float and not math.isfinite(values[spec.name]):
                        raise ValueError(raw)
                except ValueError:
                    raise BadInput(f"install setting {key}={raw!r} is not a finite {kind.__name__}; fix the ConfigMap {NAME}") from None
        return cls(**values)

    def bindings(self) -> list[Binding]:
        return parse_repositories(self.repositories)[0]

    def allowance(self, service: str) -> Allowance:
        return Allowance(self.candidate_service_accounts.get(service, frozenset()), self.candidate_secrets.get(service, frozenset()))


def env_file(path: Path) -> dict[str, str]:
    """A KEY=VALUE file, as kustomize's configMapGenerator `envs:` reads settings.env."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def add_arguments(p) -> None:
    """--install-settings / --install-settings-file, for the steps that read the install's settings."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--install-settings", default=NAME, help="the install's ConfigMap (default: %(default)s)")
    which.add_argument("--install-settings-file", help="read the install's settings from a KEY=VALUE file instead")


def read(namespace: str, name: str = NAME, file: str | None = None, kube: Kube | None = None) -> Install:
    """The install's settings from the ConfigMap in the run's namespace, or from a KEY=VALUE file."""
    if file:
        return Install.from_data(env_file(Path(file)))
    config = (kube or Kube()).get(CONFIGMAPS, namespace, name)
    if config is None:
        raise BadInput(f"ConfigMap {namespace}/{name} does not exist; install the bundle (kubectl apply -k)")
    return Install.from_data(config.get("data") or {})

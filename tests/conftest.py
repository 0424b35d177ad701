"""Shared fixtures. CANARY_STRICT=1 (set by .ci/run) turns every 'missing tool or schema' skip into a failure."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
# A stopped step must exit before the pod's 30 s grace period ends in SIGKILL. Tests assert
# that bound with room for a busy machine; hack/bench_steps.py measures the real figure
# (about 0.1 s) against the documented target of 2 s.
STOPS_WITHIN = 10.0
STRICT = os.environ.get("CANARY_STRICT") == "1"


def need(condition: object, why: str) -> None:
    """Skip (or, under CANARY_STRICT=1, fail) when something a test needs is missing."""
    if not condition:
        if STRICT:
            pytest.fail(f"missing: {why} (CANARY_STRICT=1 forbids skipping)")
        pytest.skip(f"missing: {why}")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path, f"the {name} command; run the README's test command, which installs it")
    return path


@pytest.fixture
def run_step(tmp_path):
    """Run `python -m steps.<name> args...` as a separate process, as Tekton would."""

    def run(name: str, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", f"steps.{name}", *args],
            capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT, check=False,
        )

    return run


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def fake_api(tmp_path, monkeypatch):
    """A running FakeApi; the steps find it through KUBECONFIG and retry quickly."""
    from fakeapi import FakeApi

    api = FakeApi().start()
    monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBE_RETRY_BASE_SECONDS", "0.001")
    yield api
    api.stop()


@pytest.fixture
def step(capsys):
    """Run a step's main() in this process like its console script: exit code, stdout, stderr."""
    from steps.common import run

    def invoke(name: str, *args: str) -> Result:
        module = importlib.import_module(f"steps.{name}")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run(module.main, list(args))
        captured = capsys.readouterr()
        return Result(exited.value.code, captured.out, captured.err)

    return invoke


@pytest.fixture
def start_step():
    """Start `python -m steps.<name>` in the background (a real process, as in a Tekton step)."""
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"steps.{name}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def checkout(tmp_path: Path, app: str = "reviews") -> Path:
    """A copy of a sample app's repository (tests/apps/APP) to change and read."""
    target = tmp_path / "checkout"
    shutil.copytree(APPS / app, target)
    return target


def add_resources(folder: Path, files: dict[str, str]) -> None:
    """Write files into a kustomize folder and list them under its `resources`."""
    import yaml

    path = folder / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    for filename, text in files.items():
        (folder / filename).write_text(text)
        kustomization["resources"].append(filename)
    path.write_text(yaml.safe_dump(kustomization))


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pytest_terminal_summary(terminalreporter):
    """Print what some tests measure: the fault-injection matrix, the step image's size."""
    matrix = getattr(sys.modules.get("test_faults"), "MATRIX", [])
    if matrix:
        terminalreporter.section("fault injection: faults tried x outcome")
        for row in matrix:
            terminalreporter.write_line("{:<18} {:<26} {:<16} {:<7} {}".format(*row))
    report = getattr(sys.modules.get("test_image"), "REPORT", [])
    if report:
        terminalreporter.section("step image")
        for line in report:
            terminalreporter.write_line(line)

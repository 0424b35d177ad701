"""Every step stops within 2 s of SIGTERM with exit 143 and one line, wherever it is blocked.

Tekton deletes the pod of a TaskRun that timed out or whose run was cancelled; the
entrypoint forwards the pod's SIGTERM to the step's whole process group
(tektoncd/pipeline v1.15.0 cmd/entrypoint/runner.go realRunner.Run: Setpgid, then
syscall.Kill(-pid, signal)), and the pod has 30 s (the default grace period: Tekton sets
none) before SIGKILL. (load exits 0 on SIGTERM: stopping is its normal end; its test and
wait_completion's, which also writes results and the stop file, are in their own files.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cluster import NS, deployment, experiment_v2, pipeline_run, service, v2_running
from conftest import ROOT, STOPS_WITHIN, wait_for

B, C = "reviews-v1", "reviews-3f2a1bc"


def start(name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a step that does not stop can be made to print where it is (SIGABRT).
    return subprocess.Popen([sys.executable, "-m", f"steps.{name}", *args], cwd=ROOT, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})


def communicate_or_dump(proc: subprocess.Popen) -> tuple[str, str]:
    """The step's output once it exits; if it has not within 10 s, fail with where it hangs."""
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack to stderr
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"the step did not exit within 10 s of SIGTERM; its stacks:\n{err}") from None


def blocked(fake_api, tmp_path, name):
    """Start the step where it blocks; return the process and a condition that says it is there."""
    api = fake_api
    hang = lambda verb, resource: api.inject(verb, resource, action="hang", delay=60)  # noqa: E731
    called = lambda verb, resource: lambda: api.calls(verb, resource)  # noqa: E731
    if name == "settings":
        hang("get", "configmaps")
        (tmp_path / "co").mkdir()
        return start("settings", "--namespace", NS, "--checkout", str(tmp_path / "co"), "--version", "3f2a1bc"), called("get", "configmaps")
    if name == "doctor":
        hang("get", "customresourcedefinitions")
        return start("doctor", "--namespace", NS, "--service", "reviews"), called("get", "customresourcedefinitions")
    if name == "lock":
        api.put("pipelineruns", pipeline_run("other"))
        api.put("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": "canary-rollout-reviews", "namespace": NS}, "spec": {"holderIdentity": "other"}})
        proc = start("lock", "acquire", "--namespace", NS, "--service", "reviews", "--run", "me", "--poll", "0.2")
        return proc, lambda: len(api.calls("get", "leases")) >= 2
    if name == "create_experiment":
        hang("get", "services")
        return start("create_experiment", "--namespace", NS, "--service", "reviews", "--candidate", C), called("get", "services")
    if name == "deploy":
        api.put("services", service())
        api.put("deployments", deployment("reviews", "v1"))  # the serving version it compares with
        api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary-rollout-settings", "namespace": NS}})
        return (start("deploy", "--namespace", NS, "--service", "reviews", "--deployment", "reviews",
                      "--kustomize-dir", str(ROOT / "tests/apps/reviews/kustomize"), "--version", "3f2a1bc",
                      "--image", "registry.example.com/reviews@sha256:" + "ab" * 32),
                called("watch", "deployments"))  # no controller: the candidate never becomes available
    if name == "cleanup":
        api.put("deployments", deployment(B, "v1"))
        api.put("deployments", deployment(C, "3f2a1bc"))
        running = experiment_v2(C, B, C, v2_running(B, C, 2, 20))
        running["metadata"]["labels"] = {"iter8-tekton.dev/run": "r1"}
        api.put("experiments", running)  # no iter8: the rollback never completes
        return start("cleanup", "--namespace", NS, "--run", "r1", "--roll-back-unfinished", "60"), called("watch", "experiments")
    if name == "prune":
        hang("list", "pipelineruns")
        return start("prune", "--namespace", NS, "--service", "reviews", "--run", "r1"), called("list", "pipelineruns")
    if name == "patch_kustomize":
        fakebin = tmp_path / "bin"
        fakebin.mkdir()
        marker = tmp_path / "started"
        (fakebin / "kustomize").write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 60\n")
        (fakebin / "kustomize").chmod(0o755)
        proc = start("patch_kustomize", "--kustomize-dir", str(ROOT / "tests/apps/reviews/kustomize"), "--version", "v2",
                     "--image", "registry.example.com/reviews:2", env={"PATH": f"{fakebin}:{os.environ['PATH']}"})
        return proc, marker.exists
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["settings", "doctor", "lock", "create_experiment", "deploy", "cleanup", "prune", "patch_kustomize"])
def test_sigterm_ends_a_blocked_step_at_once(fake_api, tmp_path, name):
    proc, there = blocked(fake_api, tmp_path, name)
    try:
        wait_for(there, timeout=30, what=f"{name} to block")
        time.sleep(0.2)
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = communicate_or_dump(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - signalled < STOPS_WITHIN
    assert proc.returncode == 143, (out, err)
    assert err.strip().splitlines()[-1] == "error: stopped by SIGTERM (the task timed out or the run was cancelled)"
    assert "Traceback" not in err


def test_a_step_whose_unwinding_hangs_still_stops_at_once(tmp_path):
    """SIGTERM raises Stopped wherever the main thread is, which may be inside a library
    holding a lock that its own clean-up then waits for (urllib3's connection pool): a step
    that cannot unwind still ends with exit 143 and its one line, before the pod's 30 s."""
    ready = tmp_path / "ready"
    program = (
        "import threading, pathlib\n"
        "from steps.common import run\n"
        "def main(argv):\n"
        "    held = threading.Lock(); held.acquire()\n"
        "    try:\n"
        f"        pathlib.Path({str(ready)!r}).touch()\n"
        "        threading.Event().wait()\n"
        "    finally:\n"
        "        held.acquire()  # never returns: the lock is this thread's own\n"
        "run(main)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        wait_for(ready.exists, timeout=30, what="the program to start")
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = communicate_or_dump(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - signalled < STOPS_WITHIN
    assert proc.returncode == 143, (out, err)
    assert err.strip().splitlines() == ["error: stopped by SIGTERM (the task timed out or the run was cancelled)"]


def test_commit_status_stops_while_github_is_slow(httpserver, tmp_path):
    import threading

    from werkzeug import Response

    arrived = threading.Event()

    def slow(request):
        arrived.set()
        time.sleep(3)
        return Response("{}", status=201)

    httpserver.expect_request("/repos/example/reviews/statuses/" + "a" * 40).respond_with_handler(slow)
    proc = start("commit_status", "--repo-url", "https://github.com/example/reviews", "--commit", "a" * 40, "--namespace", NS,
                 "--run", "r1", "--phase", "start", "--api-url", httpserver.url_for("/").rstrip("/"), env={"GITHUB_TOKEN": "t"})
    assert arrived.wait(30), "the request to GitHub never arrived"
    signalled = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - signalled < STOPS_WITHIN
    assert proc.returncode == 143 and err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")

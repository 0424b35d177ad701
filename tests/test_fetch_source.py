"""The fetch-source Task's script, run by sh with the host's git (the git image runs the same
script: test_image.py): the checks before it clones, and SIGTERM while git is fetching."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import yaml

from conftest import ROOT, STOPS_WITHIN, need_tool, wait_for

SCRIPT = yaml.safe_load((ROOT / "tasks" / "fetch-source.yaml").read_text())["spec"]["steps"][0]["script"]


def fetch(tmp_path, url: str, **env) -> subprocess.Popen:
    need_tool("git")
    (tmp_path / "results").mkdir(exist_ok=True)
    workspace = env.pop("WORKSPACE", str(tmp_path / "workspace"))
    os.makedirs(workspace, exist_ok=True)
    return subprocess.Popen(["sh", "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env={
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "REPO_URL": url, "REVISION": "3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f",
        "WORKSPACE": workspace, "SUBDIRECTORY": "src", "RESULT_COMMIT": str(tmp_path / "results" / "commit"),
        "RESULT_SHORT_SHA": str(tmp_path / "results" / "short-sha"), **env})


@pytest.mark.parametrize("url", ["ssh://git@github.com/example/reviews.git", "git@github.com:example/reviews.git"])
def test_ssh_urls_are_refused_with_one_line(tmp_path, url):
    out, err = fetch(tmp_path, url).communicate(timeout=30)
    assert err.strip().splitlines() == [f"error: url {url}: ssh is not supported (the image has no ssh client); use the https:// clone URL"]


def test_an_unwritable_workspace_is_one_clear_line(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: stand in for "not writable" with a read-only mount point
        workspace = "/proc/self"
    else:
        workspace = str(tmp_path / "ro")
        os.makedirs(workspace)
        os.chmod(workspace, 0o500)
    proc = fetch(tmp_path, "https://github.com/example/reviews.git", WORKSPACE=workspace)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        f"error: the workspace {workspace} is not writable by uid 10001: set the PipelineRun's podTemplate "
        "securityContext.fsGroup: 10001, or use storage that honours fsGroup"]


def test_sigterm_while_git_fetches_stops_at_once(tmp_path):
    """Tekton deletes the pod of a timed-out or cancelled TaskRun and its entrypoint forwards
    SIGTERM to the step's process group (tektoncd/pipeline v1.15.0 cmd/entrypoint/runner.go
    realRunner.Run: Setpgid, then syscall.Kill(-pid, signal))."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()  # accepts, never answers
    proc = fetch(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}/app.git")
    wait_for(lambda: held, timeout=20, what="git to connect")
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < STOPS_WITHIN
    assert proc.returncode == 143 and "error: stopped by SIGTERM" in err
    listener.close()

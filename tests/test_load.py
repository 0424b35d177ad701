"""load drives the real `hey` against a local HTTP server and stops on every signal it should."""

from __future__ import annotations

import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster import NS, V2, experiment_v2, v2_completed, v2_running
from conftest import STOPS_WITHIN, need_tool, wait_for

B, C = "reviews-v1", "reviews-3f2a1bc"


class App:
    """A local stand-in for the service under test: counts requests, answers `status`."""

    def __init__(self):
        self.count = 0
        self.status = 200
        self.hosts: set[str] = set()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                app.count += 1
                app.hosts.add(self.headers.get("Host", ""))
                status = app.status(app.count) if callable(app.status) else app.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/productpage"


@pytest.fixture
def app():
    need_tool("hey")
    server = App()
    yield server
    server.server.shutdown()


def load_args(app, tmp_path, *extra):
    return ("--url", app.url, "--rate", "20", "--concurrency", "2", "--stop-file", str(tmp_path / "stop"), *extra)


def test_progress_lines_and_summary(app, start_step, tmp_path):
    proc = start_step("load", *load_args(app, tmp_path, "--max-duration", "3", "--round-seconds", "1", "--host", "reviews.example.com"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rounds = [line for line in out.splitlines() if "responses in" in line and "total:" not in line]
    assert len(rounds) >= 3
    assert all("non-2xx" in line and "p50" in line and "p95" in line and "p99" in line for line in rounds)
    assert "stopping: --max-duration 3s passed" in out
    total = [line for line in out.splitlines() if "total:" in line]
    assert len(total) == 1 and "0 non-2xx" in total[0]
    assert app.count >= 40  # 20/s for 3 s, with slack for a busy machine; the benchmark measures the rate
    assert app.hosts == {"reviews.example.com"}


def test_stop_file_stops_it_quickly(app, start_step, tmp_path):
    proc = start_step("load", *load_args(app, tmp_path))
    wait_for(lambda: app.count > 5, what="the first requests")
    (tmp_path / "stop").touch()
    stopped = time.monotonic()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - stopped < STOPS_WITHIN
    assert "stopping: the stop file appeared" in out


def test_sigterm_stops_it_and_hey_and_prints_the_summary(app, start_step, tmp_path):
    """Tekton's entrypoint forwards SIGTERM to the step's process group only
    (tektoncd/pipeline v1.15.0 cmd/entrypoint/runner.go, realRunner.Run); hey runs in its own
    session, so load must stop it."""
    proc = start_step("load", *load_args(app, tmp_path))
    wait_for(lambda: app.count > 5, what="the first requests")
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - signalled < STOPS_WITHIN
    assert proc.returncode == 0, err
    assert "stopping: SIGTERM" in out and "total:" in out
    served = app.count
    time.sleep(0.5)
    assert app.count == served, "hey kept sending after load exited"


def test_experiment_completion_stops_it(app, fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    proc = start_step("load", *load_args(app, tmp_path, "--namespace", NS, "--experiment", C))
    wait_for(lambda: app.count > 5, what="the first requests")
    fake_api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"stopping: experiment {C} completed" in out


def test_non_2xx_are_counted(app, start_step, tmp_path):
    app.status = lambda n: 503 if n % 2 else 200
    proc = start_step("load", *load_args(app, tmp_path, "--max-duration", "2"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    total = next(line for line in out.splitlines() if "total:" in line)
    responses, non_2xx = map(int, re.search(r"total: (\d+) responses .*, (\d+) non-2xx", total).groups())
    assert responses > 0 and abs(non_2xx - responses / 2) <= 2


def test_zero_successes_is_an_error(app, start_step, tmp_path):
    app.status = 500
    proc = start_step("load", *load_args(app, tmp_path, "--max-duration", "1"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "no successful (2xx) responses" in err and len(err.strip().splitlines()) == 1


def test_unreachable_target_reports_why(start_step, tmp_path):
    need_tool("hey")
    proc = start_step("load", "--url", "http://127.0.0.1:9/", "--max-duration", "1", "--rate", "5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "connection refused" in out
    assert "no successful (2xx) responses" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--url", "ftp://example.com/"), "is not an http(s) URL"),
        (("--url", "http://127.0.0.1/", "--rate", "0"), "must be positive"),
        (("--url", "http://127.0.0.1/", "--namespace", NS), "go together"),
        (("--url", "http://127.0.0.1/", "--hey", "no-such-hey"), "no-such-hey is not installed"),
        (("--url", "http://127.0.0.1/", "--rate", "ten"), "invalid float value"),
    ],
)
def test_bad_input(step, args, message):
    result = step("load", *args)
    assert result.code == 2 and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


def test_missing_experiment(app, fake_api, step):
    result = step("load", "--url", app.url, "--namespace", NS, "--experiment", C)
    assert result.code == 2 and "does not exist" in result.err
    assert app.count == 0


@pytest.mark.parametrize("fault", ["status", "drop", "gone", "cut"])
def test_experiment_watch_faults_never_stop_the_load_early(app, fake_api, start_step, tmp_path, fault):
    """When the watch keeps failing, load warns and goes on until another stop condition."""
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    fake_api.inject("watch", "experiments", action=fault, times=None)
    proc = start_step("load", *load_args(app, tmp_path, "--namespace", NS, "--experiment", C, "--max-duration", "3"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping: --max-duration 3s passed" in out and app.count > 20
    assert "warning: stopped watching experiment" in out


def test_a_passing_fault_on_reading_the_experiment_is_retried(app, fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100))))
    fake_api.inject("get", "experiments", status=503, times=2)
    proc = start_step("load", *load_args(app, tmp_path, "--namespace", NS, "--experiment", C))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "retrying" in out and f"stopping: experiment {C} completed" in out

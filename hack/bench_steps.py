#!/usr/bin/env python3
"""Benchmark the step programs; prints figures, asserts nothing (these machines are noisy).

    .venv/bin/python hack/bench_steps.py [--seconds 10] [--rate 50] [--long-wait 60]

1. load's achieved rate against the requested rate and against raw hey, same local server
   (target: >= 95% of both);
2. the delay from the experiment completing to wait_completion's exit and to load's exit
   (targets: < 1 s and < 2 s);
3. the API requests wait_completion makes while an experiment runs for a short and a long
   time with a status change every second (target: the same number, not growing with time);
4. how far wait_completion's --timeout overshoots when the server never ends the watch,
   silent or sending bookmarks (target: < 1 s);
5. the time from SIGTERM (to the process group, as Tekton's entrypoint sends it) to the exit
   of wait_completion and of load (target: < 2 s);
6. read-settings on the sample app (tests/apps/reviews): the settings file, the kustomize
   allowlist, two kustomize builds and the comparison with the serving version read from the
   API (target: < 2 s, Python's start-up included).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cluster import NS, V2, deployment, experiment_v2, service, v2_completed, v2_running  # noqa: E402
from fakeapi import FakeApi  # noqa: E402

B, C = "reviews-v1", "reviews-3f2a1bc"


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def app_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def step(name: str, *args: str, env: dict, session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"steps.{name}", *args], cwd=ROOT, env=env, start_new_session=session,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def bench_rate(url: str, seconds: float, rate: float, env: dict) -> None:
    concurrency = 2
    raw = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-q", f"{rate / concurrency:g}", "-o", "csv", url],
                         capture_output=True, text=True, check=True)
    raw_rate = (len(raw.stdout.splitlines()) - 1) / seconds
    proc = step("load", "--url", url, "--rate", f"{rate:g}", "--concurrency", str(concurrency),
                "--max-duration", f"{seconds:g}", env=env)
    out, err = proc.communicate()
    match = re.search(r"total: (\d+) responses in ([\d.]+)s", out)
    if proc.returncode or not match:
        sys.exit(f"load failed: {err.strip()}")
    load_rate = int(match[1]) / float(match[2])
    print(f"1. load rate: requested {rate:g}/s, load {load_rate:.1f}/s, raw hey {raw_rate:.1f}/s "
          f"-> {100 * load_rate / rate:.1f}% of requested, {100 * load_rate / raw_rate:.1f}% of raw hey (target >= 95%)")


def watching(api: FakeApi, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(api.calls("watch", "experiments")) < count:
        if time.monotonic() > deadline:
            sys.exit("the steps never started watching the experiment")
        time.sleep(0.01)


def bench_stop_delay(url: str, env: dict, tmp: Path) -> None:
    api = FakeApi().start()
    env = {**env, "KUBECONFIG": str(api.write_kubeconfig(tmp / "kubeconfig-delay"))}
    api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    waiter = step("wait_completion", "--namespace", NS, "--experiment", C, "--results-dir", str(tmp / "r"), env=env)
    loader = step("load", "--url", url, "--rate", "20", "--namespace", NS, "--experiment", C, env=env)
    watching(api, 2)
    time.sleep(2)
    completed = time.monotonic()
    api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    exits = {}
    while len(exits) < 2:
        for name, proc in (("wait_completion", waiter), ("load", loader)):
            if name not in exits and proc.poll() is not None:
                exits[name] = time.monotonic() - completed
        time.sleep(0.005)
    api.stop()
    print(f"2. completion -> exit: wait_completion {exits['wait_completion']:.2f}s (target < 1 s), "
          f"load {exits['load']:.2f}s (target < 2 s)")


def bench_requests(seconds: float, env: dict, tmp: Path) -> int:
    api = FakeApi().start()
    env = {**env, "KUBECONFIG": str(api.write_kubeconfig(tmp / f"kubeconfig-{seconds}"))}
    api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 0, 0)))
    waiter = step("wait_completion", "--namespace", NS, "--experiment", C, "--results-dir", str(tmp / "r2"), env=env)
    watching(api, 1)
    started = time.monotonic()
    iteration = 0
    while time.monotonic() - started < seconds:
        time.sleep(1)
        iteration += 1
        api.patch_status(V2, "experiments", NS, C, v2_running(B, C, iteration, min(100, iteration * 5)))
    api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    waiter.communicate(timeout=30)
    count = len(api.requests)
    api.stop()
    return count


def bench_deadline(env: dict, tmp: Path) -> dict[str, float]:
    overshoot = {}
    for fault in ("hold", "chatter"):
        api = FakeApi().start()
        api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
        api.inject("watch", "experiments", action=fault, times=None)
        env2 = {**env, "KUBECONFIG": str(api.write_kubeconfig(tmp / f"kubeconfig-{fault}"))}
        started = time.monotonic()
        proc = step("wait_completion", "--namespace", NS, "--experiment", C, "--timeout", "3", env=env2)
        proc.communicate(timeout=120)
        overshoot[fault] = time.monotonic() - started - 3
        api.stop()
    return overshoot


def bench_sigterm(url: str, env: dict, tmp: Path) -> dict[str, float]:
    import signal

    api = FakeApi().start()
    env = {**env, "KUBECONFIG": str(api.write_kubeconfig(tmp / "kubeconfig-term"))}
    api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    procs = {"wait_completion": step("wait_completion", "--namespace", NS, "--experiment", C, "--results-dir", str(tmp / "r3"),
                                     env=env, session=True),
             "load": step("load", "--url", url, "--rate", "20", "--namespace", NS, "--experiment", C, env=env, session=True)}
    watching(api, 2)
    time.sleep(2)
    exits = {}
    for name, proc in procs.items():
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
        exits[name] = time.monotonic() - sent
    api.stop()
    return exits


def bench_read_settings(env: dict, tmp: Path, runs: int = 5) -> list[float]:
    api = FakeApi().start()
    api.put("services", service())
    api.put("deployments", deployment("reviews", "v1"))
    api.put("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary-rollout-settings", "namespace": NS},
                           "data": {"image-registry": "registry.example.com/bookinfo", "load-hosts": "istio-ingressgateway.istio-system"}})
    kubeconfig = api.write_kubeconfig(tmp / "kubeconfig-settings")
    times = []
    for _ in range(runs):
        started = time.monotonic()
        proc = step("settings", "--namespace", NS, "--checkout", str(ROOT / "tests" / "apps" / "reviews"), "--version", "3f2a1bc",
                    env={**env, "KUBECONFIG": str(kubeconfig)})
        out, err = proc.communicate(timeout=60)
        times.append(time.monotonic() - started)
        if proc.returncode:
            raise SystemExit(f"read-settings failed: {err.strip()}")
    api.stop()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10, help="load duration for the rate figures")
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--long-wait", type=float, default=60, help="seconds of the long wait in figure 3")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    url = app_server()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        bench_rate(url, args.seconds, args.rate, env)
        bench_stop_delay(url, env, tmp)
        short, long = bench_requests(5, env, tmp), bench_requests(args.long_wait, env, tmp)
        print(f"3. API requests by wait_completion: {short} over 5 s, {long} over {args.long_wait:g} s "
              "(one status change per second; target: equal)")
        overshoot = bench_deadline(env, tmp)
        print(f"4. --timeout 3 against a watch that never ends: overshoot {overshoot['hold']:.2f}s silent, "
              f"{overshoot['chatter']:.2f}s with bookmarks (python start-up included; target < 1 s)")
        exits = bench_sigterm(url, env, tmp)
        print(f"5. SIGTERM -> exit: wait_completion {exits['wait_completion']:.2f}s, load {exits['load']:.2f}s (target < 2 s)")
        times = sorted(bench_read_settings(env, tmp))
        print(f"6. read-settings on tests/apps/reviews: median {times[len(times) // 2]:.2f}s, slowest {times[-1]:.2f}s "
              f"of {len(times)} runs (target < 2 s)")


if __name__ == "__main__":
    main()

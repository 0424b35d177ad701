"""Send steady HTTP load with `hey` until the experiment is over, so iter8 has data to judge.

    python -m steps.load --url URL [--host HOST] [--rate QPS] [--concurrency N] [--stop-file FILE]
        [--namespace NS --experiment NAME] [--max-duration SECONDS]

hey only reports when it finishes, so load runs hey in rounds of at most 10 s and prints
a progress line after each. It stops (interrupting hey, within 2 s) when the stop file
appears, the experiment completes, --max-duration passes, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from . import iter8
from .common import BadInput, RolloutFailed, StepError, check_name, log, parser, run
from .kube import Kube, follow

REQUEST_TIMEOUT = 5  # seconds; hey's -t. A slower answer counts as no answer.


@dataclass
class Stats:
    """Responses seen by hey: latency (seconds) and status code of each."""

    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    seconds: float = 0.0

    @property
    def responses(self) -> int:
        return len(self.latencies)

    @property
    def successes(self) -> int:
        return self.responses - self.non_2xx

    def add(self, other: "Stats") -> None:
        self.latencies.extend(other.latencies)
        self.non_2xx += other.non_2xx
        self.seconds += other.seconds

    def percentile(self, pct: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))] if ordered else 0.0

    def line(self, requested: float) -> str:
        rate = self.responses / self.seconds if self.seconds else 0.0
        pcts = " ".join(f"p{p} {self.percentile(p) * 1000:.1f}ms" for p in (50, 95, 99))
        return (
            f"{self.responses} responses in {self.seconds:.1f}s ({rate:.1f}/s of {requested:g}/s requested), "
            f"{self.non_2xx} non-2xx, {pcts}"
        )


def parse_csv(text: str) -> Stats:
    """hey -o csv: response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset."""
    stats = Stats()
    for row in text.splitlines()[1:]:
        cols = row.split(",")
        if len(cols) < 7:
            continue
        try:
            latency, status = float(cols[0]), int(cols[6])
        except ValueError:
            continue
        stats.latencies.append(latency)
        stats.non_2xx += not 200 <= status <= 299
    return stats


class Stop:
    """Why load should stop; set from signal handlers, the experiment watcher or the main loop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


def watch_experiment(kube: Kube, adapter, namespace: str, name: str, exp: dict, stop: Stop, deadline: float) -> None:
    try:
        for current in follow(kube, adapter.kind, namespace, name, deadline, initial=exp):
            if current is None:
                stop.set(f"experiment {name} was deleted")
                return
            if adapter.outcome(current).completed:
                stop.set(f"experiment {name} completed")
                return
    except StepError as err:  # keep the load running; the stop file, deadline or SIGTERM still end it
        log(f"warning: stopped watching experiment {name}: {err.message}")


class Hey:
    def __init__(self, binary: str, url: str, host: str | None, rate: float, concurrency: int):
        self.binary = shutil.which(binary)
        if not self.binary:
            raise BadInput(f"{binary} is not installed; install it (Debian/Ubuntu: apt-get install hey) or pass --hey PATH")
        self.target = (["-host", host] if host else []) + ["-t", str(REQUEST_TIMEOUT), url]
        self.pace = ["-c", str(concurrency), "-q", f"{rate / concurrency:g}"]

    def round(self, seconds: float, stop: Stop, stop_file: str | None) -> Stats:
        """Run hey for up to `seconds`; interrupt it as soon as a stop condition holds."""
        started = time.monotonic()
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(
                [self.binary, "-z", f"{seconds:.3f}s", "-o", "csv", *self.pace, *self.target],
                stdout=out,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # our signals are ours to forward
            )
            while proc.poll() is None:
                if stop_file and Path(stop_file).exists():
                    stop.set("the stop file appeared")
                if stop.event.wait(0.1):
                    proc.send_signal(signal.SIGINT)  # hey stops its workers and prints what it has
                    try:
                        proc.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            out.seek(0)
            stats = parse_csv(out.read())
        stats.seconds = time.monotonic() - started
        return stats

    def probe_error(self) -> str:
        """hey's own words for why nothing answered (one request, summary output)."""
        proc = subprocess.run(
            [self.binary, "-n", "1", "-c", "1", *self.target],
            capture_output=True, text=True, timeout=REQUEST_TIMEOUT + 5, check=False,
        )
        lines = proc.stdout.split("Error distribution:", 1)
        return lines[1].strip().split("\n")[0].split("]", 1)[-1].strip() if len(lines) == 2 else "no error reported"


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("load", "Generate HTTP load with hey while the experiment runs.")
    p.add_argument("--url", required=True, help="where to send requests, e.g. the Istio ingress gateway")
    p.add_argument("--host", help="HTTP Host header, e.g. the app's host on the gateway")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second in total (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=2, help="parallel connections (default: %(default)s)")
    p.add_argument("--stop-file", help="stop when this file appears")
    p.add_argument("--namespace", help="with --experiment: stop when this experiment completes")
    p.add_argument("--experiment")
    p.add_argument("--max-duration", type=float, default=7200.0, help="seconds (default: %(default)s)")
    p.add_argument("--round-seconds", type=float, default=10.0, help=argparse.SUPPRESS)  # tests use short rounds
    p.add_argument("--hey", default="hey", help="the hey binary (default: hey on PATH)")
    args = p.parse_args(argv)

    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BadInput(f"--url {args.url!r} is not an http(s) URL; pass e.g. http://istio-ingressgateway.istio-system/")
    if not (0 < args.rate < math.inf and 0 < args.max_duration < math.inf) or args.concurrency < 1:  # nan compares False
        raise BadInput("--rate and --max-duration must be positive finite numbers and --concurrency at least 1")
    if bool(args.namespace) != bool(args.experiment):
        raise BadInput("--namespace and --experiment go together; pass both or neither")
    round_seconds = min(10.0, max(0.5, args.round_seconds))
    hey = Hey(args.hey, args.url, args.host, args.rate, args.concurrency)

    stop = Stop()
    deadline = time.monotonic() + args.max_duration
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _f: stop.set(signal.Signals(n).name))
    if args.experiment:
        check_name(args.namespace, "namespace")
        check_name(args.experiment, "experiment name")
        kube = Kube()
        adapter, exp = iter8.locate(kube, args.namespace, args.experiment)
        if adapter.outcome(exp).completed:
            stop.set(f"experiment {args.experiment} completed")
        threading.Thread(
            target=watch_experiment,
            args=(kube, adapter, args.namespace, args.experiment, exp, stop, deadline),
            daemon=True,
        ).start()

    log(f"sending {args.rate:g} requests/s over {args.concurrency} connections to {args.url}" + (f" (Host: {args.host})" if args.host else ""))
    total, rounds = Stats(), 0
    while not stop:
        if args.stop_file and Path(args.stop_file).exists():
            stop.set("the stop file appeared")
            break
        remaining = deadline - time.monotonic()
        if remaining < 0.05:
            stop.set(f"--max-duration {args.max_duration:g}s passed")
            break
        stats = hey.round(min(round_seconds, remaining), stop, args.stop_file)
        rounds += 1
        total.add(stats)
        log(stats.line(args.rate))
        if stats.responses == 0 and not stop:
            log(f"no responses from {args.url}: {hey.probe_error()}")

    log(f"stopping: {stop.reason}")
    log(f"total: {total.line(args.rate)}")
    if rounds and total.successes == 0:
        raise RolloutFailed(
            f"no successful (2xx) responses from {args.url} in {total.seconds:.0f}s, so iter8 had nothing to judge; "
            "check --url/--host and that the service answers through the gateway"
        )
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()

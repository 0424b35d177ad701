"""What every step shares: exit codes, errors, logging, argument parsing, Tekton results.

A step's `main()` raises `StepError` subclasses for expected failures; `run()` turns
them into one line on stderr and the documented exit code, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NoReturn, Sequence

# Exit codes, the same in every step (docs/reference/steps.md, "Exit codes").
EXIT_OK = 0
EXIT_ROLLOUT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 3
EXIT_API = 4
EXIT_STOPPED = 143  # 128 + SIGTERM: Tekton stopped the step (task timeout, cancelled run)
STOP_GRACE_SECONDS = 1.0  # after SIGTERM, time to unwind (finally blocks) before the step exits regardless

# Labels and annotations this project puts on the objects it manages.
LABEL_PREFIX = "iter8-tekton.dev/"
STABLE_LABEL = LABEL_PREFIX + "stable"  # on the Deployment that won the last rollout
VERSION_LABEL = LABEL_PREFIX + "version"  # on every object deployed for one candidate version
RUN_LABEL = LABEL_PREFIX + "run"  # on an Experiment: the PipelineRun that created it
POD_VERSION_LABEL = "version"  # the pod label each version sets to itself (the overlay's, and the seed's)
SERVICE_LABEL = LABEL_PREFIX + "service"  # on a PipelineRun: the Service it rolls out

DEFAULT_RESULTS_DIR = "/tekton/results"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# k8s.io/apimachinery pkg/util/validation validation.go: IsQualifiedName, IsValidLabelValue.
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_COMMIT_LIKE = re.compile(r"^[0-9a-z]{7,40}$")
_HEX = set("0123456789abcdef")


class StepError(Exception):
    """An expected failure: one line for the user, one exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadInput(StepError):
    """Bad arguments, files or cluster state the user must fix; also a missing tool."""

    exit_code = EXIT_BAD_INPUT


class Problems(BadInput):
    """Several things wrong with one input: each is printed as its own `error:` line."""

    def __init__(self, problems: list[str], summary: str):
        super().__init__(summary)
        self.problems = problems


class RolloutFailed(StepError):
    """The candidate was not promoted (rolled back, inconclusive, or unsafe to clean up)."""

    exit_code = EXIT_ROLLOUT_FAILED


class TimedOut(StepError):
    exit_code = EXIT_TIMEOUT


class ApiFailure(StepError):
    """The Kubernetes API kept failing after retries."""

    exit_code = EXIT_API


class Stopped(StepError):
    """SIGTERM: Tekton deletes a step's pod when its task times out or the run is cancelled,
    and the entrypoint forwards the signal (cmd/entrypoint/runner.go). The pod has 30 s."""

    exit_code = EXIT_STOPPED


def _stop(signum, _frame) -> NoReturn:
    stopped = Stopped(f"stopped by {signal.Signals(signum).name} (the task timed out or the run was cancelled)")
    _exit_after_grace(stopped)
    raise stopped


def _exit_after_grace(stopped: Stopped) -> None:
    """Exit with the same line and code if unwinding has not ended the step in time.

    The exception lands wherever the main thread is, possibly inside a library that holds
    a lock there (urllib3's connection pool), and unwinding could then block; a thread of
    its own still ends the step well within the pod's 30 s grace period.
    """
    def force() -> None:
        time.sleep(STOP_GRACE_SECONDS)
        os.write(2, f"error: {stopped.message}\n".encode())
        os._exit(stopped.exit_code)

    threading.Thread(target=force, name="stop-grace", daemon=True).start()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def add_results_dir(p: argparse.ArgumentParser) -> None:
    default = DEFAULT_RESULTS_DIR if Path(DEFAULT_RESULTS_DIR).is_dir() else None
    p.add_argument(
        "--results-dir",
        default=default,
        help=f"where Tekton results are written (default: {DEFAULT_RESULTS_DIR} inside Tekton, else none)",
    )


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a step's main() and exit with its code; expected failures print one line.

    SIGTERM raises Stopped wherever the step is (even inside a blocking read), so its
    `finally` blocks run and it exits at once; a step may install its own handler.
    """
    signal.signal(signal.SIGTERM, _stop)
    try:
        code = main(argv) or EXIT_OK
    except StepError as err:
        for problem in getattr(err, "problems", []):
            print(f"error: {problem}", file=sys.stderr, flush=True)
        print(f"error: {err.message}", file=sys.stderr, flush=True)
        code = err.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        code = 130
    sys.exit(code)


def log(message: str, *, stream=None) -> None:
    """A progress line with a UTC timestamp; Tekton shows both stdout and stderr."""
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"[{stamp}] {message}", file=stream or sys.stdout, flush=True)


def write_results(results_dir: str | None, **results: str) -> None:
    """Write Tekton v1 results, one file per result, no trailing newline; no dir, no results."""
    if results_dir is None:
        return
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in results.items():
            (directory / name.replace("_", "-")).write_text(value)
    except OSError as err:
        raise BadInput(f"cannot write results to {results_dir}: {err.strerror}; pass a writable --results-dir") from None


def touch(path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()


def check_name(value: str, what: str) -> str:
    """A Kubernetes object name that must also be usable as a DNS-1123 label (<= 63)."""
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise BadInput(
            f"{what} {value!r} is not a DNS-1123 label: use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


def metadata_problems(metadata: dict, where: str) -> list[str]:
    """Labels and annotations the API server would refuse (validation.go IsQualifiedName,
    IsValidLabelValue; annotations: string values, 256 KiB in all), one line each."""
    problems = []
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(f"{where}.{field} must be a mapping of strings")
            continue
        for key, value in values.items():
            prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
            if not (name and len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name)
                    and (not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)))):
                problems.append(f"{where}.{field} key {key!r} is not a valid Kubernetes key")
            elif not isinstance(value, str):
                problems.append(f"{where}.{field}[{key}] must be a string (quote it), not {value!r}")
            elif field == "labels" and not (len(value) <= 63 and (value == "" or _QUALIFIED_NAME.fullmatch(value))):
                problems.append(f"{where}.labels[{key}] {value!r} is not a valid label value")
        if field == "annotations" and sum(len(str(k)) + len(str(v)) for k, v in values.items()) > 256 * 1024:
            problems.append(f"{where}.annotations are larger than 256 KiB in all")
    return problems


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def parse_duration(text: str) -> float | None:
    """A Go duration ("30s", "1m30s", "500ms") in seconds; None if it is not one."""
    parts = _DURATION_PART.findall(text or "")
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def looks_like_commit(value: str) -> bool:
    """7-40 lowercase letters and digits, all but at most two of them hex digits."""
    if not _COMMIT_LIKE.fullmatch(value):
        return False
    return sum(c not in _HEX for c in value) <= 2


def check_version(value: str) -> str:
    check_name(value, "version")
    if looks_like_commit(value) and not set(value) <= _HEX:
        raise BadInput(
            f"version {value!r} looks like a commit SHA but is not hexadecimal: "
            "pass the commit's (short) SHA, or a version with a '-' such as 'v2-rc1'"
        )
    return value

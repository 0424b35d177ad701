"""What every step shares: exit codes, errors, logging, argument parsing, Tekton results.

A step's `main()` raises `StepError` subclasses for expected failures; `run()` turns
them into one line on stderr and the documented exit code, without a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn, Sequence

# Exit codes, the same in every step (see README, "Exit codes").
EXIT_OK = 0
EXIT_ROLLOUT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 3
EXIT_API = 4

# Labels and annotations this project puts on the objects it manages.
LABEL_PREFIX = "iter8-tekton.dev/"
STABLE_LABEL = LABEL_PREFIX + "stable"  # on the Deployment that won the last rollout
VERSION_LABEL = LABEL_PREFIX + "version"  # on every object deployed for one candidate version
RUN_LABEL = LABEL_PREFIX + "run"  # on an Experiment: the PipelineRun that created it

DEFAULT_RESULTS_DIR = "/tekton/results"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
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


class RolloutFailed(StepError):
    """The candidate was not promoted (rolled back, inconclusive, or unsafe to clean up)."""

    exit_code = EXIT_ROLLOUT_FAILED


class TimedOut(StepError):
    exit_code = EXIT_TIMEOUT


class ApiFailure(StepError):
    """The Kubernetes API kept failing after retries."""

    exit_code = EXIT_API


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
    """Run a step's main() and exit with its code; expected failures print one line."""
    try:
        code = main(argv) or EXIT_OK
    except StepError as err:
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
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise BadInput(
            f"{what} {value!r} is not a DNS-1123 label: use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


def looks_like_commit(value: str) -> bool:
    """7-40 lowercase letters and digits, all but at most two of them hex digits."""
    if not _COMMIT_LIKE.match(value):
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

"""Run kustomize on a folder from the pushed commit, with no way out to the network.

The allowlist (steps.kustomization) refuses every URL before kustomize runs; this is the
second wall, for a case it might miss. kustomize (api v0.18.0) GETs http(s) files with a
plain `http.Client{}` (api/internal/loader/fileloader.go httpClientGetContent), that is
net/http's DefaultTransport, whose Proxy is ProxyFromEnvironment; and it clones git
repositories by running `git` from PATH (api/internal/git/gitrunner.go newCmdRunner). So
kustomize runs with:

- HTTP_PROXY and HTTPS_PROXY (and lower case, and ALL_PROXY for good measure) pointing at a
  loopback port that is bound but not listening, so every proxied connection is refused;
  NO_PROXY empty; REQUEST_METHOD unset (under CGI Go refuses HTTP_PROXY);
- no PATH at all (kustomize or kubectl is called by absolute path), so there is no git;
- a minimal environment (HOME is an empty scratch folder) and a timeout.

The limit (golang.org/x/net http/httpproxy `useProxy`): Go never proxies "localhost"
or a loopback IP (127.0.0.0/8, ::1), so a URL naming one is fetched directly from the
step's own loopback; link-local and every other address goes to the closed proxy.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from .common import BadInput

# Files are loaded only from inside the kustomization's own folder (explicit, though it is
# kustomize's default); no plugins, no helm, no exec functions (their flags are not given).
RESTRICTOR = "--load-restrictor=LoadRestrictionsRootOnly"
TIMEOUT = 60.0  # seconds; kustomize builds a candidate in well under one


def command(directory: Path) -> list[str]:
    """`kustomize build` if kustomize is on PATH, else `kubectl kustomize`, by absolute path."""
    if found := shutil.which("kustomize"):
        return [os.path.abspath(found), "build", RESTRICTOR, str(directory)]
    if found := shutil.which("kubectl"):
        return [os.path.abspath(found), "kustomize", RESTRICTOR, str(directory)]
    raise BadInput("neither kustomize nor kubectl is on PATH; install kustomize (or kubectl >= 1.14)")


@contextmanager
def closed_port():
    """A loopback port that refuses connections: bound, never listening, held until the end."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def sandbox_env(port: int, home: str) -> dict[str, str]:
    proxy = f"http://127.0.0.1:{port}"
    env = {"HOME": home, "NO_PROXY": "", "no_proxy": ""}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy
    return env


def run(directory: Path) -> str:
    """kustomize's output for directory, behind the proxy wall; BadInput when it fails."""
    argv = command(directory)
    with closed_port() as port, tempfile.TemporaryDirectory(prefix="kustomize-home-") as home:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=sandbox_env(port, home),
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BadInput(f"kustomize build did not finish within {TIMEOUT:g}s; simplify the kustomize config") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("Error:")), lines[-1] if lines else "no output")
        raise BadInput(f"kustomize build failed: {detail}; fix the kustomize config")
    return proc.stdout


def build(directory: Path) -> list[dict]:
    """The objects kustomize renders from directory."""
    try:
        return [doc for doc in yaml.safe_load_all(run(directory)) if doc]
    except (yaml.YAMLError, ValueError) as err:  # Go's YAML 1.2 output that YAML 1.1 reads otherwise
        raise BadInput(f"cannot read kustomize's output ({str(err).splitlines()[0]}); quote the value in the manifests") from None

"""Start a rollout by hand: the PipelineRun a push of the service's branch would start.

    canary-start SERVICE [--namespace NS] [--branch BRANCH] [--revision SHA] [--dry-run]

Reads the install's settings (the ConfigMap canary-rollout-settings) for the repositories
entry bound to SERVICE, resolves the branch's newest commit with `git ls-remote` (unless
--revision names one), fills the installed TriggerTemplate `canary-rollout` with the values
the TriggerBinding would give it, as Tekton Triggers v0.37.0 does (the same substitution
hack/preview shows), creates the PipelineRun and prints its name. --dry-run prints it
instead. So a hand start has the same ServiceAccounts, workspaces, timeouts, labels and
PVC clean-up as a push, and the binding check of read-settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from typing import Sequence

import yaml

from . import install as installs
from .common import BadInput, check_name, parser, run
from .install import Binding
from .kube import Kind, Kube
from .lock import PIPELINE_RUNS

TRIGGER_TEMPLATES = Kind("triggers.tekton.dev", "v1beta1", "triggertemplates")
TEMPLATE = "canary-rollout"
FULL_SHA = re.compile(r"[0-9a-f]{40}")


def render(template: dict, params: dict[str, str]) -> list[dict]:
    """The template's resources with its params filled in, as Triggers v0.37.0 does
    (pkg/template/resource.go ResolveResources): each declared param's value replaces
    `$(tt.params.NAME)` in the resource's JSON text raw, with `$(` escaped to `$$(` so a
    value cannot reach Tekton's own substitution (a param with no value stays as it is),
    then `$(uid)`. ValueError when the result is not JSON."""
    spec = template.get("spec") or {}
    uid = str(uuid.uuid4())
    resources = []
    for resource in spec.get("resourcetemplates") or []:
        text = json.dumps(resource, separators=(",", ":"))
        for param in spec.get("params") or []:
            if param["name"] in params:
                text = text.replace(f"$(tt.params.{param['name']})", params[param["name"]].replace("$(", "$$("))
        resources.append(json.loads(text.replace("$(uid)", uid)))
    return resources


def defaults(template: dict) -> dict[str, str]:
    """The template's param defaults (event.go: a binding value left out falls back to them)."""
    return {p["name"]: p["default"] for p in (template.get("spec") or {}).get("params") or [] if p.get("default") is not None}


def go_escape(json_text: str) -> str:
    """What Go's json.Marshal escapes beyond Python's json.dumps: <, >, &, U+2028, U+2029."""
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        json_text = json_text.replace(char, escaped)
    return json_text


def event_value(value: str) -> str:
    """A value from the event as Triggers puts it into a param: JSON-encoded without its
    quotes, <, > and & escaped (pkg/template/event.go, Go's json.Marshal)."""
    return go_escape(json.dumps(value, ensure_ascii=False)[1:-1])


def repository_label(repository: str) -> str:
    """The EventListener's repository_label: the name cut to 63 bytes, then trimmed to a
    letter or digit at both ends (CEL truncate and translate, triggers/eventlistener.yaml)."""
    name = repository.split("/", 1)[1].encode()[:63].decode("utf-8", "ignore")
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", name)


def binding_params(binding: Binding, revision: str, git_base_url: str) -> dict[str, str]:
    """What the TriggerBinding canary-rollout-push gives the template for a push of `revision`
    (every value comes from the event or the EventListener's extensions)."""
    values = {"repo-url": f"{git_base_url}/{binding.repository}.git", "revision": revision, "short-sha": revision[:7],
              "branch": binding.branch, "repository": binding.repository, "repository-label": repository_label(binding.repository),
              "service": binding.service, "settings-file": binding.settings_file}
    return {k: event_value(v) for k, v in values.items()}


def choose(install: installs.Install, service: str, branch: str | None) -> Binding:
    bound = [b for b in install.bindings() if b.service == service and (branch is None or b.branch == branch)]
    if len(bound) == 1:
        return bound[0]
    listed = ", ".join(str(b) for b in install.bindings()) or "none"
    if not bound:
        raise BadInput(f"no repositories entry binds service {service}{f' on branch {branch}' if branch else ''} "
                       f"(the install's entries: {listed}); add SERVICE=OWNER/NAME@BRANCH to repositories")
    raise BadInput(f"several entries bind {service} ({', '.join(str(b) for b in bound)}); pass --branch")


def newest_commit(url: str, branch: str) -> str:
    """The branch's newest commit, from the repository itself (git ls-remote; no checkout)."""
    try:
        proc = subprocess.run(["git", "ls-remote", "--", url, f"refs/heads/{branch}"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BadInput("git is not installed; install it, or pass --revision with the commit's full SHA") from None
    except subprocess.TimeoutExpired:
        raise BadInput(f"git ls-remote {url} did not answer within 60s; pass --revision with the commit's full SHA") from None
    sha = proc.stdout.split("\t", 1)[0].strip()
    if proc.returncode != 0 or not FULL_SHA.fullmatch(sha):
        why = (proc.stderr.strip().splitlines() or ["no such branch"])[-1]
        raise BadInput(f"cannot read branch {branch} of {url} ({why}); pass --revision with the commit's full SHA")
    return sha


def current_namespace() -> str:
    """The kubeconfig's current namespace, as kubectl uses it ('default' without one)."""
    from kubernetes import config

    try:
        return config.list_kube_config_contexts()[1]["context"].get("namespace") or "default"
    except (config.ConfigException, OSError, KeyError, TypeError):
        return "default"


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("canary-start", "Start a canary rollout of a service by hand: the PipelineRun a push would start.")
    p.add_argument("service", help="the service to roll out (as the install's repositories list binds it)")
    p.add_argument("-n", "--namespace", help="the install's namespace (default: the kubeconfig's)")
    p.add_argument("--branch", help="which of the service's listed branches (when several are listed)")
    p.add_argument("--revision", help="the commit's full SHA (default: the branch's newest, from git ls-remote)")
    p.add_argument("--dry-run", action="store_true", help="print the PipelineRun instead of creating it")
    args = p.parse_args(argv)
    namespace = check_name(args.namespace or current_namespace(), "namespace")
    if args.revision and not FULL_SHA.fullmatch(args.revision):
        raise BadInput(f"--revision {args.revision!r} is not a full commit SHA (40 lowercase hex digits)")

    kube = Kube()
    install = installs.read(namespace, kube=kube)
    binding = choose(install, check_name(args.service, "service"), args.branch)
    git_base_url = install.git_base_url.rstrip("/")
    revision = args.revision or newest_commit(f"{git_base_url}/{binding.repository}.git", binding.branch)
    template = kube.get(TRIGGER_TEMPLATES, namespace, TEMPLATE)
    if template is None:
        raise BadInput(f"TriggerTemplate {namespace}/{TEMPLATE} does not exist; install the bundle (kubectl apply -k)")
    (pipeline_run,) = render(template, {**defaults(template), **binding_params(binding, revision, git_base_url)})
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(pipeline_run, sort_keys=False))
        return 0
    created = kube.create(PIPELINE_RUNS, namespace, pipeline_run)
    print(created["metadata"]["name"], flush=True)
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()

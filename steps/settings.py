"""Read and check a run's settings: the app's file, the run's params, the install's limits.

    python -m steps.settings --namespace NS --checkout DIR --version SHORT_SHA
        [--file .iter8-tekton.yaml] [--install-settings NAME | --install-settings-file FILE]
        [--service SVC] [--deployment BASE] ... (any setting, to override the file)

The app's repository holds its rollout settings (`.iter8-tekton.yaml`, kind
RolloutSettings, schema: steps/schemas/rollout-settings.schema.json). Anyone who can push
controls that file, so everything it says is checked against the install's own settings
(the ConfigMap canary-rollout-settings in the run's namespace): names, paths that must stay
inside the checkout (relative to the settings file's folder, so several apps can share a
repository), a load URL that must be cluster-internal or allowlisted, and caps on rates
and durations. The namespace is always the run's own. A param given on the
PipelineRun (non-empty) overrides the file. Then the candidate is rendered and checked
(the same check deploy makes) and the experiment template is checked, so a bad commit
fails here, before the build, with one `error:` line per problem. The resolved values are
written as Tekton results for the later tasks.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import jsonschema

from . import install as installs
from . import iter8, untrusted
from .common import BadInput, Problems, add_results_dir, check_name, log, parser, run, write_results
from .deploy import rendered_candidate
from .install import Install
from .kube import SERVICES, Kube
from .routing import find_baseline

FILE = installs.DEFAULT_SETTINGS_FILE
DEFAULTS = {
    "kustomize-dir": "kustomize", "experiment-template": "", "context": ".", "dockerfile": "Dockerfile",
    "load": {"rate": 10, "concurrency": 2}, "timeouts": {"experiment": 3600, "rollout": 600},
    "rollout-policy": "wait", "keep-runs": 5,
}
# (param, where in the file) for the settings a PipelineRun param may override.
OVERRIDES = {
    "service": ("service",), "deployment": ("deployment",), "kustomize-dir": ("kustomize-dir",),
    "experiment-template": ("experiment-template",), "context": ("context",), "dockerfile": ("dockerfile",),
    "load-url": ("load", "url"), "load-host": ("load", "host"), "load-rate": ("load", "rate"),
    "load-concurrency": ("load", "concurrency"), "experiment-timeout": ("timeouts", "experiment"),
    "rollout-timeout": ("timeouts", "rollout"), "rollout-policy": ("rollout-policy",), "keep-runs": ("keep-runs",),
}


def _number(text: str) -> int | float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return int(value) if value.is_integer() else value


NUMBERS = {"load-rate": _number, "load-concurrency": int, "experiment-timeout": int, "rollout-timeout": int, "keep-runs": int}


def inside(checkout: Path, relative: str, what: str) -> Path:
    """`relative` resolved inside the checkout; a path, or a symlink, out of it is refused."""
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        raise BadInput(f"{what} {relative!r} must be a path inside the repository (relative, without '..')")
    target = (checkout / relative).resolve()
    if not target.is_relative_to(checkout.resolve()):
        raise BadInput(f"{what} {relative!r} leads outside the repository (through a symbolic link)")
    return target


def read_file(checkout: Path, relative: str) -> dict | None:
    """The app's settings file, or None when the repository has none."""
    path = inside(checkout, relative, "the settings file")
    if not path.exists():
        return None
    return untrusted.load_mapping(path, relative, "a RolloutSettings")


def _finite_number(checker, instance) -> bool:
    """JSON has no NaN or infinity: `load.rate: .nan` compares False with every cap."""
    return not isinstance(instance, bool) and (isinstance(instance, int) or isinstance(instance, float) and math.isfinite(instance))


def _full_pattern(validator, pattern, instance, schema):
    """`pattern`, but matching the whole value: jsonschema uses re.search, and Python's `$`
    also matches before a final newline, so "host\n" would pass ^...$."""
    if isinstance(instance, str) and not re.fullmatch(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
    "number": _finite_number,
    "integer": lambda checker, instance: _finite_number(checker, instance) and (isinstance(instance, int) or instance.is_integer()),
})
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, validators={"pattern": _full_pattern},
                                         type_checker=_TYPES)


def schema(install: Install) -> dict:
    """The file's JSON Schema, with the install's caps as maxima."""
    loaded = json.loads(resources.files(__package__).joinpath("schemas/rollout-settings.schema.json").read_text())
    props = loaded["properties"]
    props["load"]["properties"]["rate"]["maximum"] = install.max_load_rate
    props["load"]["properties"]["concurrency"]["maximum"] = install.max_load_concurrency
    props["timeouts"]["properties"]["experiment"]["maximum"] = install.max_experiment_timeout
    props["timeouts"]["properties"]["rollout"]["maximum"] = install.max_rollout_timeout
    props["keep-runs"]["maximum"] = install.max_keep_runs
    return loaded


def schema_problems(document: dict, install: Install, source: str) -> list[str]:
    """One line per way the document breaks the schema (with the install's caps)."""
    loaded = schema(install)
    paths, labels = loaded["$defs"]["relativePath"]["pattern"], loaded["$defs"]["dnsLabel"]["pattern"]
    problems = []
    for error in sorted(Validator(loaded).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(the file)"
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            hint = " (the namespace is always the PipelineRun's own)" if "namespace" in unknown else ""
            problems.append(f"{source}: {where}: unknown field(s) {', '.join(unknown)}{hint}")
        elif error.schema.get("pattern") == paths or error.validator == "anyOf" and where == "experiment-template":
            problems.append(f"{source}: {where}: {error.instance!r} must be a path inside the repository (relative, without '..')")
        elif error.schema.get("pattern") == labels:
            problems.append(f"{source}: {where}: {error.instance!r} is not a DNS label (lowercase letters, digits and '-')")
        else:
            problems.append(f"{source}: {where}: {error.message}")
    return problems


def _set(document: dict, path: tuple[str, ...], value) -> None:
    node = document
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def is_cluster_internal(host: str) -> bool:
    """A Service by its in-cluster name: `svc` (this namespace), `svc.ns.svc`, or
    `svc.ns.svc.cluster.local`. `a.b` is not: it may resolve outside the cluster."""
    parts = host.lower().split(".")
    if len(parts) == 1:
        return bool(parts[0]) and not parts[0].isdigit()
    return parts[2:] in (["svc"], ["svc", "cluster", "local"]) and len(parts) in (3, 5)


def load_url_problems(url: str, install: Install, source: str) -> list[str]:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. http://[::1/
        return [f"{source}: load.url {url!r} is not a valid URL"]
    allowed = {h.lower() for h in install.load_hosts} | {(urlsplit(install.default_load_url).hostname or "").lower()} - {""}
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if parts.scheme not in ("http", "https") or not host:
        return [f"{source}: load.url {url!r} is not an http(s) URL"]
    if parts.username or parts.password:
        return [f"{source}: load.url must not carry credentials"]
    if host in allowed or (not is_ip and is_cluster_internal(host)):
        return []
    return [f"{source}: load.url host {host!r} is neither a cluster-internal Service name (name, name.ns.svc, "
            f"name.ns.svc.cluster.local) nor on the install's load-hosts allowlist ({', '.join(sorted(allowed)) or 'empty'}); "
            "the pipeline does not send load to other hosts"]


def load_target(param: tuple[str, str], file: tuple, install: Install) -> tuple:
    """(url, host) of the load. A Host header belongs to its URL: the install's default host
    goes only with the install's default URL, the file's host with the file's URL or the
    install's, a param's host with any URL; a URL given without a host gets no Host header."""
    (param_url, param_host), (file_url, file_host) = param, file
    if param_url:
        return param_url, param_host
    if file_url is not None:
        return file_url, param_host or file_host or ""
    return install.default_load_url, param_host or file_host or install.default_load_host


def resolve(document: dict | None, overrides: dict[str, str], install: Install, namespace: str, source: str) -> dict:
    """The settings: the file's, overridden by non-empty params, then defaults; checked."""
    settings = json.loads(json.dumps(DEFAULTS))
    settings.update({"apiVersion": "iter8-tekton.dev/v1alpha1", "kind": "RolloutSettings"})
    problems = []
    if document is not None:
        problems += schema_problems(document, install, source)
        for key, value in document.items():
            if not isinstance(settings.get(key), dict):
                settings[key] = value
            elif isinstance(value, dict):  # else the schema has said what is wrong with it
                settings[key].update(value)
    for param, path in OVERRIDES.items():
        value = overrides.get(param) or ""
        if value:
            try:
                _set(settings, path, NUMBERS[param](value) if param in NUMBERS else value)
            except ValueError:
                problems.append(f"param {param}: {value!r} is not a number")
    if not settings.get("service"):
        problems.append(f"no service: add {FILE} to the app's repository (docs/add-a-service.md), or pass the service param")
    settings.setdefault("deployment", settings.get("service"))
    file_load = (document or {}).get("load") if isinstance((document or {}).get("load"), dict) else {}
    settings["load"]["url"], settings["load"]["host"] = load_target(
        (overrides.get("load-url") or "", overrides.get("load-host") or ""), (file_load.get("url"), file_load.get("host")), install)
    if not problems:
        problems += schema_problems({k: v for k, v in settings.items() if v is not None}, install, "the resolved settings")
    url = settings["load"]["url"]
    if not url:
        problems.append(f"no load URL: set load.url in {FILE}, or default-load-url in the install's settings")
    elif isinstance(url, str):
        problems += load_url_problems(url, install, source)
    if not problems:
        router, experiment = iter8.label_values(settings["service"], settings["deployment"], namespace)
        if len(router) > 63:
            problems.append(f"service {settings['service']!r} with namespace {namespace!r} is too long for iter8: its label "
                            f"value {router!r} has {len(router)} characters (63 at most)")
        if len(experiment) > 63:
            problems.append(f"deployment {settings['deployment']!r} with namespace {namespace!r} is too long for iter8: the "
                            f"label value <deployment>-<short sha>.<namespace> has {len(experiment)} characters (63 at most)")
    if problems:
        raise Problems(problems, f"the rollout settings are not valid ({len(problems)} problem(s) above); nothing was built")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("settings", "Read and check a run's settings; render and check the candidate.")
    p.add_argument("--namespace", required=True, help="the run's namespace (always the app's)")
    p.add_argument("--checkout", required=True, type=Path, help="the app's repository, checked out")
    p.add_argument("--version", required=True, help="the candidate's version (the short commit SHA)")
    p.add_argument("--file", default=FILE, help="the settings file in the repository (default: %(default)s)")
    p.add_argument("--bound-service", default="",
                   help="the service the install's repositories entry that started this run binds (empty: none, a run by hand)")
    p.add_argument("--baseline", default="", help="the serving Deployment to compare the candidate with (default: found)")
    installs.add_arguments(p)
    p.add_argument("--image-repository", default="", help="where to push (default: the install's image-registry/<service>)")
    for param in OVERRIDES:
        p.add_argument(f"--{param}", default="", help=f"override the file's {'.'.join(OVERRIDES[param])}")
    add_results_dir(p)
    args = p.parse_args(argv)
    namespace = check_name(args.namespace, "namespace")

    kube = Kube()
    install = installs.read(namespace, args.install_settings, args.install_settings_file, kube)
    document = read_file(args.checkout, args.file)
    log(f"settings: {args.file}" if document is not None else f"settings: no {args.file} in the repository; params and defaults only")
    settings = resolve(document, {k: getattr(args, k.replace("-", "_")) for k in OVERRIDES}, install, namespace, args.file)
    service, deployment = settings["service"], settings["deployment"]
    if args.bound_service and service != args.bound_service:
        raise BadInput(f"{args.file} rolls out service {service}, but the install binds this repository entry to "
                       f"{args.bound_service}; a repository may roll out only its own service (the install's repositories list)")
    image_repository = args.image_repository or (f"{install.image_registry.rstrip('/')}/{service}" if install.image_registry else "")
    if not image_repository:
        raise BadInput("no image repository: set image-registry in the install's settings, or pass image-repository")

    # Paths are relative to the settings file's folder (several apps can share a repository).
    folder = os.path.dirname(args.file)
    for key in ("kustomize-dir", "context", "experiment-template"):
        if settings[key]:
            settings[key] = os.path.normpath(os.path.join(folder, settings[key]))
    kustomize_dir = inside(args.checkout, settings["kustomize-dir"], "kustomize-dir")
    inside(args.checkout, settings["context"], "context")  # a link to / would hand kaniko the build pod's files
    inside(args.checkout, os.path.join(settings["context"], settings["dockerfile"]), "the Dockerfile")
    template_path = settings["experiment-template"]
    template = iter8.load_template(str(inside(args.checkout, template_path, "experiment-template")) if template_path else None)
    limits = iter8.TemplateLimits(settings["timeouts"]["experiment"], install.max_interval, install.max_iterations)
    iter8.check_template(template, limits, template_path or "the built-in template")
    # The candidate may not gain rights the serving version lacks: compare it with that version.
    candidate_name = f"{deployment}-{args.version}"
    baseline, how = find_baseline(kube, namespace, service, candidate_name, args.baseline or None)
    log(f"serving version: {baseline['metadata']['name']} ({how})")
    candidate = rendered_candidate(kustomize_dir, args.version, f"{image_repository}:{args.version}", deployment=deployment,
                                   namespace=namespace, service=service, baseline=baseline, services=kube.items(SERVICES, namespace),
                                   allowance=install.allowance(service))
    log(f"service {service}: candidate {candidate_name} "
        f"({', '.join(o['kind'] + ' ' + o['metadata']['name'] for o in candidate.applied)})")
    load = settings["load"]
    write_results(
        args.results_dir, service=service, deployment=deployment, candidate=candidate_name,
        kustomize_dir=settings["kustomize-dir"], experiment_template=template_path, context=settings["context"],
        dockerfile=settings["dockerfile"], image_repository=image_repository, insecure_registry=install.insecure_registry,
        builder_args=json.dumps(list(install.builder_extra_args)),
        load_url=load["url"], load_host=load.get("host") or "", load_rate=f"{load['rate']:g}", load_concurrency=str(load["concurrency"]),
        experiment_timeout=str(settings["timeouts"]["experiment"]), rollout_timeout=str(settings["timeouts"]["rollout"]),
        rollout_policy=settings["rollout-policy"], keep_runs=str(settings["keep-runs"]), dashboard_url=install.dashboard_url,
        github_api_url=install.github_api_url,
    )
    return 0


def entry() -> None:
    run(main)


if __name__ == "__main__":
    entry()

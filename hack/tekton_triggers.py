"""What a Tekton Triggers (v0.37) EventListener does with a request, offline.

Runs the `github` and `cel` ClusterInterceptors, resolves the TriggerBinding's
`$(body...)`, `$(header...)` and `$(extensions...)` values and the TriggerTemplate's
`$(tt.params...)`, from the bundle's own YAML. CEL runs on the common-expression-language
package, with the functions Triggers adds (../shared/reference/tekton-triggers-notes.md).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import cel
import yaml
from cel import stdlib
from github_events import signature

logging.getLogger("cel").setLevel(logging.ERROR)  # cel logs a warning per failing callback


class Rejected(Exception):
    """The EventListener would not create anything; the message says why."""


def canonical(key: str) -> str:
    """Go's canonical header key: x-github-event -> X-Github-Event."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


@dataclass
class Request:
    body: bytes
    headers: dict[str, list[str]]  # canonical keys
    url: str = "http://el-canary-rollout:8080/"
    extensions: dict = field(default_factory=dict)

    @classmethod
    def of(cls, body: bytes, headers: dict[str, str]) -> "Request":
        return cls(body, {canonical(k): [v] for k, v in headers.items()})

    def header(self, key: str) -> str:
        return (self.headers.get(canonical(key)) or [""])[0]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise Rejected(f"the body is not JSON ({err})") from None


# --- CEL ------------------------------------------------------------------------------
def _go_numbers(value):
    """Go decodes JSON numbers into float64, so CEL sees doubles."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


def _truncate(text: str, length: int) -> str:
    return text[: max(0, int(length))]


def _parse_url(text: str) -> dict:
    url = urlsplit(text)
    queries = parse_qs(url.query, keep_blank_values=True)
    return {"scheme": url.scheme, "host": url.netloc.rpartition("@")[2], "path": url.path, "rawQuery": url.query,
            "fragment": url.fragment, "queryStrings": queries, "query": {k: ",".join(v) for k, v in queries.items()}}


def _translate(text: str, pattern: str, replacement: str) -> str:
    return re.sub(pattern, re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", replacement), text)


def _nonempty(items: list, name: str) -> list:
    if not items:
        raise ValueError(f"{name}() of an empty list")
    return items


TRIGGERS_FUNCTIONS = {
    "match": lambda headers, key, value: (headers.get(canonical(key)) or [""])[0] == value,
    "canonical": lambda headers, key: (headers.get(canonical(key)) or [""])[0],
    "truncate": _truncate,
    "parseJSON": lambda text: _go_numbers(json.loads(text)),
    "parseYAML": lambda text: _go_numbers(yaml.safe_load(text)),
    "parseURL": _parse_url,
    "marshalJSON": lambda value: json.dumps(value, separators=(",", ":")),
    "first": lambda items: _nonempty(items, "first")[0],
    "last": lambda items: _nonempty(items, "last")[-1],
    "translate": _translate,
}
FUNCTIONS = {}
for library in ("strings", "encoders", "sets", "lists", "math"):  # cel-go's ext libraries Triggers enables
    FUNCTIONS.update(stdlib.EXTENSIONS[library])
FUNCTIONS.update(TRIGGERS_FUNCTIONS)


def evaluate(expression: str, request: Request, body: dict):
    context = cel.Context(
        variables={"body": _go_numbers(body), "header": request.headers, "requestURL": request.url,
                   "extensions": _go_numbers(request.extensions)},
        functions=FUNCTIONS,
    )
    try:
        return cel.compile(expression).execute(context)
    except KeyError as err:
        raise Rejected(f"CEL expression {expression!r} failed: no such key {err.args[0]!r}") from None
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        raise Rejected(f"CEL expression {expression!r} failed: {err}") from None


# --- interceptors ---------------------------------------------------------------------
def _params(interceptor: dict) -> dict:
    return {p["name"]: p["value"] for p in interceptor.get("params") or []}


def github(interceptor: dict, request: Request, secret: str | None) -> None:
    """The github ClusterInterceptor: content type, event type, then the signature."""
    params = _params(interceptor)
    if request.header("Content-Type") == "application/x-www-form-urlencoded":
        raise Rejected("the webhook sends form data; set its content type to application/json")
    event = request.header("X-GitHub-Event")
    if params.get("eventTypes") is not None and event not in params["eventTypes"]:
        raise Rejected(f"event type {event or '(none)'} is not allowed (only {', '.join(params['eventTypes'])})")
    if params.get("secretRef"):
        given = request.header("X-Hub-Signature-256")
        if not given:
            raise Rejected("no X-Hub-Signature-256 header: the request is not signed")
        if secret is None:
            raise Rejected("cannot check the signature without the webhook secret")
        if not hmac.compare_digest(given, signature(request.body, secret)):
            raise Rejected("the X-Hub-Signature-256 signature does not match the body and the webhook secret")


def cel_interceptor(interceptor: dict, request: Request, body: dict) -> None:
    params = _params(interceptor)
    if params.get("filter"):
        result = evaluate(params["filter"], request, body)
        if result is not True:
            raise Rejected(f"stopped by interceptor {interceptor.get('name', 'cel')}: {params['filter']} is false")
    for overlay in params.get("overlays") or []:
        value = evaluate(overlay["expression"], request, body)
        node = request.extensions
        *parents, leaf = overlay["key"].split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value


def run_interceptors(trigger: dict, request: Request, secret: str | None) -> None:
    """Raises Rejected, naming the interceptor, when one of them stops the request."""
    for interceptor in trigger.get("interceptors") or []:
        ref = (interceptor.get("ref") or {}).get("name")
        if ref == "github":
            github(interceptor, request, secret)
        elif ref == "cel":
            cel_interceptor(interceptor, request, request.json())
        else:
            raise Rejected(f"interceptor {ref!r} is not emulated")


# --- bindings and templates -------------------------------------------------------------
_EXPR = re.compile(r"\$\(([^()]+)\)")


def _lookup(root, path: str):
    node = root
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise Rejected(f"the event has no {path}")
    return node


def _as_param(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def bind(binding: dict, request: Request) -> dict[str, str]:
    """TriggerBinding params with $(body.x), $(header.x) and $(extensions.x) resolved."""
    event = {
        "body": request.json(),
        "header": {k: ",".join(v) for k, v in request.headers.items()},
        "extensions": request.extensions,
    }

    def resolve(match):
        root, _, path = match.group(1).partition(".")
        if root not in event:
            raise Rejected(f"binding expression $({match.group(1)}) is not body, header or extensions")
        if root == "header" and path:
            path = canonical(path)
        return _as_param(_lookup(event[root], path) if path else event[root])

    return {p["name"]: _EXPR.sub(resolve, p["value"]) for p in binding["spec"].get("params") or []}


def render(template: dict, params: dict[str, str]) -> list[dict]:
    """The TriggerTemplate's resources with $(tt.params.x) replaced (JSON-escaped)."""
    values = {p["name"]: p.get("default") for p in template["spec"].get("params") or []}
    values.update({k: v for k, v in params.items() if k in values})
    missing = sorted(k for k, v in values.items() if v is None)
    if missing:
        raise Rejected(f"TriggerTemplate params without a value: {', '.join(missing)}")
    text = json.dumps(template["spec"]["resourcetemplates"])
    text = re.sub(r"\$\(tt\.params\.([\w-]+)\)", lambda m: json.dumps(values[m.group(1)])[1:-1], text)
    return json.loads(text)


def process(objects: list[dict], request: Request, secret: str | None) -> list[dict]:
    """What the bundle's EventListener creates for this request; Rejected when nothing."""
    by_kind = lambda kind: {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}  # noqa: E731
    listeners, bindings, templates = by_kind("EventListener"), by_kind("TriggerBinding"), by_kind("TriggerTemplate")
    if len(listeners) != 1:
        raise Rejected(f"expected one EventListener in the bundle, found {len(listeners)}")
    created, reasons = [], []
    for trigger in next(iter(listeners.values()))["spec"]["triggers"]:
        attempt = Request(request.body, request.headers, request.url)
        try:
            run_interceptors(trigger, attempt, secret)
            params: dict[str, str] = {}
            for ref in trigger.get("bindings") or []:
                params.update(bind(bindings[ref["ref"]], attempt))
            created += render(templates[trigger["template"]["ref"]], params)
        except Rejected as why:
            reasons.append(f"{trigger.get('name', 'trigger')}: {why}")
    if not created:
        raise Rejected("; ".join(reasons))
    return created

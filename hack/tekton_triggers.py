"""What a Tekton Triggers (v0.37.0) EventListener does with a request, offline.

Follows tektoncd/triggers v0.37.0's code, from the bundle's own YAML:
- pkg/sink/validate_payload.go IsValidPayload: a body that is not a JSON object gets 400;
  every other request gets 202 Accepted before any trigger runs (pkg/sink/sink.go HandleEvent).
  A rejection or a failed create is only logged, so the answer says nothing about them.
- pkg/sink/sink.go ExecuteInterceptors: interceptors in order, each seeing the original
  body and headers and the extensions so far; what an interceptor returns is merged into
  the extensions shallowly, by top-level key (a later `a.x` overlay drops an earlier `a.y`).
- the github ClusterInterceptor (pkg/interceptors/github/github.go Process): form bodies,
  then the event type, then X-Hub-Signature-256 (go-github ValidateSignature).
- the cel ClusterInterceptor (pkg/interceptors/cel/cel.go, triggers.go): expressions are
  type-checked first (a literal of the wrong type in a Triggers function is an error, as in
  cel-go's checker), a filter that is not `true` rejects, each overlay sees the original
  input and is set into the interceptor's extensions with sjson's dotted paths; Triggers'
  functions, compareSecret included.
- pkg/template/event.go ApplyEventValuesToParams: binding values from $(body...),
  $(header...), $(extensions...); a missing path falls back to the TriggerTemplate's
  default of the same name, else the trigger is abandoned. Values from the event are
  JSON-escaped (html too); literal and default values are not.
- pkg/template/resource.go: the template's params are substituted as raw bytes into the
  resource's JSON, each value with `$(` rewritten to `$$(`; a param with no value stays
  literally; then `$(uid)`.
- pkg/resources/create.go addLabels: the triggers.tekton.dev labels. The API server then
  checks label values; an invalid one fails the create (only logged by the sink).
CEL runs on the common-expression-language package with Triggers' functions; the type
check uses cel-python's parser.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import cel
import yaml
from cel import stdlib
from celpy import celparser
from github_events import signature

logging.getLogger("cel").setLevel(logging.ERROR)  # cel logs a warning per failing callback

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # apimachinery IsValidLabelValue


class Rejected(Exception):
    """The EventListener would not create anything; the message says why."""


def canonical(key: str) -> str:
    """Go's canonical header key: x-github-event -> X-Github-Event."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


@dataclass
class Request:
    body: bytes
    headers: dict[str, list[str]]  # canonical keys
    path: str = "/"  # the sink's r.URL: path and query only (what CEL's requestURL is)
    extensions: dict = field(default_factory=dict)

    @classmethod
    def of(cls, body: bytes, headers: dict[str, str]) -> "Request":
        return cls(body, {canonical(k): [v] for k, v in headers.items()})

    def header(self, key: str) -> str:
        return (self.headers.get(canonical(key)) or [""])[0]


def http_status(body: bytes) -> int:
    """What the sink answers: 400 for a body that is not a JSON object, else 202 (before
    any trigger runs; pkg/sink/validate_payload.go IsValidPayload, sink.go HandleEvent)."""
    try:
        return 202 if isinstance(json.loads(body or b"null"), dict) else 400
    except ValueError:
        return 400


def parse_body(request: Request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as err:
        raise Rejected(f"the body is not JSON ({err})") from None
    if not isinstance(body, dict):
        raise Rejected("the body is not a JSON object")
    return body


# --- CEL: values and Triggers' functions (pkg/interceptors/cel/triggers.go) -----------------
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
    """Bytes, not characters, as Go slices strings; a negative length is an error."""
    if length < 0:
        raise ValueError(f"truncate({length}): slice bounds out of range")
    return text.encode()[: int(length)].decode("utf-8", "ignore")


def _parse_url(text: str) -> dict:
    url = urlsplit(text)
    queries = parse_qs(url.query, keep_blank_values=True)
    result = {"scheme": url.scheme, "host": url.netloc.rpartition("@")[2], "path": url.path, "rawQuery": url.query,
              "fragment": url.fragment, "queryStrings": queries, "query": {k: ",".join(v) for k, v in queries.items()}}
    if url.username is not None:
        result["auth"] = {"username": url.username, "password": url.password or ""}
    return result


def _translate(text: str, pattern: str, replacement: str) -> str:
    return re.sub(pattern, re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", replacement), text)


def _parse_json(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"failed to decode '{text}' in parseJSON: not an object")
    return _go_numbers(value)


def _compare_secret(secrets: dict[tuple[str, str], str]):
    """compareSecret(key, name[, namespace]): the namespace argument is ignored, the
    trigger's own is used (triggers.go makeCompareSecret); a constant-time comparison."""
    def compare(value: str, key: str, name: str, _namespace: str | None = None) -> bool:
        if (name, key) not in secrets:
            raise ValueError(f"failed to find secret '{name}' in compareSecret: cannot find {key} key in secret {name}")
        return hmac.compare_digest(secrets[(name, key)].encode(), value.encode())
    return compare


TRIGGERS_FUNCTIONS = {
    "match": lambda headers, key, value: (headers.get(canonical(key)) or [""])[0] == value,
    "canonical": lambda headers, key: (headers.get(canonical(key)) or [""])[0],
    "truncate": _truncate,
    "parseJSON": _parse_json,
    "parseYAML": lambda text: _go_numbers(yaml.safe_load(text)),
    "parseURL": _parse_url,
    "marshalJSON": lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "translate": _translate,
}
FUNCTIONS = {}
for library in ("strings", "encoders", "sets", "lists", "math"):  # cel-go's ext libraries Triggers enables
    FUNCTIONS.update(stdlib.EXTENSIONS[library])
FUNCTIONS.update(TRIGGERS_FUNCTIONS)

# The member functions whose receiver and argument types cel-go's checker knows: the
# Triggers library (triggers.go CompileOptions) and the string ones of the standard library
# and the ext.Strings library the bundle uses. "dyn" matches anything.
SIGNATURES = {
    "match": ("map", [("string", "string")], "bool"),
    "canonical": ("map", [("string",)], "string"),
    "truncate": ("string", [("int",)], "string"),
    "compareSecret": ("string", [("string", "string"), ("string", "string", "string")], "bool"),
    "parseJSON": ("string", [()], "map"), "parseYAML": ("string", [()], "map"), "parseURL": ("string", [()], "map"),
    "marshalJSON": ("dyn", [()], "string"),
    "first": ("list", [()], "dyn"), "last": ("list", [()], "dyn"),
    "translate": ("string", [("string", "string")], "string"),
    "startsWith": ("string", [("string",)], "bool"), "endsWith": ("string", [("string",)], "bool"),
    "contains": ("string", [("string",)], "bool"), "matches": ("string", [("string",)], "bool"),
    "split": ("string", [("string",), ("string", "int")], "list"),
    "substring": ("string", [("int",), ("int", "int")], "string"),
    "replace": ("string", [("string", "string"), ("string", "string", "int")], "string"),
    "lowerAscii": ("string", [()], "string"), "upperAscii": ("string", [()], "string"), "trim": ("string", [()], "string"),
}
VARIABLES = {"body": "map", "header": "map", "extensions": "map", "requestURL": "string"}


def _literal_type(text: str) -> str:
    if text[:1] in "'\"" or text[:2] in ("r'", 'r"', "R'", 'R"'):
        return "string"
    if text[:2] in ("b'", 'b"', "B'", 'B"'):
        return "bytes"
    if text in ("true", "false"):
        return "bool"
    if text == "null":
        return "null"
    if text.lower().endswith("u"):
        return "uint"
    return "double" if any(c in text for c in ".eE") and not text.startswith("0x") else "int"


def check_types(expression: str) -> None:
    """The part of cel-go's type checker (env.Check) that needs no runtime values: a
    function of Triggers or of the string libraries called on or with a value of another
    static type (a literal, or requestURL) is refused, e.g. 'x'.truncate(7u)."""
    try:
        tree = celparser.CELParser().parse(expression)
    except Exception as err:  # noqa: BLE001 - celpy raises its own parse errors
        raise Rejected(f"failed to parse expression {expression!r}: {str(err).splitlines()[0]}") from None

    def type_of(node) -> str:
        if not hasattr(node, "data"):
            return "dyn"
        children = node.children
        if node.data == "literal":
            return _literal_type(str(children[0]))
        if node.data == "ident":
            return VARIABLES.get(str(children[0]), "dyn")
        if node.data == "member_dot_arg":
            receiver, name = type_of(children[0]), str(children[1])
            args = [type_of(a) for a in (children[2].children if len(children) > 2 and hasattr(children[2], "children") else [])]
            if name in SIGNATURES:
                want, overloads, result = SIGNATURES[name]
                ok_receiver = "dyn" in (receiver, want) or receiver == want
                ok_args = any(len(o) == len(args) and all("dyn" in (a, w) or a == w for a, w in zip(args, o, strict=True)) for o in overloads)
                if not (ok_receiver and ok_args):
                    raise Rejected(f"expression {expression!r} check failed: found no matching overload for '{name}' "
                                   f"applied to '{receiver}.({', '.join(args)})'")
                return result
            return "dyn"
        if len(children) == 1:
            return type_of(children[0])
        for child in children:  # check inside every other construct too
            type_of(child)
        return "bool" if node.data.startswith("relation") or node.data.startswith("conditional") else "dyn"

    type_of(tree)


def evaluate(expression: str, request: Request, body: dict, secrets: dict | None = None):
    check_types(expression)
    functions = {**FUNCTIONS, "compareSecret": _compare_secret(secrets or {})}
    context = cel.Context(
        variables={"body": _go_numbers(body), "header": request.headers, "requestURL": request.path,
                   "extensions": _go_numbers(request.extensions)},
        functions=functions,
    )
    try:
        return cel.compile(expression).execute(context)
    except KeyError as err:
        raise Rejected(f"error evaluating cel expression: expression {expression!r} failed to evaluate: no such key: {err.args[0]}") from None
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        raise Rejected(f"error evaluating cel expression: expression {expression!r} failed to evaluate: {err}") from None


# --- interceptors -----------------------------------------------------------------------------
def _params(interceptor: dict) -> dict:
    return {p["name"]: p["value"] for p in interceptor.get("params") or []}


def github(interceptor: dict, request: Request, secrets: dict) -> dict:
    """pkg/interceptors/github/github.go Process: content type, event type, then the signature."""
    params = _params(interceptor)
    if request.header("Content-Type") == "application/x-www-form-urlencoded":
        raise Rejected("form parameter encoding not supported, please change the hook to send JSON payloads")
    event = request.header("X-GitHub-Event")
    if params.get("eventTypes") is not None and event not in params["eventTypes"]:
        raise Rejected(f"event type {event} is not allowed")
    ref = params.get("secretRef")
    if ref:
        if not ref.get("secretKey"):
            raise Rejected("github interceptor secretRef.secretKey is empty")
        given = request.header("X-Hub-Signature-256")
        if not given:
            raise Rejected("no X-Hub-Signature-256 header set")
        secret = secrets.get((ref.get("secretName"), ref.get("secretKey")))
        if secret is None:
            raise Rejected(f"error getting secret: secrets \"{ref.get('secretName')}\" not found")
        if "=" not in given:
            raise Rejected(f'error parsing signature "{given}"')
        if not hmac.compare_digest(given, signature(request.body, secret)):
            raise Rejected("payload signature check failed")
    return {}


def _sjson_set(target: dict, key: str, value) -> None:
    """sjson.SetRawBytes with a dotted path ("a.b" -> {"a": {"b": value}}; "\\." escapes a dot)."""
    parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", key)]
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _overlay_value(value):
    """cel.go: how an overlay's result is turned into JSON (bytes as base64, null refused)."""
    if value is None:
        raise Rejected("failed to convert overlay result to type: type conversion error from 'null_type' to '[]uint8'")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def cel_interceptor(interceptor: dict, request: Request, body: dict, secrets: dict) -> dict:
    """pkg/interceptors/cel/cel.go Process: the filter, then the overlays, each against the
    original input; returns this interceptor's extensions."""
    params = _params(interceptor)
    if params.get("filter"):
        if evaluate(params["filter"], request, body, secrets) is not True:
            raise Rejected(f"expression {params['filter']} did not return true")
    extensions: dict = {}
    for overlay in params.get("overlays") or []:
        _sjson_set(extensions, overlay["key"], _overlay_value(evaluate(overlay["expression"], request, body, secrets)))
    return extensions


def run_interceptors(trigger: dict, request: Request, secrets: dict) -> None:
    """sink.go ExecuteInterceptors; raises Rejected naming the interceptor that stopped it."""
    body = None
    for interceptor in trigger.get("interceptors") or []:
        ref = (interceptor.get("ref") or {}).get("name")
        name = interceptor.get("name") or ref
        try:
            if ref == "github":
                returned = github(interceptor, request, secrets)
            elif ref == "cel":
                body = parse_body(request) if body is None else body
                returned = cel_interceptor(interceptor, request, body, secrets)
            else:
                raise Rejected(f"interceptor {ref!r} is not emulated")
        except Rejected as why:
            raise Rejected(f"interceptor {name}: {why}") from None
        for key, value in returned.items():  # shallow, by top-level key
            request.extensions[key] = value


# --- bindings and templates ---------------------------------------------------------------------
def expressions_in(value: str) -> list[tuple[int, int, str]]:
    """event.go findTektonExpressions: (start, end, inner) of every $(...), balanced parentheses."""
    found, i = [], 0
    while (start := value.find("$(", i)) != -1:
        depth, j = 1, start + 2
        while j < len(value) and depth:
            depth += {"(": 1, ")": -1}.get(value[j], 0)
            j += 1
        if depth:
            break
        found.append((start, j, value[start + 2:j - 1]))
        i = j
    return found


def _lookup(root, path: str):
    node = root
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise LookupError(f"{part} is not found")
    return node


def _go_json(value) -> str:
    """json.Marshal: compact, map keys sorted, <, > and & escaped; a lone string loses its quotes."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text[1:-1] if isinstance(value, str) else text


def bind(binding: dict, request: Request, defaults: dict[str, str]) -> dict[str, str]:
    """event.go ApplyEventValuesToParams: the template's defaults, overwritten by the binding's
    params with their $(body/header/extensions...) resolved."""
    event = {"body": parse_body(request) if request.body else None,
             "header": {k: ",".join(v) for k, v in request.headers.items()}, "extensions": request.extensions}
    params = dict(defaults)
    for param in binding["spec"].get("params") or []:
        value, out, last = param["value"], "", 0
        for start, end, inner in expressions_in(value):
            root, _, path = inner.partition(".")
            if root == "header" and path:
                path = canonical(path)
            try:
                if root not in event:
                    raise LookupError(f"{root} is not found")
                replacement = _go_json(_lookup(event[root], path) if path else event[root])
            except LookupError as err:
                if param["name"] not in defaults:
                    raise Rejected(f"failed to ApplyEventValuesToParams: failed to replace JSONPath value for param "
                                   f"{param['name']}: $({inner}): {err}") from None
                replacement = defaults[param["name"]]
            out += value[last:start] + replacement
            last = end
        params[param["name"]] = out + value[last:]
    return params


def render(template: dict, params: dict[str, str]) -> list[dict]:
    """resource.go ResolveResources: raw substitution into each resource's JSON text."""
    declared = [p["name"] for p in template["spec"].get("params") or []]
    uid = str(uuid.uuid4())
    resources = []
    for resource in template["spec"]["resourcetemplates"]:
        text = json.dumps(resource, separators=(",", ":"))
        for name in declared:
            if name in params:
                text = text.replace(f"$(tt.params.{name})", params[name].replace("$(", "$$("))
        text = text.replace("$(uid)", uid)
        try:
            resources.append(json.loads(text))
        except ValueError as err:
            raise Rejected(f"couldn't unmarshal json from the TriggerTemplate: {err}") from None
    return resources


def validate_template(template: dict) -> list[str]:
    """trigger_template_validation.go verifyParamDeclarations: every $(tt.params.X) declared."""
    declared = {p["name"] for p in template["spec"].get("params") or []}
    used = set(re.findall(r"\$\(tt.params.([_a-zA-Z][_a-zA-Z0-9.-]*)\)", json.dumps(template["spec"].get("resourcetemplates"))))
    return [f"invalid value: undeclared param '$(tt.params.{name})'" for name in sorted(used - declared)]


def label_problems(obj: dict) -> list[str]:
    """The API server refuses an object with an invalid label value (the sink logs
    "problem creating obj" and nothing is created)."""
    return [f"metadata.labels: Invalid value: {value!r}: a valid label value must be 63 characters or less and must be "
            "empty or begin and end with an alphanumeric character"
            for value in ((obj.get("metadata") or {}).get("labels") or {}).values()
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value)]


def process(objects: list[dict], request: Request, secrets: dict[tuple[str, str], str]) -> list[dict]:
    """What the bundle's EventListener creates for this request; Rejected when nothing.
    `secrets` maps (Secret name, key) to the value, as the listener's namespace holds them."""
    by_kind = lambda kind: {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}  # noqa: E731
    listeners, bindings, templates = by_kind("EventListener"), by_kind("TriggerBinding"), by_kind("TriggerTemplate")
    if len(listeners) != 1:
        raise Rejected(f"expected one EventListener in the bundle, found {len(listeners)}")
    listener = next(iter(listeners.values()))
    if http_status(request.body) == 400:
        raise Rejected("the listener answers 400: the body is not a JSON object")
    created, reasons = [], []
    for trigger in listener["spec"]["triggers"]:
        attempt = Request(request.body, request.headers, request.path)
        try:
            run_interceptors(trigger, attempt, secrets)
            template = templates[trigger["template"]["ref"]]
            defaults = {p["name"]: p["default"] for p in template["spec"].get("params") or [] if p.get("default") is not None}
            params = dict(defaults)
            for ref in trigger.get("bindings") or []:
                params.update(bind(bindings[ref["ref"]], attempt, defaults))
            for obj in render(template, params):
                obj.setdefault("metadata", {}).setdefault("labels", {}).update({
                    "triggers.tekton.dev/eventlistener": listener["metadata"]["name"],
                    "triggers.tekton.dev/trigger": trigger.get("name", ""),
                    "triggers.tekton.dev/triggers-eventid": str(uuid.uuid4()),
                })
                problems = label_problems(obj)
                if problems:
                    raise Rejected(f"the create fails: {problems[0]}")
                created.append(obj)
        except Rejected as why:
            reasons.append(f"{trigger.get('name', 'trigger')}: {why}")
    if not created:
        raise Rejected("; ".join(reasons))
    return created

"""What a Tekton Triggers (v0.37.0) EventListener does with a request, offline.

Follows tektoncd/triggers v0.37.0's code, from the bundle's own YAML:
- pkg/sink/validate_payload.go IsValidPayload: 400 when Go's json.Unmarshal into a
  map[string]interface{} fails (see go_unmarshal: `null` passes, a byte-order mark, NaN or
  nesting deeper than 10000 do not); every other request gets 202 Accepted before any trigger
  runs (pkg/sink/sink.go HandleEvent). A rejection or a failed create is only logged, so the
  answer says nothing about them.
- pkg/sink/sink.go ExecuteInterceptors: interceptors in order, each seeing the body and headers
  and the extensions so far; what an interceptor returns is merged into the extensions
  shallowly, by top-level key (a later `a.x` overlay drops an earlier `a.y`). The body reaches
  them as a JSON string (interceptors.go Execute), so invalid UTF-8 arrives as U+FFFD
  (interceptor_body); the bindings get the bytes as sent.
- the github ClusterInterceptor (pkg/interceptors/github/github.go Process): form bodies,
  then the event type, then X-Hub-Signature-256 (go-github v31 ValidateSignature:
  github_events.validate_signature) over the body it received.
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
check uses cel-python's parser. process() runs on a thread with a large stack (see deep_stack).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import logging
import math
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import cel
import yaml
from cel import stdlib
from celpy import celparser
from github_events import go_quote, validate_signature

from steps.start import defaults as template_defaults
from steps.start import event_value, go_escape
from steps.start import render as resolve_resources

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


# --- Go's encoding/json, as the sink and the interceptors decode ----------------------------------
# golang/go src/encoding/json (Triggers v0.37.0's go.mod: go 1.26.4). Unmarshal runs scanner.go
# checkValid over the whole input first, so a syntax error wins over any other: only space, \t,
# \r and \n are whitespace (a byte-order mark is not), NaN and Infinity are not numbers, and a
# 10001st level of nesting is an error (pushParseState, maxNestingDepth). Then decode.go: numbers
# become float64 (convertNumber; out of range is an error, saved until the end), a later
# duplicate key wins (objectInterface), and unquoteBytes turns every byte that is not UTF-8 and
# every unpaired \uD800-\uDFFF escape into U+FFFD. Decoding into a map: `null` gives a nil map
# and no error; any other non-object is an UnmarshalTypeError.
MAX_DEPTH = 10000
_SPACE = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*')  # all but the closing quote
_DIGITS = re.compile(rb"[0-9]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LITERALS = {ord("t"): (b"true", True), ord("f"): (b"false", False), ord("n"): (b"null", None)}
_CLOSES = {"key-or-close": 0x7D, "value-or-close": 0x5D}  # after '{' or '[': '}' or ']' ends it empty
_KINDS = {list: "array", str: "string", float: "number", bool: "bool"}


def go_text(raw: bytes) -> str:
    """Bytes read as UTF-8 the way Go does (utf8.DecodeRune): each byte of an invalid or
    truncated sequence is one U+FFFD."""
    return _SURROGATE.sub("\ufffd", raw.decode("utf-8", "surrogateescape"))


def interceptor_body(body: bytes) -> bytes:
    """The body the interceptors get: sink.go ExecuteInterceptors puts string(event) in the
    InterceptorRequest, interceptors.go Execute json.Marshals it (encode.go appendString writes
    \\ufffd for each byte that is not UTF-8) and the interceptor server unmarshals it again."""
    return go_text(body).encode()


def _syntax_error(byte: int, context: str) -> ValueError:
    """scanner.go error and quoteChar."""
    char = {0x27: "'\\''", 0x22: "'\"'"}.get(byte) or "'" + go_quote(chr(byte))[1:-1] + "'"
    return ValueError(f"invalid character {char} {context}")


def _go_string(data: bytes, start: int) -> tuple[str, int]:
    end = _STRING.match(data, start).end()
    if end == len(data):
        raise ValueError("unexpected end of JSON input")
    if data[end] == 0x22:
        token = data[start:end + 1]
        if b"\\" not in token:
            return go_text(token[1:-1]), end + 1
        return _SURROGATE.sub("\ufffd", json.loads(token.decode("utf-8", "surrogateescape"))), end + 1
    if data[end] != 0x5C:
        raise _syntax_error(data[end], "in string literal")  # a control character
    if data[end + 1] != ord("u"):
        raise _syntax_error(data[end + 1], "in string escape code")
    bad = next(i for i in range(end + 2, end + 6) if data[i] not in _HEX)  # the input ends with a space
    raise _syntax_error(data[bad], "in \\u hexadecimal character escape")


def _go_number(data: bytes, start: int) -> tuple[float, int, ValueError | None]:
    end = start + (data[start] == 0x2D)
    if data[end] == 0x30:
        end += 1
    elif 0x31 <= data[end] <= 0x39:
        end = _DIGITS.match(data, end + 1).end()
    else:
        raise _syntax_error(data[end], "in numeric literal")
    if data[end] == 0x2E:
        if not 0x30 <= data[end + 1] <= 0x39:
            raise _syntax_error(data[end + 1], "after decimal point in numeric literal")
        end = _DIGITS.match(data, end + 1).end()
    if data[end] in b"eE":
        digit = end + 1 + (data[end + 1] in b"+-")
        if not 0x30 <= data[digit] <= 0x39:
            raise _syntax_error(data[digit], "in exponent of numeric literal")
        end = _DIGITS.match(data, digit).end()
    token = data[start:end].decode()
    value = float(token)  # correctly rounded, as strconv.ParseFloat; underflow is 0, not an error
    error = ValueError(f"json: cannot unmarshal number {token} into Go value of type float64") if math.isinf(value) else None
    return value, end, error


def go_unmarshal(data: bytes, into_map: bool = True):
    """json.Unmarshal(data, &v), v a map[string]interface{} (into_map) or an interface{}: dict,
    list, str, float, bool or None, or ValueError with Go's message. Iterative: any depth Go
    accepts costs no recursion."""
    data += b" "  # scanner.eof reads the end as one more space
    stack: list[list] = []  # open containers, each [container, its pending key]
    state, top, saved, i = "value", None, None, 0
    while True:
        i = _SPACE.match(data, i).end()
        if i == len(data):
            break
        c, value = data[i], None
        if state == "end":
            raise _syntax_error(c, "after top-level value")
        if state == "colon":
            if c != 0x3A:
                raise _syntax_error(c, "after object key")
            state, i = "value", i + 1
            continue
        if state == "next":  # after a value in a container: ',' or its closing bracket
            in_object = isinstance(stack[-1][0], dict)
            if c == 0x2C:
                state, i = ("key" if in_object else "value"), i + 1
                continue
            if c != (0x7D if in_object else 0x5D):
                raise _syntax_error(c, "after object key:value pair" if in_object else "after array element")
            value, i = stack.pop()[0], i + 1
        elif c == _CLOSES.get(state):
            value, i = stack.pop()[0], i + 1
        elif state in ("key", "key-or-close"):
            if c != 0x22:
                raise _syntax_error(c, "looking for beginning of object key string")
            stack[-1][1], i = _go_string(data, i)
            state = "colon"
            continue
        elif c in b"{[":
            if len(stack) == MAX_DEPTH:
                raise _syntax_error(c, "exceeded max depth")
            stack.append([{} if c == 0x7B else [], None])
            state, i = ("key-or-close" if c == 0x7B else "value-or-close"), i + 1
            continue
        elif c == 0x22:
            value, i = _go_string(data, i)
        elif c == 0x2D or 0x30 <= c <= 0x39:
            value, i, error = _go_number(data, i)
            saved = saved or error
        elif c in _LITERALS:
            word, value = _LITERALS[c]
            wrong = next((k for k in range(1, len(word)) if data[i + k] != word[k]), None)
            if wrong is not None:
                raise _syntax_error(data[i + wrong], f"in literal {word.decode()} (expecting {chr(word[wrong])!r})")
            i += len(word)
        else:
            raise _syntax_error(c, "looking for beginning of value")
        if not stack:
            state, top = "end", value
        elif isinstance(stack[-1][0], dict):
            stack[-1][0][stack[-1][1]], state = value, "next"
        else:
            stack[-1][0].append(value)
            state = "next"
    if state != "end":
        raise ValueError("unexpected end of JSON input")
    if into_map and top is not None and not isinstance(top, dict):
        raise ValueError(f"json: cannot unmarshal {_KINDS[type(top)]} into Go value of type map[string]interface {{}}")
    if saved:
        raise saved
    return top


def validate_payload(body: bytes) -> None:
    """pkg/sink/validate_payload.go IsValidPayload: the sink answers 400 when the body does not
    decode into a map[string]interface{} (Rejected says so), else 202 (sink.go HandleEvent)."""
    try:
        go_unmarshal(body)
    except ValueError as err:
        raise Rejected(f"the listener answers 400: Invalid event body format : {err}") from None


def deep_stack(function):
    """Run `function` on a thread with a 512 MiB stack and a recursion limit of 100000, so that
    values nested as deep as Go accepts (10000 levels) do not crash it: the cel package converts
    them to CEL values recursively in Rust, which overflows the main thread's 8 MiB stack
    (SIGSEGV, no traceback) at about 10000 levels, and Python recursion (json.loads of a rendered
    template, _go_json, _go_numbers) needs about one frame per level."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        outcome: list = []

        def target():
            try:
                outcome.append((True, function(*args, **kwargs)))
            except BaseException as err:  # noqa: BLE001 - re-raised on the calling thread
                outcome.append((False, err))

        sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
        previous = threading.stack_size(512 << 20)
        try:
            worker = threading.Thread(target=target, name=function.__name__)
            worker.start()
        finally:
            threading.stack_size(previous)
        worker.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value
    return run


# --- CEL: values and Triggers' functions (pkg/interceptors/cel/triggers.go) -----------------
def _go_numbers(value):
    """Go decodes JSON and YAML numbers into float64, so CEL sees doubles (go_unmarshal's already are)."""
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
    """triggers.go parseJSONString: json.Unmarshal into a map (`null` gives an empty one)."""
    try:
        value = go_unmarshal(text.encode())
    except ValueError as err:
        raise ValueError(f"failed to decode '{text}' in parseJSON: {err}") from None
    return {} if value is None else value


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
    """`body` as go_unmarshal decodes it (numbers are already float64)."""
    check_types(expression)
    functions = {**FUNCTIONS, "compareSecret": _compare_secret(secrets or {})}
    context = cel.Context(
        variables={"body": body, "header": request.headers, "requestURL": request.path,
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
    """pkg/interceptors/github/github.go Process: content type, event type, then the signature
    of the body as the interceptor received it (interceptor_body), not as it was sent."""
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
        try:
            validate_signature(given, interceptor_body(request.body), secret)
        except ValueError as err:
            raise Rejected(str(err)) from None
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


def _cel_body(request: Request) -> dict:
    """cel.go Process and makeEvalContext: the body it received (`{}` when empty) decoded into a
    map; a nil map (from `null`) is an empty map to cel-go (types.NewStringInterfaceMap)."""
    try:
        body = go_unmarshal(interceptor_body(request.body) or b"{}")
    except ValueError as err:
        raise Rejected(f"error making the evaluation context: failed to parse the body as JSON: {err}") from None
    return {} if body is None else body


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
                body = _cel_body(request) if body is None else body
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


def _go_float(number: float) -> str:
    """encode.go floatEncoder: the shortest digits that read back (as repr), positional from 1e-6
    to 1e21, else with an exponent of as few digits as needed (1e-7, 1e+21)."""
    return format(Decimal(repr(number)).normalize(), "f" if number == 0 or 1e-6 <= abs(number) < 1e21 else "e")


def _go_json(value) -> str:
    """json.Marshal: compact, map keys sorted, numbers as Go writes a float64, <, > and &
    escaped; a lone string loses its quotes."""
    def encode(item) -> str:
        if isinstance(item, dict):
            return "{" + ",".join([encode(key) + ":" + encode(item[key]) for key in sorted(item)]) + "}"
        if isinstance(item, list):
            return "[" + ",".join([encode(element) for element in item]) + "]"
        return _go_float(item) if isinstance(item, float) else json.dumps(item, ensure_ascii=False)
    if isinstance(value, str):
        return event_value(value)
    return go_escape(encode(value))


def bind(binding: dict, request: Request, defaults: dict[str, str]) -> dict[str, str]:
    """event.go ApplyEventValuesToParams: the template's defaults, overwritten by the binding's
    params with their $(body/header/extensions...) resolved."""
    try:
        body = go_unmarshal(request.body, into_map=False) if request.body else None  # event.go newEvent
    except ValueError as err:
        raise Rejected(f"failed to ApplyEventValuesToParams: failed to marshal event: failed to unmarshal request body: {err}") from None
    event = {"body": body,
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
    """resource.go ResolveResources (steps/start.py render, which canary-start uses too)."""
    try:
        return resolve_resources(template, params)
    except ValueError as err:
        raise Rejected(f"couldn't unmarshal json from the TriggerTemplate: {err}") from None


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


def selected(triggers: list[dict], selector: dict | None) -> list[dict]:
    """sink.go selectTriggers: the listener's namespace's Triggers its label selector matches
    (matchLabels; the bundle uses no matchExpressions)."""
    if not selector:
        return []
    if selector.get("matchExpressions"):
        raise Rejected("matchExpressions in a trigger selector are not emulated")
    wanted = selector.get("matchLabels") or {}
    return [t for t in triggers if all(((t["metadata"].get("labels") or {}).get(k)) == v for k, v in wanted.items())]


def process_trigger(trigger: dict, name: str, listener: dict, request: Request, extensions: dict, secrets: dict,
                    bindings: dict, templates: dict) -> list[dict]:
    """sink.go processTrigger: its interceptors (starting from the group's extensions), its
    bindings, its template, the labels the sink adds; Rejected when it creates nothing."""
    attempt = Request(request.body, request.headers, request.path, dict(extensions))
    run_interceptors(trigger, attempt, secrets)
    template = templates[trigger["template"]["ref"]]
    fallback = template_defaults(template)
    params = dict(fallback)
    for ref in trigger.get("bindings") or []:
        params.update(bind(bindings[ref["ref"]], attempt, fallback))
    created = []
    for obj in render(template, params):
        obj.setdefault("metadata", {}).setdefault("labels", {}).update({
            "triggers.tekton.dev/eventlistener": listener["metadata"]["name"],
            "triggers.tekton.dev/trigger": name,
            "triggers.tekton.dev/triggers-eventid": str(uuid.uuid4()),
        })
        problems = label_problems(obj)
        if problems:
            raise Rejected(f"the create fails: {problems[0]}")
        created.append(obj)
    return created


@deep_stack
def process(objects: list[dict], request: Request, secrets: dict[tuple[str, str], str], notes: list[str] | None = None) -> list[dict]:
    """What the bundle's EventListener creates for this request; Rejected when nothing.
    `secrets` maps (Secret name, key) to the value, as the listener's namespace holds them.
    sink.go HandleEvent: the listener's own triggers (inline, and the Triggers its selectors
    pick), then each trigger group: the group's interceptors once, and if they pass, every
    Trigger its triggerSelector picks, each starting from the group's extensions
    (processTriggerGroups). `notes` receives what a user should know besides the result."""
    by_kind = lambda kind: {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}  # noqa: E731
    listeners, bindings, templates = by_kind("EventListener"), by_kind("TriggerBinding"), by_kind("TriggerTemplate")
    triggers = list(by_kind("Trigger").values())
    if len(listeners) != 1:
        raise Rejected(f"expected one EventListener in the bundle, found {len(listeners)}")
    listener = next(iter(listeners.values()))
    spec = listener["spec"]
    validate_payload(request.body)
    created, reasons = [], []
    work = [(t.get("name", "trigger"), t, {}) for t in spec.get("triggers") or []]
    work += [(t["metadata"]["name"], t["spec"], {}) for t in selected(triggers, spec.get("labelSelector"))]
    for group in spec.get("triggerGroups") or []:
        attempt = Request(request.body, request.headers, request.path)
        try:
            run_interceptors(group, attempt, secrets)
        except Rejected as why:
            reasons.append(f"{group.get('name', 'group')}: {why}")
            continue
        members = selected(triggers, (group.get("triggerSelector") or {}).get("labelSelector"))
        apps = attempt.extensions.get("apps")
        if notes is not None and isinstance(apps, list) and len(apps) > len(members):
            notes.append(f"{len(apps)} apps matched, but the group {group.get('name')} has only {len(members)} Triggers: the "
                         f"apps after the first {len(members)} are not rolled out (add Triggers to triggers/triggers.yaml)")
        work += [(t["metadata"]["name"], t["spec"], attempt.extensions) for t in members]
    for name, trigger, extensions in work:
        try:
            created += process_trigger(trigger, name, listener, request, extensions, secrets, bindings, templates)
        except Rejected as why:
            reasons.append(f"{name}: {why}")
    if not created:
        raise Rejected("; ".join(reasons))
    return created

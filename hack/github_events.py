"""GitHub webhook requests as GitHub sends them: shared by hack/send-webhook.py and hack/preview."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

ZERO_SHA = "0" * 40
HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def signature(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def go_quote(text: str) -> str:
    """Go's strconv.Quote (fmt's %q) of a string: printable characters as they are, others
    escaped; a byte that is not UTF-8 (a surrogate escape here) as \\xNN."""
    def one(char: str) -> str:
        code = ord(char)
        if char in GO_ESCAPES:
            return GO_ESCAPES[char]
        if char.isprintable():  # the same classes as Go's unicode.IsPrint
            return char
        if code < 0x20 or code == 0x7F or 0xDC80 <= code <= 0xDCFF:
            return f"\\x{code & 0xFF:02x}"
        return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return '"' + "".join(map(one, text)) + '"'


def validate_signature(value: str, payload: bytes, secret: str) -> None:
    """go-github v31.0.0 github/messages.go ValidateSignature, which Tekton Triggers' github
    interceptor applies to X-Hub-Signature-256: the hash is named by the text before the first
    '=' (exactly sha1, sha256 or sha512), the rest is its HMAC of the payload in hex of either
    case (encoding/hex DecodeString), compared in constant time. Raises ValueError with its message."""
    if not value:
        raise ValueError("missing signature")
    prefix, equals, digest = value.partition("=")
    if not equals:
        raise ValueError(f"error parsing signature {go_quote(value)}")
    if prefix not in HASHES:
        raise ValueError(f"unknown hash type prefix: {go_quote(prefix)}")
    raw = digest.encode("utf-8", "surrogateescape")
    bad = next((byte for byte in raw if byte not in HEX_DIGITS), None)  # hex.Decode reports the first one
    if bad is not None or len(raw) % 2:
        printable = f" '{chr(bad)}'" if bad is not None and chr(bad).isprintable() else ""  # %#U
        reason = f"invalid byte: U+{bad:04X}{printable}" if bad is not None else "odd length hex string"
        raise ValueError(f"error decoding signature {go_quote(value)}: encoding/hex: {reason}")
    if not hmac.compare_digest(bytes.fromhex(digest), hmac.new(secret.encode(), payload, HASHES[prefix]).digest()):
        raise ValueError("payload signature check failed")


def headers(event: str, body: bytes, secret: str | None, signature_value: str | None = None) -> dict[str, str]:
    """Headers of a webhook delivery; signed with `secret` unless `signature_value` overrides it."""
    result = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/iter8-tekton",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }
    if signature_value is not None:
        result["X-Hub-Signature-256"] = signature_value
    elif secret is not None:
        result["X-Hub-Signature-256"] = signature(body, secret)
    return result


def push_payload(repository: str, branch: str, commit: str, before: str = ZERO_SHA) -> bytes:
    """A minimal push event body with the fields GitHub always sends and the bundle reads. It
    lists no commits, as GitHub's push does for a branch created at an existing commit: which
    files changed is not known here, so every listed app of the branch rolls out."""
    owner, name = repository.split("/", 1)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {
        "ref": f"refs/heads/{branch}",
        "before": before,
        "after": commit,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{repository}/compare/{before[:12]}...{commit[:12]}",
        "commits": [],
        "head_commit": {"id": commit, "message": "a change", "timestamp": now},
        "repository": {
            "name": name,
            "full_name": repository,
            "owner": {"login": owner, "name": owner},
            "clone_url": f"https://github.com/{repository}.git",
            "html_url": f"https://github.com/{repository}",
            "default_branch": "main",
        },
        "pusher": {"name": owner, "email": f"{owner}@users.noreply.github.com"},
        "sender": {"login": owner},
    }
    return json.dumps(body, indent=2).encode()

"""GitHub webhook requests as GitHub sends them: shared by hack/send-webhook.py and hack/preview."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

ZERO_SHA = "0" * 40


def signature(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value: HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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
    """A minimal push event body with the fields GitHub always sends and the bundle reads."""
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
        "commits": [{"id": commit, "message": "a change", "timestamp": now, "added": [], "removed": [], "modified": []}],
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

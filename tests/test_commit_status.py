"""commit_status against a local fake GitHub API: payloads, auth, and that GitHub's
failures never fail the rollout."""

from __future__ import annotations

import json

import pytest
from werkzeug import Response

from cluster import NS, experiment_v2, v2_completed, v2_running

SHA = "3f2a1bc9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
TOKEN = "ghp_test0123456789"
RUN = "canary-rollout-3f2a1bc-x7k2p"


def args(httpserver, phase, *extra):
    return ("--repo-url", "https://github.com/example/reviews.git", "--commit", SHA, "--namespace", NS, "--run", RUN,
            "--phase", phase, "--api-url", httpserver.url_for("/").rstrip("/"), *extra)


@pytest.fixture
def github(httpserver, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    received = []

    def handler(request):
        received.append({"headers": dict(request.headers), "body": json.loads(request.get_data())})
        return Response(json.dumps({"state": received[-1]["body"]["state"]}), status=201)

    httpserver.expect_request(f"/repos/example/reviews/statuses/{SHA}", method="POST").respond_with_handler(handler)
    return received


def experiment(fake_api, status):
    exp = experiment_v2("reviews-3f2a1bc", "reviews-v1", "reviews-3f2a1bc", status)
    exp["metadata"]["labels"] = {"iter8-tekton.dev/run": RUN}
    fake_api.put("experiments", exp)


def test_pending_at_the_start_with_a_link(github, httpserver, step, fake_api):
    result = step("commit_status", *args(httpserver, "start", "--dashboard-url", "https://tekton.example.com/"))
    assert result.code == 0, result.err
    (sent,) = github
    assert sent["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert sent["headers"]["Accept"] == "application/vnd.github+json"
    assert sent["body"] == {"state": "pending", "description": f"canary rollout {RUN} started", "context": "iter8-tekton/canary",
                            "target_url": f"https://tekton.example.com/#/namespaces/{NS}/pipelineruns/{RUN}"}


@pytest.mark.parametrize(
    ("status", "tasks", "state", "description"),
    [
        (v2_completed("reviews-v1", "reviews-3f2a1bc", "Traffic To Winner", "reviews-3f2a1bc", (0, 100)), "Succeeded",
         "success", "promoted reviews-3f2a1bc, 100% traffic"),
        (v2_completed("reviews-v1", "reviews-3f2a1bc", "Traffic To Winner", "reviews-v1", (100, 0), breached=True), "Failed",
         "failure", "rolled back: criteria failed: iter8_mean_latency"),
        (v2_running("reviews-v1", "reviews-3f2a1bc", 5, 60), "Failed", "error", "the run ended before its experiment did (tasks: Failed)"),
        (None, "Failed", "error", "the run ended before its experiment started (tasks: Failed)"),
    ],
)
def test_outcome_at_the_end(github, httpserver, step, fake_api, status, tasks, state, description):
    if status is not None:
        experiment(fake_api, status)
    result = step("commit_status", *args(httpserver, "end", "--tasks-status", tasks))
    assert result.code == 0, result.err
    assert github[0]["body"]["state"] == state and github[0]["body"]["description"] == description
    assert "target_url" not in github[0]["body"]


def test_no_token_means_reporting_is_off(httpserver, step, fake_api, monkeypatch):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    result = step("commit_status", *args(httpserver, "start"))
    assert result.code == 0 and "commit status reporting is off: no GitHub token" in result.out
    assert httpserver.log == []


def test_a_branch_name_instead_of_a_sha_turns_reporting_off(github, httpserver, step, fake_api):
    result = step("commit_status", "--repo-url", "https://github.com/example/reviews.git", "--commit", "main",
                  "--namespace", NS, "--run", RUN, "--phase", "start", "--api-url", httpserver.url_for("/"))
    assert result.code == 0 and "reporting is off" in result.out and github == []


def test_github_500_does_not_fail_the_run(httpserver, step, fake_api, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    httpserver.expect_request(f"/repos/example/reviews/statuses/{SHA}").respond_with_data("oops", status=500)
    result = step("commit_status", *args(httpserver, "start"))
    assert result.code == 0 and "GitHub answered 500" in result.out


def test_github_timeout_does_not_fail_the_run(httpserver, step, fake_api, monkeypatch):
    import time

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setattr("steps.commit_status.TIMEOUT", 0.5, raising=False)
    httpserver.expect_request(f"/repos/example/reviews/statuses/{SHA}").respond_with_handler(lambda r: time.sleep(2) or Response("", 201))
    started = time.monotonic()
    result = step("commit_status", *args(httpserver, "start"))
    assert result.code == 0 and "could not set the commit status (ReadTimeout)" in result.out
    assert time.monotonic() - started < 2


def test_kubernetes_down_reports_error_and_succeeds(github, httpserver, step, fake_api):
    fake_api.inject("list", "experiments", status=503, times=None)
    result = step("commit_status", *args(httpserver, "end", "--tasks-status", "Failed"))
    assert result.code == 0
    assert github[0]["body"]["state"] == "error" and github[0]["body"]["description"].startswith("outcome unknown:")

"""wait_completion follows the experiment with a watch and reports the outcome."""

from __future__ import annotations

import signal
import time

import pytest

from cluster import NS, V1, V2, experiment_v1, experiment_v2, v1_2019, v1_completed, v2_completed, v2_running
from conftest import STOPS_WITHIN, wait_for

B, C = "reviews-v1", "reviews-3f2a1bc"


def wait_args(tmp_path, *extra):
    return ("--namespace", NS, "--experiment", C, "--results-dir", str(tmp_path / "results"),
            "--stop-file", str(tmp_path / "stop"), *extra)


def results(tmp_path) -> dict:
    return {p.name: p.read_text() for p in (tmp_path / "results").iterdir()}


def watching(fake_api, count=1):
    return lambda: len(fake_api.calls("watch", "experiments")) >= count


def test_promoted_after_progress(fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    proc = start_step("wait_completion", *wait_args(tmp_path))
    wait_for(watching(fake_api), what="the watch")
    fake_api.patch_status(V2, "experiments", NS, C, v2_running(B, C, 2, 40, best=C))
    fake_api.patch_status(V2, "experiments", NS, C, {"message": "unrelated change only"})  # no new line
    fake_api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "iteration 1; traffic reviews-v1 80%, reviews-3f2a1bc 20%" in out
    assert "iteration 2; traffic reviews-v1 60%, reviews-3f2a1bc 40%; best so far reviews-3f2a1bc" in out
    assert out.count("Progressing") == 2
    assert results(tmp_path) == {"outcome": "promoted", "winner": C, "loser": B,
                                 "summary": f"promoted {C}, 100% traffic"}
    assert (tmp_path / "stop").exists()
    # One GET per API version probed and one watch: no polling.
    assert len(fake_api.calls("get")) == 1 and len(fake_api.calls("watch")) == 1


def test_rolled_back_exits_1(fake_api, step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_completed(B, C, "Traffic To Winner", B, (100, 0), breached=True)))
    result = step("wait_completion", *wait_args(tmp_path))
    assert result.code == 1
    assert result.err.strip() == f"error: candidate {C} was not promoted: rolled back: criteria failed: iter8_mean_latency"
    assert results(tmp_path)["outcome"] == "rolled-back"
    assert results(tmp_path)["winner"] == B and results(tmp_path)["loser"] == C


def test_timeout_exits_3_and_deletes_nothing(fake_api, step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    result = step("wait_completion", *wait_args(tmp_path, "--timeout", "1"))
    assert result.code == 3 and "did not complete within 1s; nothing was deleted" in result.err
    assert results(tmp_path) == {"outcome": "timed-out", "winner": "", "loser": "", "summary": "timed out"}
    assert fake_api.calls("delete") == []


def test_missing_experiment_exits_2(fake_api, step, tmp_path):
    result = step("wait_completion", *wait_args(tmp_path))
    assert result.code == 2 and f"experiment {NS}/{C} does not exist" in result.err


@pytest.mark.parametrize("fault", ["gone", "cut"])
def test_watch_resumes_after_410_and_broken_streams(fake_api, start_step, tmp_path, fault):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    fake_api.inject("watch", "experiments", action=fault, times=2)
    proc = start_step("wait_completion", *wait_args(tmp_path))
    wait_for(watching(fake_api, 3), what="the third watch")
    fake_api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert results(tmp_path)["outcome"] == "promoted"


def test_410_from_compaction_relists(fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    fake_api.put("experiments", experiment_v2("other", B, "reviews-other"))
    fake_api.inject("watch", "experiments", action="cut", times=1)
    fake_api.compact()  # the experiment's own resourceVersion is now too old to watch from
    proc = start_step("wait_completion", *wait_args(tmp_path))
    wait_for(watching(fake_api, 3), what="a watch after the re-list")
    fake_api.patch_status(V2, "experiments", NS, C, v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert len(fake_api.calls("get")) == 1 and len(fake_api.calls("list")) == 1  # re-listed after 410


def test_deleted_while_waiting(fake_api, start_step, tmp_path):
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    proc = start_step("wait_completion", *wait_args(tmp_path))
    wait_for(watching(fake_api), what="the watch")
    fake_api.remove(V2, "experiments", NS, C)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "was deleted while waiting; nothing was deleted" in err
    assert results(tmp_path)["outcome"] == "inconclusive"


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [(v1_completed(True, (0, 100)), 0, "promoted"), (v1_2019("Failed", (100, 0)), 1, "rolled-back"),
     (v1_2019("Succeeded", (0, 100)), 0, "promoted")],
)
def test_v1alpha1_experiments(fake_api, step, tmp_path, status, code, outcome):
    fake_api.put("experiments", experiment_v1(C, B, C, status))
    result = step("wait_completion", *wait_args(tmp_path))
    assert result.code == code, result.err
    assert results(tmp_path)["outcome"] == outcome
    assert fake_api.get(V1, "experiments", NS, C)  # found by probing v1alpha2 first, then v1alpha1


def test_api_down_exits_4(fake_api, step, tmp_path):
    fake_api.inject("get", "experiments", status=503, times=None)
    result = step("wait_completion", *wait_args(tmp_path))
    assert result.code == 4 and "failed 6 times, last: 503" in result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("fault", ["hold", "chatter"])
def test_timeout_is_a_hard_deadline_when_the_server_never_ends_the_watch(fake_api, start_step, tmp_path, fault):
    """The server (or a proxy) ignores timeoutSeconds: silent, or sending bookmarks forever.
    kube.watch shuts the stream at the deadline itself (urllib3 HTTPResponse.shutdown)."""
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    fake_api.inject("watch", "experiments", action=fault, times=None)
    proc = start_step("wait_completion", *wait_args(tmp_path, "--timeout", "1.5"))
    out, err = proc.communicate(timeout=30)
    exited = time.monotonic()
    assert proc.returncode == 3, err
    assert "did not complete within 1.5s" in err
    took = exited - fake_api.calls("get", "experiments")[0].at  # from its first call: python's start-up left out
    assert took < 1.5 + 3, f"took {took:.1f}s"
    assert results(tmp_path)["outcome"] == "timed-out" and (tmp_path / "stop").exists()


def test_sigterm_writes_results_touches_the_stop_file_and_exits_fast(fake_api, start_step, tmp_path):
    """Tekton deletes the pod of a timed-out or cancelled TaskRun; the entrypoint forwards
    SIGTERM to the step (tektoncd/pipeline v1.15.0 cmd/entrypoint/runner.go, realRunner.Run)."""
    fake_api.put("experiments", experiment_v2(C, B, C, v2_running(B, C, 1, 20)))
    proc = start_step("wait_completion", *wait_args(tmp_path))
    wait_for(watching(fake_api), what="the watch")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < STOPS_WITHIN
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    assert results(tmp_path)["outcome"] == "timed-out" and (tmp_path / "stop").exists()

"""The iter8 adapter: completion, winner, loser and traffic for every status shape."""

from __future__ import annotations

import pytest

from cluster import experiment_v1, experiment_v2, v1_2019, v1_completed, v2_completed, v2_running
from steps import iter8
from steps.common import BadInput

B, C = "reviews-v1", "reviews-3f2a1bc"


def v2(status):
    return experiment_v2("e", B, C, status)


def v1(status, on_success=None):
    exp = experiment_v1("e", B, C, status)
    if on_success:
        exp["spec"]["trafficControl"]["onSuccess"] = on_success
    return exp


CASES = [
    # (experiment, completed, result, winner, loser)
    (v2(None), False, None, "", ""),
    (v2(v2_running(B, C, 3, 40)), False, None, "", ""),
    (v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100))), True, iter8.PROMOTED, C, B),
    (v2(v2_completed(B, C, "Traffic To Winner", B, (100, 0), breached=True)), True, iter8.ROLLED_BACK, B, C),
    (v2(v2_completed(B, C, "Traffic To Winner", None, (100, 0))), True, iter8.ROLLED_BACK, B, C),
    (v2(v2_completed(B, C, "Traffic To Baseline", C, (100, 0))), True, iter8.ROLLED_BACK, B, C),
    (v2(v2_completed(B, C, "Traffic To Baseline (Abort)", None, (100, 0))), True, iter8.ROLLED_BACK, B, C),
    (v2(v2_completed(B, C, "Keep Last Traffic", None, (60, 40))), True, iter8.INCONCLUSIVE, "", ""),
    (v2(v2_completed(B, C, "Keep Last Traffic", C, (0, 100))), True, iter8.PROMOTED, C, B),
    (v2(v2_completed(B, C, "Traffic User Specified (Abort)", None, (50, 50))), True, iter8.INCONCLUSIVE, "", ""),
    (v1(v1_completed(True, (0, 100))), True, iter8.PROMOTED, C, B),
    (v1(v1_completed(False, (100, 0))), True, iter8.ROLLED_BACK, B, C),
    (v1(v1_completed(True, None)), True, iter8.PROMOTED, C, B),
    (v1(v1_completed(True, None), on_success="both"), True, iter8.INCONCLUSIVE, "", ""),
    (v1(v1_completed(True, None), on_success="baseline"), True, iter8.ROLLED_BACK, B, C),
    (v1(v1_completed(False, None)), True, iter8.ROLLED_BACK, B, C),
    (v1(v1_2019("Progressing", (80, 20), 2)), False, None, "", ""),
    (v1(v1_2019("Succeeded", (0, 100))), True, iter8.PROMOTED, C, B),
    (v1(v1_2019("Failed", (100, 0))), True, iter8.ROLLED_BACK, B, C),
    (v1(v1_2019("Succeeded", (20, 80))), True, iter8.INCONCLUSIVE, "", ""),
]


@pytest.mark.parametrize(("exp", "completed", "result", "winner", "loser"), CASES)
def test_outcome(exp, completed, result, winner, loser):
    outcome = iter8.adapter_for(exp).outcome(exp)
    assert (outcome.completed, outcome.result, outcome.winner, outcome.loser) == (completed, result, winner, loser)
    assert outcome.definite == (result in (iter8.PROMOTED, iter8.ROLLED_BACK))


def test_progress_reports_traffic_and_assessment():
    exp = v2(v2_running(B, C, 3, 40, best=C))
    progress = iter8.adapter_for(exp).progress(exp)
    assert progress == iter8.Progress("Progressing", 3, {B: 60, C: 40}, f"best so far {C}")
    exp = v1(v1_2019("Progressing", (80, 20), 2))
    progress = iter8.adapter_for(exp).progress(exp)
    assert progress.traffic == {B: 80, C: 20} and progress.iteration == 2


def test_describe_names_the_failed_criteria():
    exp = v2(v2_completed(B, C, "Traffic To Winner", B, (100, 0), breached=True))
    assert iter8.describe(iter8.adapter_for(exp).outcome(exp), C) == "rolled back: criteria failed: iter8_mean_latency"
    exp = v2(v2_completed(B, C, "Traffic To Winner", C, (0, 100)))
    assert iter8.describe(iter8.adapter_for(exp).outcome(exp), C) == f"promoted {C}, 100% traffic"


def test_unknown_api_version():
    with pytest.raises(BadInput, match="unknown Experiment apiVersion 'iter8.tools/v2alpha2'"):
        iter8.adapter_for({"apiVersion": "iter8.tools/v2alpha2"})

"""The router-model rollout decision, as a pure function of what the Deployment reports."""

from __future__ import annotations

import json
from typing import Any

from routeiq_operator.gateway.models import MODELS_ANNOTATION
from routeiq_operator.gateway.rollout import decide, observe, stable_models

OLD = "1" * 64
NEW = "2" * 64
LATER = "3" * 64


def entry(digest: str) -> dict[str, str]:
    return {"digest": digest, "role": "routing", "uri": f"s3://models/{digest[:4]}.tar.gz"}


def deployment(
    digest: str,
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    updated: int = 2,
    ready: int = 2,
    stalled: bool = False,
) -> dict[str, Any]:
    progressing = (
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        if stalled
        else {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    )
    return {
        "metadata": {"generation": generation},
        "spec": {
            "template": {
                "metadata": {"annotations": {MODELS_ANNOTATION: json.dumps({"knn-v1": entry(digest)})}}
            }
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "conditions": [progressing],
        },
    }


def test_a_rolled_out_deployment_makes_its_models_stable_and_rejects_nothing() -> None:
    live = deployment(NEW)
    decision = decide(live, 2, {"knn-v1": entry(OLD)}, {})
    assert decision.rollout.rolled_out
    assert decision.failed == decision.newly_rejected == decision.rejected == {}
    assert stable_models(live, 2, {"knn-v1": entry(OLD)}) == {"knn-v1": entry(NEW)}


def test_a_stalled_rollout_of_a_new_digest_rejects_it_and_keeps_the_stable_models() -> None:
    live = deployment(NEW, replicas=3, updated=1, stalled=True)
    decision = decide(live, 2, {"knn-v1": entry(OLD)}, {})
    assert decision.rollout.stalled
    assert not decision.rollout.rolled_out
    assert decision.failed == decision.newly_rejected == {"knn-v1": NEW}
    assert decision.rejected == {"knn-v1": NEW}
    assert stable_models(live, 2, {"knn-v1": entry(OLD)}) == {"knn-v1": entry(OLD)}


def test_a_digest_rejected_before_is_not_rejected_again_and_earlier_rejections_stay() -> None:
    live = deployment(NEW, replicas=3, updated=1, stalled=True)
    decision = decide(live, 2, {"knn-v1": entry(OLD)}, {"knn-v1": NEW, "other": LATER})
    assert decision.failed == {"knn-v1": NEW}
    assert decision.newly_rejected == {}
    assert decision.rejected == {"knn-v1": NEW, "other": LATER}


def test_a_stalled_rollout_of_the_stable_digest_rejects_nothing() -> None:
    # e.g. a node problem: the template carries nothing new, there is nothing to roll back
    live = deployment(OLD, replicas=3, updated=1, stalled=True)
    assert decide(live, 2, {"knn-v1": entry(OLD)}, {}).failed == {}


def test_a_stall_the_deployment_controller_reported_for_an_older_template_rejects_nothing() -> None:
    live = deployment(NEW, generation=3, observed=2, replicas=3, updated=1, stalled=True)
    decision = decide(live, 2, {"knn-v1": entry(OLD)}, {})
    assert not decision.rollout.current
    assert decision.failed == {}


def test_no_deployment_yet() -> None:
    rollout = observe(None, 2)
    assert (rollout.ready, rollout.updated, rollout.current, rollout.stalled, rollout.rolled_out) == (
        0,
        0,
        False,
        False,
        False,
    )
    assert decide(None, 2, {}, {"knn-v1": OLD}).rejected == {"knn-v1": OLD}
    assert stable_models(None, 2, {"knn-v1": entry(OLD)}) == {"knn-v1": entry(OLD)}


def test_rolled_out_needs_every_wanted_replica_updated_and_ready() -> None:
    assert not observe(deployment(NEW, ready=1), 2).rolled_out
    assert not observe(deployment(NEW, replicas=3, updated=2), 2).rolled_out
    assert observe(deployment(NEW, replicas=3, updated=3, ready=3), 2).rolled_out

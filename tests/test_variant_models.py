"""Per-variant models: a canary between two trained-router artifacts of one strategy.

A variant's `model` (in `ab:weights`) names a key of `ROUTEIQ_VARIANT_MODELS`; each worker
loads those artifacts pinned to their digests into its ModelHolder under their keys, and the
variant's strategy routes with the model of its key. The artifacts here are real ones from
`train_artifact` (ELO: no embedding model needed): `router-v1` has a cost budget that only
gpt-4o-mini fits, `router-v2` none, so it picks the best-rated claude model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
from litellm.router import Router
from redis.asyncio import Redis

from routeiq_router import decisions
from routeiq_router.artifacts.publish import sign_manifest
from routeiq_router.artifacts.signing import generate_keypair
from routeiq_router.artifacts.verify import read_artifact
from routeiq_router.configuration import effective_configuration
from routeiq_router.gateway.models import RouterModels
from routeiq_router.ml.payload import read_directory
from routeiq_router.ml.runtime import (
    LoadedRouter,
    ModelHolder,
    ModelNotLoadedError,
    default_holder,
    load_router,
)
from routeiq_router.ml.strategies import TrainedStrategy
from routeiq_router.ml.train import train_artifact
from routeiq_router.routing import VARIANT_METADATA_KEY, install, installed_strategy
from routeiq_router.settings import SettingsError, load_settings
from routeiq_router.state.admin import StateAdmin
from routeiq_router.state.store import RoutingState, StateError, StateOptions, VariantSpec, validate_variants
from routeiq_router.strategies import (
    RoutingRequest,
    StrategyContext,
    StrategyUnavailableError,
    create,
    registry,
    strategy_class,
)
from tests.redis_server import RedisServer
from tests.test_ml_support import CHEAP, COSTS, DATA, SPECIALIST, STRONG
from tests.test_routing_litellm import MESSAGES, deployment, served_by
from tests.test_routing_state import _until

V1, V2 = "router-v1", "router-v2"
PICKS = {V1: CHEAP, V2: SPECIALIST}  # what each artifact routes to among all three models
CANDIDATES = [deployment(CHEAP), deployment(STRONG), deployment(SPECIALIST)]  # ids are the model names
REQUEST = RoutingRequest(model_group="chat", messages=[{"role": "user", "content": "hello"}])


@dataclass(frozen=True)
class Artifacts:
    paths: dict[str, Path]
    digests: dict[str, str]

    def entry(self, key: str, **overrides: str) -> dict[str, str]:
        return {"uri": str(self.paths[key]), "digest": self.digests[key], **overrides}

    def loaded(self, key: str) -> LoadedRouter:
        files, manifest = read_directory(self.paths[key])
        return load_router(files, manifest, digest=self.digests[key], threads=None)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    directory = tmp_path_factory.mktemp("variant-models")
    paths = {V1: directory / V1, V2: directory / V2}
    manifests = {
        V1: train_artifact("elo", DATA, paths[V1], costs=COSTS, knob=0.001)[0],  # only gpt-4o-mini fits
        V2: train_artifact("elo", DATA, paths[V2], costs=COSTS)[0],
    }
    assert {manifest.strategy for manifest in manifests.values()} == {"elo"}
    digests = {key: read_artifact(path).digest for key, path in paths.items()}
    assert digests[V1] != digests[V2]
    return Artifacts(paths, digests)


def variant_models(value: dict[str, Any]) -> dict[str, str]:
    return {"ROUTEIQ_VARIANT_MODELS": json.dumps(value)}


# ---- VariantSpec ---------------------------------------------------------------------------


def test_a_variant_round_trips_with_and_without_a_model() -> None:
    plain = VariantSpec("control", "knn", 50)
    assert "model" not in json.loads(plain.to_json()), "unchanged without a model"
    assert VariantSpec.from_json("control", plain.to_json()) == plain
    assert plain.model is None
    canary = VariantSpec("canary", "knn", 10, "chat", model="router-v2.1")
    assert json.loads(canary.to_json()) == {
        "strategy": "knn",
        "weight": 10,
        "modelGroup": "chat",
        "model": "router-v2.1",
    }
    assert VariantSpec.from_json("canary", canary.to_json()) == canary
    validate_variants([plain, canary, VariantSpec("long", "knn", 1, model="a" * 253)])


@pytest.mark.parametrize("model", ["", 7, "Router-V2", "router_v2", "-v2", "v2-", "v2\n", "a" * 254])
def test_a_bad_variant_model_is_refused_naming_the_variant_and_the_field(model: object) -> None:
    raw = json.dumps({"strategy": "knn", "weight": 50, "model": model})
    with pytest.raises(StateError, match=r"^variant 'canary': 'model' must be a model key"):
        VariantSpec.from_json("canary", raw)
    if isinstance(model, str):
        with pytest.raises(StateError, match=r"^variant 'canary': 'model' must be a model key"):
            validate_variants([VariantSpec("canary", "knn", 50, model=model)])


# ---- ROUTEIQ_VARIANT_MODELS ----------------------------------------------------------------


def test_variant_models_setting_parses_each_entry() -> None:
    assert load_settings({}).variant_models == {}
    digest = "ab" * 32
    settings = load_settings(
        variant_models(
            {
                V1: {"uri": "s3://models/router/v1.tar.gz", "digest": digest},
                V2: {"uri": "/models/v2", "digest": digest, "publicKey": "/keys/v2.pem"},
            }
        )
    )
    assert settings.variant_models[V1].uri == "s3://models/router/v1.tar.gz"
    assert settings.variant_models[V1].public_key is None
    assert settings.variant_models[V2].public_key == "/keys/v2.pem"
    assert settings.variant_models[V2].digest == digest
    shown = json.loads(dict(effective_configuration(settings))["ROUTEIQ_VARIANT_MODELS"])
    assert shown[V2] == {"uri": "/models/v2", "digest": digest, "publicKey": "/keys/v2.pem"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{router-v2: 1}", "not JSON"),
        ('["router-v2"]', "must be a JSON object"),
        (json.dumps({V2: {"uri": "/m"}}), f"{V2}.digest: Field required"),
        (json.dumps({V2: {"uri": "/m", "digest": "AB" * 32}}), f"{V2}.digest: String should match pattern"),
        (json.dumps({V2: {"uri": "/m", "digest": "ab" * 31}}), f"{V2}.digest: String should match pattern"),
        (json.dumps({V2: {"uri": "/m", "digest": "ab" * 32, "key": "x"}}), f"{V2}.key: Extra inputs"),
        (
            json.dumps({V2: {"uri": "https://h/m", "digest": "ab" * 32}}),
            f"{V2}.uri: https://h/m: unsupported",
        ),
        (json.dumps({V2: "/m"}), f"{V2}: Input should be a valid dictionary"),
        (json.dumps({"Router_V2": {"uri": "/m", "digest": "ab" * 32}}), "model key 'Router_V2': must be"),
        (
            json.dumps({"knn": {"uri": "/m", "digest": "ab" * 32}}),
            "model key 'knn': is the name of a routing",
        ),
    ],
)
def test_a_bad_variant_models_value_names_the_key_and_the_field(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"ROUTEIQ_VARIANT_MODELS": value})
    line = next(line for line in str(caught.value).splitlines() if "ROUTEIQ_VARIANT_MODELS" in line)
    assert line.strip().startswith(f"ROUTEIQ_VARIANT_MODELS: {problem}"), line


# ---- ModelHolder and the trained strategies ------------------------------------------------


def test_the_model_holder_keeps_models_by_key(artifacts: Artifacts) -> None:
    holder = ModelHolder()
    v1, v2 = artifacts.loaded(V1), artifacts.loaded(V2)
    assert holder.set(v1) is None
    assert holder.get("elo") is v1, "default key: the model's strategy"
    assert holder.set(v2, key=V2) is None
    assert holder.get(V2) is v2
    assert holder.get("elo") is v1, "a keyed model does not replace the strategy's own"
    assert holder.set(v1, key=V2) is v2
    assert set(holder.current()) == {"elo", V2}
    holder.clear(V2)
    with pytest.raises(ModelNotLoadedError, match=r"\(loaded: elo\)"):
        holder.get(V2)


def keyed(holder: ModelHolder, strategy: str, model: str | None) -> TrainedStrategy:
    instance = strategy_class(strategy)(StrategyContext(model=model), holder)  # type: ignore[call-arg]
    assert isinstance(instance, TrainedStrategy)
    return instance


def test_strategies_of_one_name_route_each_with_the_model_of_their_key(artifacts: Artifacts) -> None:
    holder = ModelHolder()
    holder.set(artifacts.loaded(V1), key=V1)
    holder.set(artifacts.loaded(V2), key=V2)
    assert keyed(holder, "elo", V1).decide(CANDIDATES, REQUEST).model == PICKS[V1]
    assert keyed(holder, "elo", V2).decide(CANDIDATES, REQUEST).model == PICKS[V2]
    with pytest.raises(ModelNotLoadedError, match=r"'elo' has no trained model loaded"):
        keyed(holder, "elo", None).choose(CANDIDATES, REQUEST)  # no model under "elo" itself
    holder.set(artifacts.loaded(V2))
    assert keyed(holder, "elo", None).decide(CANDIDATES, REQUEST).model == PICKS[V2]
    # through the registry, as the routing path creates them
    assert create("elo", StrategyContext(model=V1)).holder is default_holder()  # type: ignore[attr-defined]


def test_a_variant_model_a_strategy_cannot_route_with_is_unavailable_with_the_reason(
    artifacts: Artifacts,
) -> None:
    holder = ModelHolder()
    holder.set(artifacts.loaded(V1), key=V1)
    with pytest.raises(
        StrategyUnavailableError,
        match=r"variant model 'router-v1' was trained for strategy 'elo', not 'knn'",
    ):
        keyed(holder, "knn", V1).choose(CANDIDATES, REQUEST)
    keyed(holder, "knn", V1).prepare(REQUEST)  # no embedding through another strategy's model
    with pytest.raises(
        ModelNotLoadedError, match=r"variant model 'router-v3' \(strategy 'elo'\) is not loaded .*router-v1"
    ):
        keyed(holder, "elo", "router-v3").choose(CANDIDATES, REQUEST)
    with pytest.raises(StrategyUnavailableError, match=r"'least-busy' routes without a trained model"):
        create("least-busy", StrategyContext(model=V1))
    assert create("least-busy", StrategyContext()).name == "least-busy"


# ---- the routing path: weights in Redis, models loaded by RouterModels ----------------------


Routed = tuple[Router, StateAdmin, RoutingState]


@pytest.fixture
async def routed(artifacts: Artifacts, redis_server: RedisServer) -> AsyncIterator[Routed]:
    """A LiteLLM Router with RouteIQ and a Redis-backed state; both artifacts loaded by a
    RouterModels into this process's holder, as a gateway worker does."""
    models = RouterModels(load_settings(variant_models({V1: artifacts.entry(V1), V2: artifacts.entry(V2)})))
    await models.start()
    assert models.ready
    state = RoutingState(
        StateOptions(gateway=f"test/{uuid.uuid4().hex[:10]}", redis_url=redis_server.url),
        strategy_known=registry.is_known,
    )
    await state.start()
    router = Router(model_list=CANDIDATES, num_retries=0)
    install(router, "round-robin", state=state)
    client = Redis.from_url(redis_server.url)
    try:
        yield router, StateAdmin(client, state.options.gateway), state
    finally:
        # every step bounded: LiteLLM's logging worker (a process-wide task on this test's loop)
        # runs RouteIQ's success callbacks against `state`; it is stopped first, so no callback
        # outlives the state or is left for the event loop's teardown to wait on
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(GLOBAL_LOGGING_WORKER.stop(), 5)
        await asyncio.wait_for(client.aclose(), 5)
        await state.close()  # bounded itself (3 s)
        await models.close()  # bounded itself (2 s)
        default_holder().clear(V1)
        default_holder().clear(V2)


async def route(router: Router) -> tuple[str, str]:
    """(variant, deployment) of one request."""
    slot = decisions.open_slot()
    metadata: dict[str, Any] = {}
    response = await router.acompletion(model="chat", messages=MESSAGES, metadata=metadata)
    assert slot.decision is not None
    variant = slot.decision.variant
    assert variant is not None
    assert metadata[VARIANT_METADATA_KEY] == variant
    return variant, served_by(response)


async def test_two_variants_of_one_strategy_route_each_with_its_own_model(routed: Routed) -> None:
    router, admin, state = routed
    variants = [VariantSpec("control", "elo", 50, model=V1), VariantSpec("canary", "elo", 50, model=V2)]
    await admin.set_weights(variants)
    await _until(lambda: state.variants == tuple(sorted(variants, key=lambda v: v.name)))
    shown = await admin.show()
    assert {v["name"]: v["model"] for v in shown["variants"]} == {"control": V1, "canary": V2}
    seen: dict[str, set[str]] = {}
    for _ in range(8):
        variant, served = await route(router)
        seen.setdefault(variant, set()).add(served)
    assert seen == {"control": {PICKS[V1]}, "canary": {PICKS[V2]}}


async def test_a_variant_model_of_another_strategy_falls_back_to_round_robin_saying_why(
    routed: Routed, caplog: pytest.LogCaptureFixture
) -> None:
    router, admin, state = routed
    await admin.set_weights([VariantSpec("canary", "knn", 100, model=V1)])
    await _until(lambda: len(state.variants) == 1)
    with caplog.at_level(logging.ERROR, logger="routeiq.routing"):
        served = {(await route(router))[1] for _ in range(3)}
        slot = decisions.open_slot()
        await router.acompletion(model="chat", messages=MESSAGES, metadata={})
    assert served == {CHEAP, STRONG, SPECIALIST}, "round-robin over every candidate"
    assert slot.decision is not None
    assert slot.decision.strategy == "round-robin", "the decision names what really routed"
    errors = [record for record in caplog.records if record.name == "routeiq.routing"]
    assert len(errors) == 1, "reported once"
    assert getattr(errors[0], "model", None) == V1
    assert "variant model 'router-v1' was trained for strategy 'elo', not 'knn'" in getattr(
        errors[0], "error", ""
    )
    installed = installed_strategy(router)
    assert installed is not None
    [fallback] = installed.fallbacks()  # what readiness lists under `fallbacks`
    assert (fallback["strategy"], fallback["model"]) == ("knn", V1)
    assert fallback["outcome"] == "fallback_strategy_unavailable", "the metrics' outcome label"
    assert "trained for strategy 'elo', not 'knn'" in fallback["error"]


# ---- RouterModels --------------------------------------------------------------------------


async def test_a_worker_is_not_ready_until_every_variant_model_is_loaded(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    later = tmp_path / "later"  # does not exist yet: as before a volume sync
    settings = load_settings(
        variant_models({V1: artifacts.entry(V1), V2: artifacts.entry(V2, uri=str(later))})
    )
    holder = ModelHolder()
    models = RouterModels(settings, holder)
    assert (models.required, models.main_enabled, models.enabled) == (False, False, True)
    try:
        await models.start()
        assert not models.ready
        detail = models.health()
        assert "source" not in detail, "no main model configured"
        assert detail["variants"][V1]["loaded"] is True
        assert detail["variants"][V1]["digest"] == artifacts.digests[V1]
        assert detail["variants"][V1]["strategy"] == "elo"
        assert detail["variants"][V2]["loaded"] is False
        assert detail["variants"][V2]["source"] == str(later)
        assert "last_error" in detail["variants"][V2]
        assert set(holder.current()) == {V1}
        shutil.copytree(artifacts.paths[V2], later)
        await models.poll()
        assert models.ready
        assert holder.get(V2).digest == artifacts.digests[V2]
        assert models.health()["variants"][V2]["digest"] == artifacts.digests[V2]
    finally:
        await models.close()


async def test_a_variant_artifact_whose_digest_differs_from_the_pin_is_refused(artifacts: Artifacts) -> None:
    pinned_elsewhere = artifacts.entry(V2, digest=artifacts.digests[V1])
    holder = ModelHolder()
    models = RouterModels(load_settings(variant_models({V2: pinned_elsewhere})), holder)
    try:
        await models.start()
        await models.poll()  # refused artifacts are not fetched again until they change
        assert not models.ready
        detail = models.health()["variants"][V2]
        assert detail["refused"] == {"digest": 1}
        assert f"expected {artifacts.digests[V1]}" in detail["last_error"]
        assert holder.current() == {}
    finally:
        await models.close()


async def test_the_main_model_and_variant_models_load_side_by_side(artifacts: Artifacts) -> None:
    env = {
        "ROUTEIQ_STRATEGY": "elo",
        "ROUTEIQ_MODELS_PATH": str(artifacts.paths[V1]),
        **variant_models({V2: artifacts.entry(V2)}),
    }
    holder = ModelHolder()
    models = RouterModels(load_settings(env), holder)
    try:
        await models.start()
        assert models.ready
        assert holder.get("elo").digest == artifacts.digests[V1]
        assert holder.get(V2).digest == artifacts.digests[V2]
        detail = models.health()
        assert (detail["source"], detail["digest"]) == (str(artifacts.paths[V1]), artifacts.digests[V1])
        assert detail["variants"][V2]["digest"] == artifacts.digests[V2]
    finally:
        await models.close()


async def test_a_variant_model_is_verified_with_its_own_public_key_else_the_main_one(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    signed = tmp_path / "signed"
    shutil.copytree(artifacts.paths[V2], signed)
    private_pem, public_pem = generate_keypair()
    digest = sign_manifest(signed, private_pem)
    _, other_public_pem = generate_keypair()
    key_file = tmp_path / "v2.pem"
    key_file.write_bytes(public_pem)
    entry = {"uri": str(signed), "digest": digest}
    env = {
        "ROUTEIQ_MODEL_PUBLIC_KEY": other_public_pem.decode(),
        **variant_models({"own-key": {**entry, "publicKey": str(key_file)}, "main-key": entry}),
    }
    holder = ModelHolder()
    models = RouterModels(load_settings(env), holder)
    try:
        await models.start()
        assert set(holder.current()) == {"own-key"}
        assert not models.ready
        refused = models.health()["variants"]["main-key"]["refused"]
        assert set(refused) == {"signature"}
    finally:
        await models.close()

"""Trained routing strategies: decision latency, model load time and memory per worker, per embedder.

For each embedder (torch, onnx, static: `--embedders`; docs/ml-routing.md) in turn, in one run
on the same prompts, and for each of knn, mlp, svm, elo and mf trained with it on the example
data, it reports:

  * decision latency (p50, p99) with three candidate deployments mapped to the artifact's models
    (`model_info.routeiq_model`), over N held-out prompts (never seen in training):
      - the raw embedding call: the embedder's `embed` of one prompt, no cache;
      - a decision with a cold cache: `strategy.choose(...)` through the real strategy objects
        reading a `ModelHolder`, split into the embedding (the time the model's `embed` call
        took inside the decision) and the rest (decision minus embedding: prompt text,
        normalisation and sha256 key, LRU insert, scoring, the knob, the mapping);
      - a decision for a cached prompt: the same prompts again (the embedding is an LRU hit),
        back to back ("cached"), and each right after the model embedded another prompt
        ("cached*": CPU caches full of torch's data, as after another request's cache miss);
      - LiteLLM simple-shuffle choosing among the same 3 deployments with a real `litellm.Router`
        (`await router.async_get_available_deployment(...)`, as bench/routing_overhead.py does);
  * model load time: in a fresh worker process, importing the ML libraries (torch and
    sentence-transformers for torch, onnxruntime and tokenizers for onnx, tokenizers for static),
    loading the embedder, `read_artifact` (the verified artifact path) and `load_router`; the time
    from the worker process's start to its first routed decision; and in this process, a reload
    with the embedder already loaded;
  * memory per worker: VmRSS (and its anonymous and file-backed parts) of a fresh process per
    strategy, after importing LiteLLM and RouteIQ and building a Router (the baseline worker),
    after the ML libraries, the embedder and the model are loaded, and after decisions.

and last, side by side per embedder: the knn figures and their ratio to torch's; with
`--image-sizes`, the size of the image that serves each embedder (built by `scripts/images`:
routeiq-gateway-ml for onnx and static, routeiq-gateway-ml-torch for torch; cached by content).

Every process runs torch (or ONNX Runtime) and BLAS with one thread, `limit_cpu_threads(1)`, as the gateway's
workers do. Decisions are timed one by one with `time.perf_counter_ns`, with the garbage
collector off (collected between decisions); the subjects of each prompt run in a rotating
order so that machine noise falls on all of them alike.

Targets: the rest beyond the embedding at most 1 ms p99 for every trained strategy; a
decision for a cached prompt at most 0.5 ms (p99); a KNN worker within the per-worker sizing
budget (~1.5 GB RAM per KNN worker), with the routing part set against the memory estimate
(model ~80 MB + embeddings ~5 MB + overhead ~15 MB = ~100 MB).

Run it from the repository root:

    .venv/bin/python bench/ml_routing.py
    .venv/bin/python bench/ml_routing.py --prompts 100 --cached-passes 2 --rss-decisions 20   # quick
    .venv/bin/python bench/ml_routing.py --embedders static                                   # one embedder
    .venv/bin/python bench/ml_routing.py --image-sizes                     # and the serving images (Podman)

It exits 0 whatever the results (it is a benchmark, not a test); only bad options exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path


def _memory_kib() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in KiB (Linux /proc)."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM"}
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            values[key] = int(rest.split()[0])
    return values


_AT_START = _memory_kib()  # the interpreter alone, before LiteLLM and RouteIQ are imported


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 10 ms resolution)."""
    started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: use the bundled cost map

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

_ROUTER_SRC = Path(__file__).resolve().parent.parent / "router"
if str(_ROUTER_SRC) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(_ROUTER_SRC))

import litellm  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from litellm.router import Router  # noqa: E402

from routeiq_router.artifacts.verify import read_artifact  # noqa: E402
from routeiq_router.ml.embedders import build_embedder, load_embedder_directory  # noqa: E402
from routeiq_router.ml.embeddings import CachedEmbedder, Embedder, SentenceTransformerEmbedder  # noqa: E402
from routeiq_router.ml.models import ROUTER_MODELS  # noqa: E402
from routeiq_router.ml.runtime import LoadedRouter, ModelHolder, limit_cpu_threads, load_router  # noqa: E402
from routeiq_router.ml.strategies import TrainedStrategy  # noqa: E402
from routeiq_router.strategies import strategy_class  # noqa: E402
from routeiq_router.strategies.base import Deployment, RoutingRequest, StrategyContext  # noqa: E402
from routeiq_router.strategies.catalog import TRAINED_STRATEGIES  # noqa: E402


def trained_strategy(name: str) -> type[TrainedStrategy]:
    """The registered class of a trained strategy (the catalog names them, the registry holds them)."""
    cls = strategy_class(name)
    if not (isinstance(cls, type) and issubclass(cls, TrainedStrategy)):
        raise TypeError(f"strategy {name!r} is not a trained strategy")
    return cls


STRATEGIES: dict[str, type[TrainedStrategy]] = {name: trained_strategy(name) for name in TRAINED_STRATEGIES}
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "routing-data" / "prompts.jsonl"
# USD per 1K tokens, as in docs/ml-routing.md
COSTS = {"gpt-4o": 0.00625, "gpt-4o-mini": 0.000375, "claude-3-5-sonnet-20241022": 0.009}
MODEL_GROUP = "bench"
SHUFFLE = "litellm simple-shuffle"
RAW = "raw embedding"
WARMUP_PROMPTS = 20  # training prompts (never measured) that warm every code path first
FLUSH_TEXT = "An unrelated request that the worker embedded just before this decision."

REST_P99_TARGET_MS = 1.0
CACHED_P99_TARGET_MS = 0.5
KNN_BUDGET_MB = 100.0  # sizing estimate: model ~80 + embeddings ~5 + overhead ~15 MB per worker
KNN_ROW_GB = 1.5  # sizing: RAM per KNN worker
ML_LIBRARIES = {
    "torch": ("torch", "sentence_transformers"),
    "onnx": ("onnxruntime", "tokenizers"),
    "static": ("tokenizers",),
    "sklearn": ("sklearn", "skops.io"),
}
EMBEDDERS = ("torch", "onnx", "static")

Vector = npt.NDArray[np.float32]


# ---- shared pieces -----------------------------------------------------------------------


def deployments() -> list[dict[str, Any]]:
    """Three deployments of one model group, each mapped to one of the artifact's models."""
    return [
        {
            "model_name": MODEL_GROUP,
            "litellm_params": {
                "model": f"openai/bench-{i}",
                "api_key": "sk-bench",
                "mock_response": "ok",
                "weight": i % 3 + 1,
            },
            "model_info": {"id": f"bench-{i}", "routeiq_model": model},
        }
        for i, model in enumerate(sorted(COSTS))
    ]


def build_router() -> Router:
    return Router(model_list=deployments(), routing_strategy="simple-shuffle")


def request_for(prompt: str) -> RoutingRequest:
    return RoutingRequest(model_group=MODEL_GROUP, messages=[{"role": "user", "content": prompt}])


def needs_embedding(strategy: str) -> bool:
    return ROUTER_MODELS[strategy].needs_embedding


def import_libraries(strategy: str, kind: str) -> list[str]:
    """Import the libraries a strategy's model and embedder need; their names."""
    names: list[str] = []
    if needs_embedding(strategy):
        names += ML_LIBRARIES[kind]
    if strategy in ("mlp", "svm"):
        names += ML_LIBRARIES["sklearn"]
    for name in names:
        importlib.import_module(name)
    return names


def torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


class TimedEmbedder:
    """The raw embedder, recording how long its last `embed` call took: the model's share of a
    decision (the CachedEmbedder that `load_router` wraps around it calls it on a miss only)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.last_ns = 0
        self.calls = 0
        self.kind = getattr(inner, "kind", None)  # load_router checks the embedder an artifact names
        self.digest = getattr(inner, "digest", None)

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> Vector:
        start = time.perf_counter_ns()
        vectors = self.inner.embed(texts)
        self.last_ns = time.perf_counter_ns() - start
        self.calls += 1
        return vectors


def percentile(sorted_samples: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


@dataclass(slots=True)
class Series:
    samples_ns: list[int] = field(default_factory=list)

    def p(self, q: float) -> float:
        """The q-th percentile in milliseconds."""
        return percentile(sorted(self.samples_ns), q) / 1e6 if self.samples_ns else math.nan

    def __len__(self) -> int:
        return len(self.samples_ns)


# ---- training (a subprocess, so this process loads torch cold) ------------------------------


def train_all(directory: Path, data: Path, prompts: int, seed: int, kind: str) -> dict[str, Any]:
    """Train every strategy on `data` into `directory/<strategy>` with `routeiq train`'s function
    and the `kind` embedder (onnx and static: built first into `directory/embedder`), holding out
    at least `prompts` examples; write their prompts to `directory/prompts.json`."""
    from routeiq_router.ml.data import read_jsonl
    from routeiq_router.ml.train import train_artifact

    examples, _ = read_jsonl(data)
    holdout = max(0.2, prompts / len(examples))
    build_s = 0.0
    embedder_path: Path | None = None
    if kind == "torch":
        raw: Embedder = SentenceTransformerEmbedder()
    else:
        embedder_path = directory / "embedder"
        started = time.perf_counter()
        build_embedder(kind, embedder_path)  # type: ignore[arg-type]
        build_s = time.perf_counter() - started
        raw = load_embedder_directory(embedder_path, threads=None)
    # one model, one embedding per prompt: later strategies reuse the first one's embeddings
    embedder = CachedEmbedder(raw, max_entries=len(examples) + 64)
    seconds: dict[str, float] = {}
    fit: dict[str, float] = {}
    scores: dict[str, float] = {}
    heldout: list[str] = []
    warmup: list[str] = []
    for strategy in STRATEGIES:
        started = time.perf_counter()
        _, result = train_artifact(
            strategy,
            data,
            directory / strategy,
            costs=COSTS,
            holdout=holdout,
            seed=seed,
            embedder=embedder,
            embedder_kind=kind,
            embedder_path=embedder_path,
        )
        seconds[strategy] = time.perf_counter() - started
        fit[strategy] = result.metrics["training_seconds"]
        scores[strategy] = result.metrics.get("router_score", math.nan)
        heldout = [examples[int(i)].prompt for i in result.heldout_rows][:prompts]
        warmup = [examples[int(i)].prompt for i in result.train_rows][:WARMUP_PROMPTS]
    (directory / "prompts.json").write_text(json.dumps({"heldout": heldout, "warmup": warmup}))
    return {
        "seconds": seconds,
        "fit": fit,
        "scores": scores,
        "build": build_s,
        "holdout": holdout,
        "heldout": len(heldout),
        "examples": len(examples),
    }


# ---- a whole gateway: process start to its first routed request ----------------------------

GATEWAY_CONFIG = "model_list:\n" + "".join(
    f"""  - model_name: chat
    litellm_params: {{model: "openai/{model}", api_key: sk-bench, mock_response: "from {model}"}}
    model_info: {{id: {model}, routeiq_model: "{model}"}}
"""
    for model in COSTS
)
GATEWAY_KEY = "sk-bench-0123456789abcdef0123456789abcdef"


def gateway_first_request(
    artifact: Path | None, directory: Path, *, litellm_proxy: bool = False, timeout: float = 180.0
) -> float:
    """Seconds from starting a gateway process to its first chat completion answered 200, with
    one worker, mock deployments and no upstream (readiness polled every 20 ms, then one request).

    `routeiq gateway`: with `artifact`, ROUTEIQ_STRATEGY=knn serving it, and the answer must come
    from the knn strategy (ready only once the model is loaded); without, round-robin.
    `litellm_proxy`: LiteLLM's own proxy (`litellm --config`), the baseline, with the same config."""
    import signal
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = directory / "gateway.yaml"
    config.write_text(GATEWAY_CONFIG)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ROUTEIQ_", "LITELLM_"))}
    env.update(LITELLM_MASTER_KEY=GATEWAY_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
    address = ["--host", "127.0.0.1", "--port", str(port)]
    if not litellm_proxy:
        env.update(ROUTEIQ_METRICS_PORT="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if artifact is not None:
            env.update(ROUTEIQ_STRATEGY="knn", ROUTEIQ_MODELS_PATH=str(artifact))
        command = [str(Path(sys.executable).with_name("routeiq")), "gateway", "--config", str(config)]
        command += [*address, "--workers", "1"]
        ready = "/_health/ready"
    else:
        command = [str(Path(sys.executable).with_name("litellm")), "--config", str(config), *address]
        command += ["--num_workers", "1"]
        ready = "/health/readiness"
    base = f"http://127.0.0.1:{port}"
    log_path = directory / ("litellm.log" if litellm_proxy else "gateway.log")
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            with httpx.Client(timeout=10) as client:
                while True:
                    if time.perf_counter() - started > timeout or process.poll() is not None:
                        raise RuntimeError(f"the gateway did not become ready: see {log_path}")
                    try:
                        if client.get(f"{base}{ready}").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02)
                response = client.post(
                    f"{base}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                    json={
                        "model": "chat",
                        "messages": [{"role": "user", "content": "Write a haiku about routers"}],
                    },
                )
            elapsed = time.perf_counter() - started
            wanted = None if litellm_proxy else ("knn" if artifact is not None else "round-robin")
            routed = wanted is None or response.headers.get("x-routeiq-strategy") == wanted
            if response.status_code != 200 or not routed:
                raise RuntimeError(f"first request: {response.status_code} {response.text[:300]}")
            return elapsed
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


# ---- one fresh worker per strategy: load time and memory -----------------------------------


def rss_worker(strategy: str, directory: Path, decisions: int, kind: str) -> dict[str, Any]:
    """A gateway worker's life up to serving: the figures of one fresh process."""
    marks: dict[str, dict[str, int]] = {"python": _AT_START}
    seconds: dict[str, float] = {}
    router = build_router()
    marks["baseline"] = _memory_kib()  # LiteLLM + RouteIQ imported, a Router built

    started = time.perf_counter()
    libraries = import_libraries(strategy, kind)
    limit_cpu_threads(1)
    seconds["libraries"] = time.perf_counter() - started
    marks["libraries"] = _memory_kib()

    embedder: Embedder | None = None
    if needs_embedding(strategy):
        started = time.perf_counter()
        if kind == "torch":
            embedder = SentenceTransformerEmbedder()  # what load_router does for the bundled model
        else:  # the same files as the artifact's copy, verified the same way
            embedder = load_embedder_directory(directory / "embedder", threads=1)
        seconds["embedder"] = time.perf_counter() - started
    marks["embedder"] = _memory_kib()

    started = time.perf_counter()
    artifact = read_artifact(directory / strategy)
    seconds["read_artifact"] = time.perf_counter() - started
    started = time.perf_counter()
    loaded = load_router(artifact, artifact.manifest, digest=artifact.digest, embedder=embedder)
    seconds["load_router"] = time.perf_counter() - started
    marks["model"] = _memory_kib()

    holder = ModelHolder()
    holder.set(loaded)
    chooser = STRATEGIES[strategy](StrategyContext(), holder)
    candidates: list[Deployment] = list(router.model_list)
    prompts = json.loads((directory / "prompts.json").read_text())["heldout"][:decisions]
    for index, prompt in enumerate(prompts):
        chooser.choose(candidates, request_for(prompt))
        if index == 0:
            seconds["first_decision"] = _process_age_s()
    gc.collect()
    marks["decisions"] = _memory_kib()
    return {
        "strategy": strategy,
        "marks": marks,
        "seconds": seconds,
        "libraries": libraries,
        "decisions": len(prompts),
        "torch_threads": torch_threads(),
        "modules": sorted(
            name
            for name in ("torch", "sentence_transformers", "onnxruntime", "tokenizers")
            if name in sys.modules
        ),
        "artifact_bytes": sum(len(data) for data in artifact.files.values()) + len(artifact.manifest_bytes),
    }


def run_child(arguments: list[str]) -> dict[str, Any]:
    """This script in a fresh interpreter; its last stdout line is JSON."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# ---- latency, in this process ----------------------------------------------------------------


@dataclass(slots=True)
class Subject:
    """One trained strategy under test, with its own cache and the clock on its embedder."""

    name: str
    loaded: LoadedRouter
    timed: TimedEmbedder | None
    chooser: TrainedStrategy
    reload_ms: float
    cold: Series = field(default_factory=Series)
    embedding: Series = field(default_factory=Series)
    rest: Series = field(default_factory=Series)
    cached: Series = field(default_factory=Series)
    cached_after_model: Series = field(default_factory=Series)


@dataclass(slots=True)
class Loads:
    libraries_s: float
    embedder_s: float
    subjects: list[Subject]
    raw: Embedder


def load_subjects(directory: Path, kind: str) -> Loads:
    """Every strategy loaded through the verified artifact path, each with a fresh cache."""
    started = time.perf_counter()
    for name in ML_LIBRARIES[kind] + ML_LIBRARIES["sklearn"]:
        importlib.import_module(name)
    limit_cpu_threads(1)  # as the gateway's workers: one torch and BLAS thread
    libraries_s = time.perf_counter() - started
    started = time.perf_counter()
    raw: Embedder
    if kind == "torch":
        raw = SentenceTransformerEmbedder()
    else:
        raw = load_embedder_directory(directory / "embedder", threads=1)
    embedder_s = time.perf_counter() - started
    subjects: list[Subject] = []
    for name, cls in STRATEGIES.items():
        timed = TimedEmbedder(raw) if needs_embedding(name) else None
        started = time.perf_counter()
        artifact = read_artifact(directory / name)
        # a raw embedder: load_router wraps it in a CachedEmbedder of its own (a cold cache)
        loaded = load_router(artifact, artifact.manifest, digest=artifact.digest, embedder=timed)
        reload_ms = (time.perf_counter() - started) * 1000.0
        holder = ModelHolder()
        holder.set(loaded)
        subjects.append(Subject(name, loaded, timed, cls(StrategyContext(), holder), reload_ms))
    return Loads(libraries_s, embedder_s, subjects, raw)


async def shuffle_once(router: Router, series: Series | None) -> None:
    request_kwargs: dict[str, Any] = {}  # LiteLLM pops keys from it: a fresh one per decision
    start = time.perf_counter_ns()
    await router.async_get_available_deployment(
        model=MODEL_GROUP, request_kwargs=request_kwargs, messages=[{"role": "user", "content": "hi"}]
    )
    elapsed = time.perf_counter_ns() - start
    if series is not None:
        series.samples_ns.append(elapsed)
    await asyncio.sleep(0)  # run the tasks the decision scheduled, outside the timing


def cold_decision(subject: Subject, candidates: Sequence[Deployment], request: RoutingRequest) -> None:
    timed = subject.timed
    calls = timed.calls if timed is not None else 0
    start = time.perf_counter_ns()
    subject.chooser.choose(candidates, request)
    elapsed = time.perf_counter_ns() - start
    embedding = 0
    if timed is not None:
        if timed.calls != calls + 1:
            raise RuntimeError(f"{subject.name}: expected one embedding per cold decision")
        embedding = timed.last_ns
        subject.embedding.samples_ns.append(embedding)
    subject.cold.samples_ns.append(elapsed)
    subject.rest.samples_ns.append(elapsed - embedding)


def cached_decision(
    subject: Subject, candidates: Sequence[Deployment], request: RoutingRequest, series: Series
) -> None:
    timed = subject.timed
    calls = timed.calls if timed is not None else 0
    start = time.perf_counter_ns()
    subject.chooser.choose(candidates, request)
    elapsed = time.perf_counter_ns() - start
    if timed is not None and timed.calls != calls:
        raise RuntimeError(f"{subject.name}: a cached prompt was embedded again")
    series.samples_ns.append(elapsed)


async def measure(
    loads: Loads, prompts: Sequence[str], warmup: Sequence[str], cached_passes: int
) -> tuple[Series, Series, Series]:
    """(raw embedding, simple-shuffle, simple-shuffle after a model call) series; the subjects'
    series are filled in place."""
    router = build_router()
    candidates: list[Deployment] = list(router.model_list)
    subjects = loads.subjects
    raw_series, shuffle, shuffle_after_model = Series(), Series(), Series()
    clock: Callable[[], int] = time.perf_counter_ns
    for prompt in warmup:  # training prompts: warm every path, leave the measured prompts cold
        loads.raw.embed([prompt])
        for subject in subjects:
            subject.chooser.choose(candidates, request_for(prompt))
        await shuffle_once(router, None)
    for subject in subjects:
        if subject.timed is not None:
            subject.timed.calls = 0
    requests = [request_for(prompt) for prompt in prompts]
    gc.collect()
    gc.freeze()  # the models and libraries: out of the collector's reach
    gc.disable()
    try:
        # pass 1: every prompt is new to every strategy's cache
        steps = len(subjects) + 2
        for index, (prompt, request) in enumerate(zip(prompts, requests, strict=True)):
            gc.collect()
            for step in range(steps):
                which = (index + step) % steps  # rotate who goes first
                if which == len(subjects):
                    start = clock()
                    loads.raw.embed([prompt])
                    raw_series.samples_ns.append(clock() - start)
                elif which == len(subjects) + 1:
                    await shuffle_once(router, shuffle)
                else:
                    cold_decision(subjects[which], candidates, request)
        print(f"  cold pass done ({len(prompts)} prompts)", file=sys.stderr, flush=True)
        # later passes: the same prompts, now in every strategy's cache
        steps = len(subjects) + 1
        for round_index in range(cached_passes):
            for index, request in enumerate(requests):
                gc.collect()
                for step in range(steps):
                    which = (index + round_index + step) % steps
                    if which == len(subjects):
                        await shuffle_once(router, shuffle)
                    else:
                        subject = subjects[which]
                        cached_decision(subject, candidates, request, subject.cached)
            print(f"  cached pass {round_index + 1}/{cached_passes} done", file=sys.stderr, flush=True)
        # last pass: each cached decision right after a model call for another prompt, as when
        # the worker has just embedded another request's prompt (CPU caches full of torch's data)
        for index, request in enumerate(requests):
            for step in range(steps):
                which = (index + step) % steps
                gc.collect()
                loads.raw.embed([FLUSH_TEXT])  # not timed
                if which == len(subjects):
                    await shuffle_once(router, shuffle_after_model)
                else:
                    subject = subjects[which]
                    cached_decision(subject, candidates, request, subject.cached_after_model)
        print("  after-a-model-call pass done", file=sys.stderr, flush=True)
    finally:
        gc.enable()
        gc.unfreeze()
    for subject in subjects:
        embedder = subject.loaded.embedder
        if embedder is not None and embedder.stats.misses != len(prompts) + len(warmup):
            raise RuntimeError(
                f"{subject.name}: {embedder.stats.misses} cache misses, expected one per prompt"
            )
    return raw_series, shuffle, shuffle_after_model


# ---- report ------------------------------------------------------------------------------------


def mib(kib: int) -> float:
    return kib / 1024.0


def print_loads(workers: dict[str, dict[str, Any]], loads: Loads, kind: str) -> None:
    print("Model load (seconds / milliseconds); fresh worker = a new process per strategy, cold")
    header = (
        f"{'strategy':<8}  {'artifact KiB':>12}  {'ML imports s':>12}  {'embedder s':>10}  "
        f"{'read_artifact ms':>16}  {'load_router ms':>14}  {'reload here ms':>14}  {'first decision s':>16}"
    )
    print(header)
    print("-" * len(header))
    for subject in loads.subjects:
        worker = workers[subject.name]
        seconds = worker["seconds"]
        embedder = f"{seconds['embedder']:.2f}" if "embedder" in seconds else "-"
        print(
            f"{subject.name:<8}  {worker['artifact_bytes'] / 1024:>12.1f}  {seconds['libraries']:>12.2f}  "
            f"{embedder:>10}  {seconds['read_artifact'] * 1000:>16.1f}  {seconds['load_router'] * 1000:>14.1f}  "
            f"{subject.reload_ms:>14.1f}  {seconds['first_decision']:>16.2f}"
        )
    print(
        f"  ML imports: {' + '.join(ML_LIBRARIES[kind])} (knn, mlp, svm, mf) and sklearn + skops (mlp, svm); "
        "elo needs neither"
    )
    print(
        "  first decision = from the worker process's start (interpreter, LiteLLM, RouteIQ) to its first routed decision"
    )
    print(
        "  load_router includes limit_cpu_threads(1) and the embedding-probe check (one embedding); "
        "reload here = read_artifact + load_router in this process with the embedder already loaded"
    )
    print(
        f"  this process: ML imports {loads.libraries_s:.2f} s, {kind} embedder "
        f"(all-MiniLM-L6-v2) {loads.embedder_s:.2f} s"
    )


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def print_latency(
    subjects: Sequence[Subject], raw: Series, shuffle: Series, shuffle_after: Series, kind: str
) -> None:
    print(f"Decision latency, milliseconds (3 candidate deployments, {kind} embedder, one thread)")
    header = (
        f"{'strategy':<8}  {'cold p50':>8}  {'cold p99':>8}  {'embed p50':>9}  {'embed p99':>9}  "
        f"{'rest p50':>8}  {'rest p99':>8}  {'cached p50':>10}  {'cached p99':>10}  "
        f"{'cached* p50':>11}  {'cached* p99':>11}  {'cold/raw':>8}  {'cached/shuffle':>14}"
    )
    print(header)
    print("-" * len(header))
    for s in subjects:
        versus_raw = f"{s.cold.p(50) / raw.p(50):>7.2f}x" if s.timed is not None else f"{'-':>8}"
        print(
            f"{s.name:<8}  {fmt(s.cold.p(50)):>8}  {fmt(s.cold.p(99)):>8}  {fmt(s.embedding.p(50)):>9}  "
            f"{fmt(s.embedding.p(99)):>9}  {fmt(s.rest.p(50)):>8}  {fmt(s.rest.p(99)):>8}  "
            f"{fmt(s.cached.p(50)):>10}  {fmt(s.cached.p(99)):>10}  {fmt(s.cached_after_model.p(50)):>11}  "
            f"{fmt(s.cached_after_model.p(99)):>11}  {versus_raw}  "
            f"{s.cached.p(50) / shuffle.p(50):>13.2f}x"
        )
    print()
    print(f"{'reference':<62}  {'p50':>8}  {'p99':>8}  {'samples':>7}")
    for label, series in (
        (f"raw embedding: the {kind} embedder's embed, 1 prompt", raw),
        (f"{SHUFFLE}: Router.async_get_available_deployment", shuffle),
        (f"{SHUFFLE}, right after a model call (as cached*)", shuffle_after),
    ):
        print(f"{label:<62}  {fmt(series.p(50)):>8}  {fmt(series.p(99)):>8}  {len(series):>7}")
    first = subjects[0]
    print(
        f"  samples per strategy: cold {len(first.cold)}, cached {len(first.cached)}, cached* "
        f"{len(first.cached_after_model)}; ratios are of p50s"
    )
    print(
        "  cold = a prompt new to the cache; embed = the model's embed call inside it; rest = cold - embed "
        "(elo embeds nothing: rest = the whole decision)"
    )
    print(
        "  cached = the same prompts again, decisions back to back; cached* = each one right after the "
        "model embedded another prompt"
    )
    print(
        "  a strategy's figure is its `choose` alone; in the gateway it runs inside the Router call, which "
        "costs about what simple-shuffle's does (bench/routing_overhead.py)"
    )


MEMORY_STAGES = (
    ("libraries", "+ML libs"),
    ("embedder", "+embedder"),
    ("model", "+model"),
    ("decisions", "+decisions"),
)


def print_memory(workers: dict[str, dict[str, Any]]) -> None:
    print("Memory per worker, MiB of VmRSS (a fresh process per strategy)")
    header = (
        f"{'strategy':<8}  {'python':>6}  {'baseline':>8}  "
        + "  ".join(f"{label:>10}" for _, label in MEMORY_STAGES)
        + f"  {'worker':>6}  {'delta':>6}  {'anon':>6}  {'file':>6}  {'peak':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, worker in workers.items():
        marks = worker["marks"]
        previous = marks["baseline"]
        steps: list[str] = []
        for mark, _ in MEMORY_STAGES:
            steps.append(f"{mib(marks[mark]['VmRSS'] - previous['VmRSS']):>+10.1f}")
            previous = marks[mark]
        end, base = marks["decisions"], marks["baseline"]
        print(
            f"{name:<8}  {mib(marks['python']['VmRSS']):>6.0f}  {mib(base['VmRSS']):>8.0f}  "
            + "  ".join(steps)
            + f"  {mib(end['VmRSS']):>6.0f}  {mib(end['VmRSS'] - base['VmRSS']):>6.0f}  "
            f"{mib(end['RssAnon'] - base['RssAnon']):>6.0f}  {mib(end['RssFile'] - base['RssFile']):>6.0f}  "
            f"{mib(end['VmHWM']):>6.0f}"
        )
    decisions = next(iter(workers.values()))["decisions"]
    print(
        "  python = the interpreter alone; baseline = LiteLLM + RouteIQ imported and a Router built; then "
        "what each step adds:"
    )
    print(
        "  ML libs = importing the embedder's libraries (and sklearn + skops for mlp/svm); embedder = "
        "constructing it;"
    )
    print(
        "  model = read_artifact + load_router (its probe embedding pages the mmapped weights in); "
        f"decisions = {decisions} cold-cache decisions"
    )
    print(
        "  worker = VmRSS at the end; delta = worker - baseline, split into anonymous memory (private to "
        "the worker) and file-backed"
    )
    print(
        "  memory (library code, mmapped weights: shared by the workers of a pod through the page cache); "
        "peak = VmHWM"
    )


def verdicts(subjects: Sequence[Subject], workers: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    rest = [(s.name, s.rest.p(99)) for s in subjects]
    over = [f"{name} {value:.3f} ms" for name, value in rest if value > REST_P99_TARGET_MS]
    figures = ", ".join(f"{name} {value:.3f}" for name, value in rest)
    lines.append(
        f"{'NOT MET' if over else 'MET'}: rest beyond the embedding <= {REST_P99_TARGET_MS} ms p99 for every "
        f"trained strategy (p99 ms: {figures})" + (f"; over: {', '.join(over)}" if over else "")
    )
    cached = [(s.name, s.cached.p(99)) for s in subjects]
    over = [f"{name} {value:.3f} ms" for name, value in cached if value > CACHED_P99_TARGET_MS]
    figures = ", ".join(f"{name} {value:.3f}" for name, value in cached)
    after = ", ".join(f"{s.name} {s.cached_after_model.p(99):.3f}" for s in subjects)
    lines.append(
        f"{'NOT MET' if over else 'MET'}: decision for a cached prompt <= {CACHED_P99_TARGET_MS} ms p99 "
        f"(p99 ms: {figures})"
        + (f"; over: {', '.join(over)}" if over else "")
        + f"; right after a model call (cached*), p99 ms: {after}"
    )
    knn = workers["knn"]["marks"]
    end, base = knn["decisions"], knn["baseline"]
    delta = mib(end["VmRSS"] - base["VmRSS"])
    anon = mib(end["RssAnon"] - base["RssAnon"])
    libraries = mib(knn["libraries"]["VmRSS"] - base["VmRSS"])
    routing = mib(end["VmRSS"] - knn["libraries"]["VmRSS"])
    total = mib(end["VmRSS"])
    lines.append(
        f"{'MET' if total <= KNN_ROW_GB * 1024 else 'NOT MET'}: a KNN worker within the per-worker "
        f"sizing budget (~{KNN_ROW_GB} GB RAM per KNN worker): {total:.0f} MiB in all, "
        f"{delta:.0f} MiB over the baseline worker ({anon:.0f} MiB anonymous)"
    )
    lines.append(
        f"{'MET' if routing <= KNN_BUDGET_MB * 1.1 else 'NOT MET'}: the routing part against the memory "
        f"analysis' ~{KNN_BUDGET_MB:.0f} MB (model ~80 + embeddings ~5 + overhead ~15): embedding model, KNN "
        f"data and decisions add {routing:.0f} MiB; the analysis leaves out importing the ML libraries, "
        f"{libraries:.0f} MiB more per worker, so its '4 KNN workers = ~700 MB per pod' "
        f"is about {4 * delta + mib(base['VmRSS']):.0f} MiB measured"
    )
    return lines


# ---- main --------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--prompts",
        type=positive_int,
        default=300,
        help="held-out prompts, each decided once cold and again cached (default: %(default)s)",
    )
    parser.add_argument(
        "--cached-passes",
        type=positive_int,
        default=5,
        help="passes over the prompts once they are cached (default: %(default)s)",
    )
    parser.add_argument(
        "--rss-decisions",
        type=positive_int,
        default=100,
        help="cold decisions a fresh worker makes before its memory is read (default: %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=DATA, help="training data, JSONL (default: the example)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training (default: 0)")
    parser.add_argument(
        "--embedders",
        default=",".join(EMBEDDERS),
        help="comma-separated, measured in this order (default: %(default)s); torch first gives the ratios",
    )
    parser.add_argument(
        "--image-sizes",
        action="store_true",
        help="also build (scripts/images, cached) and size the image serving each embedder",
    )
    parser.add_argument("--_train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_worker", choices=list(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--_dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_kind", choices=EMBEDDERS, default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prompts > 500:
        parser.error("--prompts: at most 500 (half of the example data is held out at most)")
    args.embedders = [name.strip() for name in args.embedders.split(",") if name.strip()]
    unknown = sorted(set(args.embedders) - set(EMBEDDERS))
    if unknown or not args.embedders or len(set(args.embedders)) != len(args.embedders):
        parser.error(f"--embedders: distinct names among {', '.join(EMBEDDERS)}")
    return args


@dataclass(slots=True)
class Run:
    """The figures of one embedder."""

    kind: str
    trained: dict[str, Any]
    workers: dict[str, dict[str, Any]]
    loads: Loads
    raw: Series
    verdicts: list[str]


def run_embedder(kind: str, directory: Path, args: argparse.Namespace, prompts: Sequence[str] | None) -> Run:
    """Train, start a fresh worker per strategy, and measure decisions, all with one embedder.
    `prompts`: the held-out prompts of the first embedder, so every embedder decides the same ones."""
    print(f"  {kind}: training the {len(STRATEGIES)} strategies ...", file=sys.stderr, flush=True)
    trained = run_child(
        ["--_train", str(directory), "--data", str(args.data), "--prompts", str(args.prompts),
         "--seed", str(args.seed), "--_kind", kind]
    )  # fmt: skip
    print()
    print(f"==== embedder: {kind} " + "=" * 70)
    built = f", embedder built in {trained['build']:.1f} s" if kind != "torch" else ""
    print(
        f"trained on {args.data.name}: {trained['examples']} examples, holdout {trained['holdout']:.2f}, "
        f"{trained['heldout']} held-out prompts measured{built}; train_artifact s (of which fit): "
        + ", ".join(
            f"{name} {value:.1f} ({trained['fit'][name]:.2f})" for name, value in trained["seconds"].items()
        )
    )
    print(
        "held-out router score: "
        + ", ".join(f"{name} {value:.3f}" for name, value in trained["scores"].items())
    )
    workers: dict[str, dict[str, Any]] = {}
    for name in STRATEGIES:
        print(f"  {kind}: fresh worker: {name} ...", file=sys.stderr, flush=True)
        workers[name] = run_child(
            ["--_worker", name, "--_dir", str(directory), "--rss-decisions", str(args.rss_decisions),
             "--_kind", kind]
        )  # fmt: skip
    print(
        "threads: limit_cpu_threads(1) in every process, as the gateway's workers "
        f"(torch threads in the knn worker: {workers['knn']['torch_threads']}; "
        f"its libraries: {', '.join(workers['knn']['modules'])})"
    )
    print(
        f"  {kind}: a knn gateway from process start to its first routed request ...",
        file=sys.stderr,
        flush=True,
    )
    workers["knn"]["gateway_first_request"] = gateway_first_request(directory / "knn", directory)
    print(
        f"routeiq gateway --workers 1, ROUTEIQ_STRATEGY=knn: process start to its first routed request "
        f"{workers['knn']['gateway_first_request']:.2f} s"
    )
    loads = load_subjects(directory, kind)
    texts = json.loads((directory / "prompts.json").read_text())
    measured = list(prompts) if prompts is not None else texts["heldout"][: args.prompts]
    raw, shuffle, shuffle_after = asyncio.run(measure(loads, measured, texts["warmup"], args.cached_passes))
    print()
    print_loads(workers, loads, kind)
    print()
    print_latency(loads.subjects, raw, shuffle, shuffle_after, kind)
    print()
    print_memory(workers)
    lines = verdicts(loads.subjects, workers)
    for line in lines:
        print(f"VERDICT ({kind}): {line}")
    return Run(kind, trained, workers, loads, raw, lines)


def print_side_by_side(runs: Sequence[Run]) -> None:
    """The knn figures per embedder, and each one's ratio to torch's (when torch was measured)."""
    rows: dict[str, dict[str, float]] = {}
    for run in runs:
        knn = next(subject for subject in run.loads.subjects if subject.name == "knn")
        worker = run.workers["knn"]
        rows[run.kind] = {
            "cold p50 ms": knn.cold.p(50),
            "cold p99 ms": knn.cold.p(99),
            "cached p50 ms": knn.cached.p(50),
            "cached p99 ms": knn.cached.p(99),
            "worker RSS MiB": mib(worker["marks"]["decisions"]["VmRSS"]),
            "ML import s": worker["seconds"]["libraries"],
            "first decision s": worker["seconds"]["first_decision"],
            "gateway first s": worker["gateway_first_request"],
            "artifact MiB": worker["artifact_bytes"] / 2**20,
            "held-out knn": run.trained["scores"]["knn"],
        }
    print("Side by side, knn (the same held-out prompts for every embedder)")
    header = f"{'figure':<18}" + "".join(f"  {kind:>10}" for kind in rows)
    if "torch" in rows:
        header += "".join(f"  {kind + '/torch':>12}" for kind in rows if kind != "torch")
    print(header)
    print("-" * len(header))
    for figure in next(iter(rows.values())):
        line = f"{figure:<18}" + "".join(f"  {values[figure]:>10.3f}" for values in rows.values())
        if "torch" in rows:
            base = rows["torch"][figure]
            line += "".join(
                f"  {values[figure] / base:>11.3f}x" for kind, values in rows.items() if kind != "torch"
            )
        print(line)
    if "torch" not in rows:
        return
    torch = rows["torch"]
    targets = (
        ("cold p50 ms", 0.2),
        ("cold p99 ms", 0.25),
        ("worker RSS MiB", 0.45),
        ("ML import s", 0.2),
    )
    for kind, values in rows.items():
        if kind == "torch":
            continue
        for figure, limit in targets:
            ratio = values[figure] / torch[figure]
            print(
                f"VERDICT ({kind}): {'MET' if ratio <= limit else 'NOT MET'}: knn {figure} <= {limit}x torch's "
                f"({values[figure]:.3f} vs {torch[figure]:.3f}: {ratio:.3f}x)"
            )
        first = values["first decision s"]
        print(
            f"VERDICT ({kind}): {'MET' if first <= 3.0 else 'NOT MET'}: a knn worker routes its first request "
            f"<= 3 s after its process starts ({first:.2f} s)"
        )
        gateway = values["gateway first s"]
        print(
            f"VERDICT ({kind}): {'MET' if gateway <= 3.0 else 'NOT MET'}: a knn gateway (routeiq gateway, one "
            f"worker) answers its first routed request <= 3 s after its process starts ({gateway:.2f} s)"
        )
        drop = (torch["held-out knn"] - values["held-out knn"]) * 100
        print(
            f"VERDICT ({kind}): {'MET' if drop <= 1.0 else 'NOT MET'}: knn held-out score within 1 pp of torch's "
            f"({values['held-out knn']:.3f} vs {torch['held-out knn']:.3f})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    litellm.suppress_debug_info = True
    if args._train is not None:  # child: train every strategy
        print(json.dumps(train_all(args._train, args.data, args.prompts, args.seed, args._kind)))
        return 0
    if args._worker is not None:  # child: one fresh worker
        print(json.dumps(rss_worker(args._worker, args._dir, args.rss_decisions, args._kind)))
        return 0

    print("RouteIQ trained strategies: decision latency, model load time, memory per worker, per embedder")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"litellm {_version('litellm')}, torch {_version('torch')}, "
        f"sentence-transformers {_version('sentence-transformers')}, onnxruntime {_version('onnxruntime')}, "
        f"tokenizers {_version('tokenizers')}, scikit-learn {_version('scikit-learn')}, "
        f"numpy {_version('numpy')}; {os.cpu_count()} CPUs ({_usable_cpus()} usable), {platform.platform()}"
    )
    load_before = _load()
    started = time.perf_counter()
    runs: list[Run] = []
    prompts: list[str] | None = None
    with tempfile.TemporaryDirectory(prefix="routeiq-ml-bench-") as temporary:
        for kind in args.embedders:
            directory = Path(temporary) / kind
            directory.mkdir()
            run = run_embedder(kind, directory, args, prompts)
            if prompts is None:
                prompts = json.loads((directory / "prompts.json").read_text())["heldout"][: args.prompts]
            runs.append(run)
        print(
            "  LiteLLM's own proxy, the same config: process start to its first request ...",
            file=sys.stderr,
            flush=True,
        )
        litellm_first = gateway_first_request(None, Path(temporary), litellm_proxy=True)
        round_robin_first = gateway_first_request(None, Path(temporary))
    elapsed = time.perf_counter() - started
    print()
    print_side_by_side(runs)
    print(
        f"LiteLLM's own proxy (litellm --config, one worker, the same mock deployments): process start to its "
        f"first answered request {litellm_first:.2f} s; routeiq gateway, round-robin: {round_robin_first:.2f} s; "
        "a knn gateway over LiteLLM's: "
        + ", ".join(
            f"{run.kind} {run.workers['knn']['gateway_first_request'] - litellm_first:+.2f} s" for run in runs
        )
    )
    if args.image_sizes:
        print()
        print_image_sizes(args.embedders)
    print()
    print(f"measured in {elapsed:.1f} s (1-minute load average {load_before} before, {_load()} after)")
    return 0


SERVING_IMAGES = {
    "torch": "routeiq-gateway-ml-torch",
    "onnx": "routeiq-gateway-ml",
    "static": "routeiq-gateway-ml",
}


def print_image_sizes(embedders: Sequence[str]) -> None:
    """Build (or find, cached by content) the image serving each embedder with scripts/images and
    print its size; scripts/images prints `image NAME REFERENCE BYTES` per image."""
    names = sorted({SERVING_IMAGES[kind] for kind in embedders})
    print(
        f"  building {', '.join(names)} (scripts/images, cached by content) ...", file=sys.stderr, flush=True
    )
    done = subprocess.run(
        ["scripts/images", *names], cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        print(f"Serving image sizes: scripts/images failed (exit {done.returncode}): {done.stderr[-2000:]}")
        return
    sizes = {
        words[1]: int(words[3])
        for words in (line.split() for line in done.stdout.splitlines())
        if len(words) == 4 and words[0] == "image"
    }
    print("Serving image (uncompressed, as `podman image inspect` reports it)")
    for kind in embedders:
        name = SERVING_IMAGES[kind]
        print(f"  {kind:<7} {name:<26} {sizes[name] / 1e6:>8,.0f} MB")


def _load() -> str:
    """The 1-minute load average: other work on the machine shows up in the p99 columns."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def _usable_cpus() -> int | None:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a benchmark never fails the caller, but says what broke
        traceback.print_exc()
    sys.exit(0)

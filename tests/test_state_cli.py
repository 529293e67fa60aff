"""`routeiq state ...` as a user runs it: a subprocess honouring REDIS_URL."""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.gateway_process import ROUTEIQ, gateway_environment
from tests.ports import free_port
from tests.redis_server import RedisServer


def state(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROUTEIQ, "state", *args],
        env=gateway_environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_weights_and_strategy_round_trip_through_show(redis_server: RedisServer) -> None:
    gateway = f"test/cli-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": redis_server.url, "ROUTEIQ_GATEWAY": gateway}
    empty = json.loads(state("show", **env).stdout)
    assert empty == {
        "gateway": gateway,
        "keyPrefix": f"routeiq:{{{gateway}}}:",
        "activeStrategy": None,
        "variants": [],
        "counters": {},
        "breakers": {},
    }
    written = state("weights", "set", "control=round-robin:70", "candidate=least-busy:30", **env)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == "weights set: control=round-robin 70.0%, candidate=least-busy 30.0%"
    assert "ROUTEIQ_AB_TESTING_ENABLED=true" in written.stderr, "a note when the flag is off here"
    assert state("strategy", "set", "least-busy", **env).returncode == 0
    shown = json.loads(state("show", "--gateway", gateway, REDIS_URL=redis_server.url).stdout)
    assert shown["activeStrategy"] == "least-busy"
    assert shown["variants"] == [
        {"name": "candidate", "strategy": "least-busy", "weight": 30.0, "modelGroup": None, "model": None},
        {"name": "control", "strategy": "round-robin", "weight": 70.0, "modelGroup": None, "model": None},
    ]
    assert state("strategy", "clear", **env).returncode == 0
    assert state("weights", "clear", **env).returncode == 0
    cleared = json.loads(state("show", **env).stdout)
    assert cleared["activeStrategy"] is None
    assert cleared["variants"] == []


def test_bad_input_is_refused_with_the_reason_and_nothing_written(redis_server: RedisServer) -> None:
    gateway = f"test/cli-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": redis_server.url, "ROUTEIQ_GATEWAY": gateway}
    cases = {
        ("weights", "set", "control=round-robin"): "expected VARIANT=STRATEGY:WEIGHT",
        ("weights", "set", "a=fastest:50"): "variant 'a': unknown strategy 'fastest'",
        ("weights", "set", "a=round-robin:50", "a=least-busy:50"): "variant 'a' appears twice",
        ("weights", "set", "a=round-robin:0"): "at least one variant needs a positive weight",
        ("strategy", "set", "fastest"): "unknown strategy 'fastest'; known: elo, knn, least-busy, mf, mlp",
        ("show", "--gateway", "Prod"): "--gateway 'Prod': expected NAMESPACE/NAME",
    }
    for args, message in cases.items():
        result = state(*args, **env)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
    assert json.loads(state("show", **env).stdout)["variants"] == []


def test_without_redis_url_or_with_redis_down_the_error_says_so_without_the_password() -> None:
    missing = state("show")
    assert missing.returncode == 2
    assert "REDIS_URL is not set" in missing.stderr
    port = free_port()
    down = state("show", REDIS_URL=f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    assert down.returncode == 2
    assert f"Redis at 127.0.0.1:{port}: ConnectionError" in down.stderr
    assert "hunter2" not in down.stderr

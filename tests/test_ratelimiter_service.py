"""The rate limiter service as the lab runs it: node processes over real HTTP, sharing a
real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from operator_ai.lab.network import free_port
from operator_ai.subjects.ratelimiter.service.cli import main
from operator_ai.testing.ratelimiter import RateLimiterNode, ratelimiter_nodes
from operator_ai.testing.redis import RedisServer, redis_server

HEARTBEAT = 0.2
WINDOW_MS = 800
LIMITS: dict[str, Any] = {
    "default": {"limit": 5, "window_ms": WINDOW_MS},
    "keys": {
        "t:window": {"limit": 3, "window_ms": WINDOW_MS},
        "t:a": {"limit": 2, "window_ms": WINDOW_MS},
        "t:b": {"limit": 4, "window_ms": WINDOW_MS},
        "t:override": {"limit": 2, "window_ms": 5000},
        "t:counter": {"limit": 6, "window_ms": 5000},
        "t:atomic": {"limit": 20, "window_ms": 10000},
        "t:corrupt": {"limit": 5, "window_ms": 5000},
    },
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ratelimiter")


@pytest.fixture(scope="module")
def limits_file(workdir: Path) -> Path:
    path = workdir / "limits.json"
    path.write_text(json.dumps(LIMITS))
    return path


@pytest.fixture(scope="module")
def redis_url(workdir: Path) -> Iterator[str]:
    with redis_server(workdir / "redis") as url:
        yield url


@pytest.fixture(scope="module")
def nodes(redis_url: str, limits_file: Path, workdir: Path) -> Iterator[list[str]]:
    """Three nodes on one Redis; their base URLs."""
    with ratelimiter_nodes(3, redis_url, limits_file, workdir, HEARTBEAT) as started:
        yield [n.url for n in started]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def check(http: httpx.Client, url: str, key: str) -> httpx.Response:
    response = http.post(f"{url}/check", json={"key": key})
    assert response.status_code in (200, 429), response.text
    return response


def eventually(probe: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``probe`` until it holds; return how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def metric_values(http: httpx.Client, url: str) -> dict[tuple[str, frozenset[Any]], float]:
    text = http.get(f"{url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_admits_up_to_the_limit_then_denies_until_the_window_passes(
    nodes: list[str], http: httpx.Client
) -> None:
    urls = itertools.cycle(nodes)
    first = [check(http, next(urls), "t:window") for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 200]
    assert [r.json()["count"] for r in first] == [1, 2, 3]
    assert [r.json()["remaining"] for r in first] == [2, 1, 0]

    denied = check(http, next(urls), "t:window")
    assert denied.status_code == 429
    body = denied.json()
    assert body["allowed"] is False
    assert (body["key"], body["limit"], body["window_ms"], body["count"]) == (
        "t:window",
        3,
        WINDOW_MS,
        3,
    )
    assert body["node"] in {"rl1", "rl2", "rl3"}
    assert abs(body["now_ms"] - time.time() * 1000) < 2000
    assert abs(body["redis_ms"] - body["now_ms"]) < 1000

    time.sleep(WINDOW_MS / 1000 + 0.05)
    again = check(http, next(urls), "t:window")
    assert again.status_code == 200
    assert again.json()["count"] == 1


def test_each_key_has_its_own_limit(nodes: list[str], http: httpx.Client) -> None:
    undeclared = f"t:undeclared:{uuid.uuid4().hex}"
    admitted = {
        key: sum(check(http, url, key).status_code == 200 for url in nodes * 3)
        for key in ("t:a", "t:b", undeclared)
    }
    assert admitted == {"t:a": 2, "t:b": 4, undeclared: 5}


def test_an_override_changes_the_limit_and_deleting_it_restores_the_declared_one(
    nodes: list[str], http: httpx.Client
) -> None:
    one, two, three = nodes
    http.delete(f"{one}/admin/counters/t:override")
    put = http.put(f"{one}/admin/limits/t:override", json={"limit": 4, "window_ms": 5000})
    assert put.status_code == 200
    assert put.json() == {"key": "t:override", "limit": 4, "window_ms": 5000, "source": "override"}

    statuses = [check(http, two, "t:override").status_code for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    effective = http.get(f"{three}/admin/limits").json()["effective"]
    assert effective["t:override"] == {"limit": 4, "window_ms": 5000, "source": "override"}

    deleted = http.delete(f"{three}/admin/limits/t:override").json()
    assert deleted["removed"] is True
    assert (deleted["limit"], deleted["source"]) == (2, "declared")
    http.delete(f"{one}/admin/counters/t:override")
    statuses = [check(http, two, "t:override").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_admin_limits_shows_where_each_limit_comes_from(
    nodes: list[str], http: httpx.Client
) -> None:
    key = f"t:only-override:{uuid.uuid4().hex}"
    assert http.put(
        f"{nodes[0]}/admin/limits/{key}", json={"limit": 7, "window_ms": 900}
    ).is_success
    try:
        body = http.get(f"{nodes[1]}/admin/limits").json()
        assert body["declared"] == LIMITS
        assert body["effective"][key] == {"limit": 7, "window_ms": 900, "source": "override"}
        assert body["effective"]["t:a"] == {
            "limit": 2,
            "window_ms": WINDOW_MS,
            "source": "declared",
        }
        assert set(LIMITS["keys"]) <= set(body["effective"])
        # A key with neither an override nor a declaration runs on the default.
        response = check(http, nodes[2], f"t:fresh:{uuid.uuid4().hex}")
        assert (response.json()["source"], response.json()["limit"]) == ("default", 5)
    finally:
        http.delete(f"{nodes[0]}/admin/limits/{key}")
    assert key not in http.get(f"{nodes[1]}/admin/limits").json()["effective"]


def test_bad_admin_and_check_bodies_are_rejected(nodes: list[str], http: httpx.Client) -> None:
    url = nodes[0]
    assert http.post(f"{url}/check", json={}).status_code == 422
    assert http.post(f"{url}/check", json={"key": ""}).status_code == 422
    assert http.post(f"{url}/check", content=b"not json").status_code == 422
    bad = http.put(f"{url}/admin/limits/t:a", json={"limit": -1, "window_ms": 100})
    assert bad.status_code == 422
    assert http.put(f"{url}/admin/limits/t:a", json={"limit": 1}).status_code == 422
    assert http.get(f"{url}/admin/limits").json()["effective"]["t:a"]["source"] == "declared"


def test_counters_follow_the_checks_and_reset_clears_them(
    nodes: list[str], http: httpx.Client
) -> None:
    one, two, three = nodes
    http.delete(f"{one}/admin/counters/t:counter")
    for _ in range(4):
        check(http, one, "t:counter")
    for url in nodes:
        counter = http.get(f"{url}/admin/counters/t:counter").json()
        assert (counter["key"], counter["count"], counter["limit"]) == ("t:counter", 4, 6)
        assert counter["window_ms"] == 5000
    listed = {c["key"]: c for c in http.get(f"{two}/admin/counters").json()["counters"]}
    assert set(LIMITS["keys"]) <= set(listed)
    assert listed["t:counter"]["count"] == 4
    assert all(b["key"] != "t:counter" for b in http.get(f"{two}/admin/blocks").json()["blocked"])

    for _ in range(3):
        check(http, two, "t:counter")
    blocked = http.get(f"{three}/admin/blocks").json()["blocked"]
    assert {"key": "t:counter", "count": 6, "limit": 6, "window_ms": 5000} in blocked

    assert http.delete(f"{three}/admin/counters/t:counter").json()["deleted"] is True
    assert http.get(f"{one}/admin/counters/t:counter").json()["count"] == 0
    assert all(b["key"] != "t:counter" for b in http.get(f"{one}/admin/blocks").json()["blocked"])
    assert check(http, one, "t:counter").json()["count"] == 1


def test_every_key_written_expires(nodes: list[str], http: httpx.Client, rdb: redis.Redis) -> None:
    key = f"t:ttl:{uuid.uuid4().hex}"
    for url in nodes:
        check(http, url, key)
    http.put(f"{nodes[0]}/admin/limits/{key}", json={"limit": 1, "window_ms": 500})
    check(http, nodes[1], key)  # denied: a denial refreshes the log's TTL too

    keys = list(rdb.scan_iter("*"))
    assert {f"rl:log:{key}", f"rl:limit:{key}", "rl:node:rl1"} <= set(keys)
    ttls = {k: rdb.pttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert all(k.startswith(("rl:log:", "rl:limit:", "rl:node:")) for k in keys), keys
    assert ttls[f"rl:log:{key}"] <= 500 + 1000
    assert ttls[f"rl:limit:{key}"] <= 24 * 3600 * 1000
    assert ttls["rl:node:rl1"] <= 3 * HEARTBEAT * 1000
    http.delete(f"{nodes[0]}/admin/limits/{key}")


def test_concurrent_checks_across_nodes_never_admit_more_than_the_limit(
    nodes: list[str], http: httpx.Client, rdb: redis.Redis
) -> None:
    http.delete(f"{nodes[0]}/admin/counters/t:atomic")

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
            replies = await asyncio.gather(
                *(
                    client.post(f"{nodes[i % 3]}/check", json={"key": "t:atomic"})
                    for i in range(200)
                )
            )
        return [r.status_code for r in replies]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 20
    assert statuses.count(429) == 180
    assert rdb.zcard("rl:log:t:atomic") == 20


def test_metrics_count_every_check(nodes: list[str], http: httpx.Client) -> None:
    url = nodes[1]
    key = f"t:metrics:{uuid.uuid4().hex}"
    before = metric_values(http, url)
    statuses = [check(http, url, key).status_code for _ in range(8)]
    after = metric_values(http, url)

    def delta(name: str, **labels: str) -> float:
        sample = (name, frozenset({"node": "rl2", **labels}.items()))
        return after[sample] - before.get(sample, 0.0)

    assert statuses.count(200) == 5
    assert delta("ratelimiter_check_seconds_count") == 8
    assert delta("ratelimiter_checks_total", result="allowed") == 5
    assert delta("ratelimiter_checks_total", result="denied") == 3
    assert delta("ratelimiter_checks_total", result="error") == 0
    assert delta("ratelimiter_check_seconds_bucket", le="+Inf") == 8
    assert 0 < delta("ratelimiter_check_seconds_sum") < 8
    assert after[("ratelimiter_heartbeat_age_seconds", frozenset({"node": "rl2"}.items()))] < 1


def test_the_registry_lists_live_nodes_and_drops_dead_ones(
    limits_file: Path, tmp_path: Path, http: httpx.Client
) -> None:
    with (
        RedisServer(tmp_path / "redis") as server,
        ratelimiter_nodes(3, server.url, limits_file, tmp_path, HEARTBEAT, "reg") as started,
    ):
        first, second, third = started

        def listed() -> dict[str, dict[str, Any]]:
            entries = http.get(f"{first.url}/admin/nodes").json()["nodes"]
            return {e["node"]: e for e in entries}

        eventually(lambda: len(listed()) == 3, 2.0, "three nodes registering")
        entries = listed()
        assert {name: e["address"] for name, e in entries.items()} == {
            n.node_id: n.url for n in started
        }
        for entry in entries.values():
            assert entry["alive"] is True
            assert 0 <= entry["age_ms"] < 3 * HEARTBEAT * 1000
            assert abs(entry["skew_ms"]) < 500

        # SIGKILL: no clean exit, the entry stays until its TTL (3 heartbeats) runs out.
        third.kill()
        took = eventually(
            lambda: "reg3" not in listed(), 3 * HEARTBEAT + 1.0, "the killed node dropping out"
        )
        assert took <= 3 * HEARTBEAT + 0.5
        assert set(listed()) == {"reg1", "reg2"}

        # A node that stops cleanly leaves at once rather than waiting to expire.
        second.stop()
        assert set(listed()) == {"reg1"}


def test_fails_closed_while_redis_is_down_and_recovers(
    limits_file: Path, tmp_path: Path, http: httpx.Client
) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    node = RateLimiterNode("solo", server.url, limits_file, tmp_path, HEARTBEAT)
    solo = frozenset({"node": "solo"}.items())
    try:
        # A node whose Redis is not up yet starts anyway, and reports why it cannot serve.
        node.start()
        node.wait_ready()
        assert_refusing(http, node.url)
        server.start()
        eventually(lambda: healthy(http, node.url), 5.0, "health after Redis started")
        assert check(http, node.url, "t:outage").status_code == 200

        server.stop()
        assert_refusing(http, node.url)
        metrics = metric_values(http, node.url)
        errors = frozenset({"node": "solo", "result": "error"}.items())
        assert metrics[("ratelimiter_checks_total", errors)] == 6
        assert metrics[("ratelimiter_check_seconds_count", solo)] == 7
        assert metrics[("ratelimiter_redis_errors_total", solo)] >= 10

        server.start()
        eventually(lambda: healthy(http, node.url), 5.0, "health after Redis returned")
        assert check(http, node.url, "t:outage").status_code == 200
    finally:
        node.stop()
        server.stop()


def healthy(http: httpx.Client, url: str) -> bool:
    response = http.get(f"{url}/health")
    if response.status_code != 200:
        return False
    assert response.json() == {"status": "ok", "node": "solo", "redis": "ok"}
    return True


def assert_refusing(http: httpx.Client, url: str) -> None:
    """Redis is away: unhealthy, and every check refused rather than admitted."""
    health = http.get(f"{url}/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert "Redis unavailable" in health.json()["redis"]
    for _ in range(3):
        refused = http.post(f"{url}/check", json={"key": "t:outage"})
        assert refused.status_code == 503
        assert "Redis unavailable" in refused.json()["error"]
    assert http.get(f"{url}/admin/counters/t:outage").status_code == 503


def test_a_corrupt_log_refuses_its_key_and_shows_in_the_admin_views(
    nodes: list[str], http: httpx.Client, rdb: redis.Redis
) -> None:
    rdb.set("rl:log:t:corrupt", "not a sorted set", px=60_000)
    try:
        refused = http.post(f"{nodes[0]}/check", json={"key": "t:corrupt"})
        assert refused.status_code == 503
        assert "WRONGTYPE" in refused.json()["error"]
        other = check(http, nodes[0], f"t:healthy:{uuid.uuid4().hex}")
        assert other.status_code == 200  # only the corrupt key is refused

        counters = {c["key"]: c for c in http.get(f"{nodes[1]}/admin/counters").json()["counters"]}
        assert "WRONGTYPE" in counters["t:corrupt"]["error"]
        assert "count" in counters["t:counter"]
        blocked = {b["key"]: b for b in http.get(f"{nodes[2]}/admin/blocks").json()["blocked"]}
        assert "WRONGTYPE" in blocked["t:corrupt"]["error"]

        assert http.delete(f"{nodes[0]}/admin/counters/t:corrupt").json()["deleted"] is True
        assert check(http, nodes[0], "t:corrupt").status_code == 200
    finally:
        rdb.delete("rl:log:t:corrupt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read limits file"),
        ("{not json", "is not valid JSON"),
        ('{"keys": {}}', "default: Field required"),
        ('{"default": {"limit": -1, "window_ms": 1000}}', "default.limit"),
        ('{"default": {"limit": 1, "window_ms": 1000}, "keys": {"k": {"limit": 1}}}', "keys.k"),
    ],
)
def test_a_bad_limits_file_is_refused_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "limits.json"
    if content is not None:
        path.write_text(content)
    assert main(node_args("--limits", str(path))) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "hint:" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--heartbeat", "0"), "invalid --heartbeat"),
        (("--redis", "http://127.0.0.1:1"), "invalid --redis"),
        (("--node-id", "bad id"), "invalid --node-id"),
        (("--redis", "redis://127.0.0.1:notaport/0"), "invalid Redis URL"),
        (("--advertise", "10.0.0.1:8080"), "invalid --advertise"),
        (("--port", "nope"), "invalid int value"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(
    limits_file: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    status: int | str | None
    try:
        status = main(node_args("--limits", str(limits_file), *args))
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    assert status == 2
    assert message in capsys.readouterr().err


def test_the_process_exits_non_zero_on_a_bad_limits_file(tmp_path: Path) -> None:
    """The same refusal, seen from outside, as the lab's supervisor sees it."""
    argv = node_args("--limits", str(tmp_path / "missing.json"))
    result = subprocess.run(
        [sys.executable, "-m", "operator_ai.subjects.ratelimiter.service", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot read limits file" in result.stderr
    assert "Traceback" not in result.stderr


def node_args(*args: str) -> list[str]:
    """Arguments for a node that must refuse to start; its Redis URL is never dialled."""
    defaults = {"--node-id": "bad", "--port": "1", "--redis": "redis://127.0.0.1:1/0"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    return [a for pair in {**defaults, **given}.items() for a in pair]

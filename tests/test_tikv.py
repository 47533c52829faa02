"""The TiKV subject against a loopback fake PD and Prometheus (`fake_tikv.py`): observe(),
every invariant, the PromQL it sends, and the monitor when PD or Prometheus is gone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from fake_tikv import Cluster, FakeTiKV, GiB, fake_tikv
from operator_ai.core import NoControl
from operator_ai.lab import Lab, LabDir
from operator_ai.lab.state import LabNode as Node
from operator_ai.lab.state import LabState
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.store import Status, Store
from operator_ai.subjects.tikv.observe import parse_size, queries

TIKV = load_subject("tikv")


def lab_state(fake: FakeTiKV, prefix: str = "op123abc") -> LabState:
    nodes = [
        Node(name, "127.0.0.1", {"client": int(pd.url.rsplit(":", 1)[1])})
        for name, pd in fake.pds.items()
    ]
    nodes += [Node(f"tikv{i}", "127.0.0.1", {"status": 1}) for i in (1, 2, 3)]
    nodes.append(Node("prometheus", "127.0.0.1", {"http": 1}))
    return LabState(
        name="tikv",
        subject="tikv",
        mode="docker",
        prefix=prefix,
        user="root",
        nodes=nodes,
        created_at="2026-12-01T00:00:00+00:00",
        extra={"prometheus": fake.prometheus.url, "ops_image": "ops"},
    )


@pytest.fixture
def fake() -> Iterator[FakeTiKV]:
    with fake_tikv() as f:
        yield f


def violations(fake: FakeTiKV, tmp_path: Path) -> set[str]:
    observation = TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    return {v.key for v in TIKV.check(observation, [])}


def test_a_healthy_cluster_is_observed_whole_and_breaks_nothing(
    fake: FakeTiKV, tmp_path: Path
) -> None:
    observation = TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    assert observation.cluster["leader"] == "pd1"
    assert observation.unobserved == ()
    assert observation.cluster["regions"] == {"miss_peer": 0, "down_peer": 0, "pending_peer": 0}
    assert {n for n, s in observation.nodes.items() if s["role"] == "pd"} == {"pd1", "pd2", "pd3"}
    assert all(observation.nodes[p]["healthy"] for p in ("pd1", "pd2", "pd3"))
    store = observation.nodes["tikv2"]
    assert (store["store_id"], store["state"], store["leader_count"]) == (2, "Up", 10)
    assert store["status_address"] == "tikv2:20180"
    # Prometheus's figures, matched to the store by its status address.
    assert (store["qps"], store["p99_ms"], store["cpu_cores"]) == (120.0, 4.0, 0.35)
    assert (store["capacity"], store["available"]) == (100 * GiB, 80 * GiB)
    assert TIKV.check(observation, []) == []
    assert TIKV.leader(observation) == "pd1"


def _store(name: str, **changes: object) -> Callable[[Cluster], None]:
    def change(cluster: Cluster) -> None:
        cluster.stores = [
            dataclasses.replace(s, **changes) if s.name == name else s for s in cluster.stores
        ]

    return change


def _set(**changes: object) -> Callable[[Cluster], None]:
    def change(cluster: Cluster) -> None:
        for name, value in changes.items():
            setattr(cluster, name, value)

    return change


CASES = {
    "disconnected": (_store("tikv2", state="Disconnected"), {"tikv:store_down:tikv2"}),
    "down": (_store("tikv3", state="Down", leader_count=10), {"tikv:store_down:tikv3"}),
    "offline": (_store("tikv1", state="Offline"), {"tikv:store_down:tikv1"}),
    "pd member unhealthy": (
        _set(pds={"pd1": True, "pd2": False, "pd3": True}),
        {"tikv:pd_member_unhealthy:pd2"},
    ),
    "no pd leader": (_set(leader=None), {"tikv:no_pd_leader:cluster"}),
    "high latency": (_store("tikv1", p99_seconds=0.9), {"tikv:high_latency:tikv1"}),
    "low disk": (_store("tikv3", available=5 * GiB), {"tikv:low_disk_space:tikv3"}),
    "missing peers": (
        _set(regions={"miss-peer": 4, "down-peer": 0, "pending-peer": 0}),
        {"tikv:region_unhealthy:cluster"},
    ),
    "down peers": (
        _set(regions={"miss-peer": 0, "down-peer": 2, "pending-peer": 1}),
        {"tikv:region_unhealthy:cluster"},
    ),
    "leader imbalance": (
        lambda c: [_store("tikv1", leader_count=28)(c), _store("tikv3", leader_count=1)(c)],
        {"tikv:leader_imbalance:tikv1", "tikv:leader_imbalance:tikv3"},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_invariant_fires_on_the_state_that_breaks_it_and_only_then(
    case: str, fake: FakeTiKV, tmp_path: Path
) -> None:
    assert violations(fake, tmp_path) == set()
    change, expected = CASES[case]
    change(fake.cluster)
    assert violations(fake, tmp_path) == expected


def test_a_store_pd_does_not_list_is_down_and_a_leaderless_pd_hides_the_rest(
    fake: FakeTiKV, tmp_path: Path
) -> None:
    _store("tikv3", state="Tombstone")(fake.cluster)  # PD lists tombstones only when asked
    observation = TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    assert observation.nodes["tikv3"]["state"] == "not registered"
    [down] = TIKV.check(observation, [])
    assert (down.key, down.message) == ("tikv:store_down:tikv3", "tikv3 is not registered in PD")

    fake.cluster.leader = None  # the members it answers itself; the rest is forwarded, or 503
    observation = TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    assert {"store_down", "region_unhealthy", "leader_imbalance", "high_latency"} <= set(
        observation.unobserved
    )
    assert [v.key for v in TIKV.check(observation, [])] == ["tikv:no_pd_leader:cluster"]


def test_promql_selects_stores_by_status_port_and_sums_buckets_by_le(
    fake: FakeTiKV, tmp_path: Path
) -> None:
    TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    sent = [parse_qs(urlparse(p).query)["query"][0] for p in fake.prometheus.received]
    assert len(sent) == len(queries(["x"]))
    for query in sent:
        assert 'instance=~"tikv1:20180|tikv2:20180|tikv3:20180"' in query
        assert "20160" not in query
    [p99] = [q for q in sent if "histogram_quantile" in q]
    assert p99.startswith("histogram_quantile(0.99, sum by (le, instance) (rate(")
    assert "tikv_grpc_msg_duration_seconds_bucket" in p99


def test_promql_escapes_addresses_for_re2_inside_a_string() -> None:
    [query] = [q for k, q in queries(["10.0.0.7:20180"]).items() if k == "qps"]
    assert 'instance=~"10\\\\.0\\\\.0\\\\.7:20180"' in query


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100GiB", 100 * GiB),
        ("9.995GiB", int(9.995 * GiB)),
        ("512MiB", 512 * 2**20),
        ("0B", 0),
        ("937 GiB", 937 * GiB),
        (42, 42),
        ("lots", None),
        (None, None),
    ],
)
def test_pd_sizes_parse_as_pd_writes_them(text: object, expected: int | None) -> None:
    assert parse_size(text) == expected


def test_a_failing_health_check_blinds_one_invariant_not_the_whole_look(
    fake: FakeTiKV, tmp_path: Path
) -> None:
    fake.cluster.health_up = False
    observation = TIKV.observe(lab_state(fake).cluster(tmp_path, NoControl()), timeout=5.0)
    assert observation.unobserved == ("pd_member_unhealthy",)
    assert "health" in observation.cluster["errors"]
    assert TIKV.check(observation, []) == []  # the stores and regions were still seen


def test_one_dead_pd_member_is_named_while_the_others_answer(
    fake: FakeTiKV, tmp_path: Path
) -> None:
    state = lab_state(fake)
    fake.pds["pd1"].close()
    fake.cluster.pds["pd1"] = False
    fake.cluster.leader = "pd2"
    observation = TIKV.observe(state.cluster(tmp_path, NoControl()), timeout=5.0)
    assert observation.cluster["answering_pd"] == "pd2"
    assert observation.nodes["pd1"]["error"] == "connection refused"
    assert {v.key for v in TIKV.check(observation, [])} == {"tikv:pd_member_unhealthy:pd1"}


# -- the monitor -----------------------------------------------------------------------------


@pytest.fixture
def monitor(fake: FakeTiKV, tmp_path: Path) -> Iterator[Monitor]:
    lab_dir = LabDir(tmp_path, "tikv")
    lab_dir.path.mkdir(parents=True)
    lab_dir.save(lab_state(fake))
    with Store(f"sqlite:///{tmp_path / 'operator.db'}") as store:
        lab = Lab(lab_dir)
        yield Monitor(store, lab.subject, lab.cluster, interval=1.0)


def cycles(monitor: Monitor, n: int) -> None:
    for _ in range(n):
        monitor.cycle()


def status(monitor: Monitor) -> dict[str, Status]:
    return {t.key: t.status for t in monitor.store.tickets()}


def test_an_unreachable_pd_opens_subject_unobservable_and_clears_nothing(
    fake: FakeTiKV, monitor: Monitor
) -> None:
    _store("tikv2", state="Disconnected")(fake.cluster)
    monitor.cycle()
    assert status(monitor) == {"tikv:store_down:tikv2": Status.OPEN}

    _store("tikv2", state="Up")(fake.cluster)  # the store is back, but nobody can tell
    for pd in fake.pds.values():
        pd.close()
    started = datetime.now(UTC)
    while (datetime.now(UTC) - started).total_seconds() < 2.5:
        monitor.cycle()
    assert status(monitor) == {
        "tikv:store_down:tikv2": Status.OPEN,
        "tikv:subject_unobservable:cluster": Status.OPEN,
    }
    assert "no PD member answered" in (monitor.last_error or "")


def test_metrics_invariants_keep_their_tickets_while_prometheus_is_down(
    fake: FakeTiKV, monitor: Monitor
) -> None:
    _store("tikv1", p99_seconds=2.0)(fake.cluster)
    started = datetime.now(UTC)
    while "tikv:high_latency:tikv1" not in status(monitor):
        monitor.cycle()
        assert (datetime.now(UTC) - started).total_seconds() < 15, status(monitor)

    fake.cluster.prometheus_up = False
    _store("tikv1", p99_seconds=0.004)(fake.cluster)
    _store("tikv3", state="Disconnected")(fake.cluster)
    started = datetime.now(UTC)
    while (datetime.now(UTC) - started).total_seconds() < 2.5:
        monitor.cycle()
    assert status(monitor) == {
        "tikv:high_latency:tikv1": Status.OPEN,  # blind to it, so not cleared
        "tikv:subject_unobservable:prometheus": Status.OPEN,
        "tikv:store_down:tikv3": Status.OPEN,  # PD still answers for what it knows
    }

    fake.cluster.prometheus_up = True
    _store("tikv3", state="Up")(fake.cluster)
    cycles(monitor, 3)
    assert set(status(monitor).values()) == {Status.RESOLVED}


def test_a_store_that_goes_down_keeps_the_disk_ticket_it_can_no_longer_show(
    fake: FakeTiKV, monitor: Monitor
) -> None:
    _store("tikv2", available=4 * GiB)(fake.cluster)
    monitor.cycle()
    assert status(monitor) == {"tikv:low_disk_space:tikv2": Status.OPEN}

    _store("tikv2", state="Disconnected", available=90 * GiB)(fake.cluster)  # a stale figure
    cycles(monitor, 3)
    assert status(monitor) == {
        "tikv:low_disk_space:tikv2": Status.OPEN,  # not seen, so not cleared
        "tikv:store_down:tikv2": Status.OPEN,
    }

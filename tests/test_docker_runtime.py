"""The Docker runtime without an engine: the compose file, the fault and sandbox command
lines, and what `operator lab up tikv` says when Docker is missing. The live lab needs an
engine and skips without one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from lab_helpers import lab_home, live, running_lab, wait_for
from operator_ai.core import NoControl
from operator_ai.lab import docker
from operator_ai.lab.state import LabNode, LabState
from operator_ai.sandbox.docker import run_argv
from operator_ai.sandbox.limits import Limits
from operator_ai.subjects.tikv import compose, load_commands
from operator_ai.subjects.tikv.briefing import briefing
from operator_ai.subjects.tikv.faults import FAULTS

ENGINE = docker.engine_problem()


def state() -> LabState:
    topology = compose.topology(3)
    nodes = [
        LabNode(n, "127.0.0.1", {p: 40000 + i for p in ports})
        for i, (n, ports) in enumerate(topology.items())
    ]
    return LabState(
        name="tikv",
        subject="tikv",
        mode="docker",
        prefix="op0a1b2c",
        user="root",
        nodes=nodes,
        created_at="2026-12-01T00:00:00+00:00",
        extra={"project": "op0a1b2c"},
    )


def test_the_compose_file_runs_three_pd_three_tikv_prometheus_and_a_load() -> None:
    lab = state()
    services = compose.services(lab)
    assert set(services) == {
        "pd1",
        "pd2",
        "pd3",
        "tikv1",
        "tikv2",
        "tikv3",
        "prometheus",
        "ycsb",
        "ops",
    }
    for name in ("pd1", "tikv2", "prometheus"):
        assert services[name]["container_name"] == f"op0a1b2c-{name}"
        assert services[name]["restart"] == "no"  # a fault stays until someone fixes it
    # Published ports bind loopback only, on the ports lab.json records.
    assert services["pd2"]["ports"] == [f"127.0.0.1:{lab.node('pd2').ports['client']}:2379"]
    assert services["tikv1"]["ports"] == [f"127.0.0.1:{lab.node('tikv1').ports['status']}:20180"]
    tikv = services["tikv3"]["command"]
    assert "--advertise-status-addr=tikv3:20180" in tikv
    assert "--pd=pd1:2379,pd2:2379,pd3:2379" in tikv
    assert (
        "--initial-cluster=pd1=http://pd1:2380,pd2=http://pd2:2380,pd3=http://pd3:2380"
        in (services["pd1"]["command"])
    )
    assert services["ycsb"]["profiles"] == ["load"] and services["ops"]["profiles"] == ["tools"]
    volumes = compose.volumes(["pd1"], {"tikv1": "/dev/loop7"})
    assert volumes["tikv1-data"]["driver_opts"] == {"type": "ext4", "device": "/dev/loop7"}


def test_prometheus_scrapes_the_status_port_that_the_promql_matches() -> None:
    config = compose.prometheus_config(["tikv1", "tikv2", "tikv3"], ["pd1", "pd2", "pd3"])
    [tikv] = [job for job in config["scrape_configs"] if job["job_name"] == "tikv"]
    assert tikv["static_configs"][0]["targets"] == ["tikv1:20180", "tikv2:20180", "tikv3:20180"]


def test_docker_faults_build_the_commands_they_run() -> None:
    lab = state()
    assert FAULTS["kill"].commands(lab.prefix, "tikv2", {}) == [
        ["docker", "kill", "--signal", "KILL", "op0a1b2c-tikv2"]
    ]
    assert FAULTS["pause"].undo(lab.prefix, "pd1", {}) == [["docker", "unpause", "op0a1b2c-pd1"]]
    [delay] = FAULTS["delay"].commands(lab.prefix, "tikv1", {"ms": "250", "jitter": "0"})
    assert delay[:8] == [
        "docker",
        "run",
        "--rm",
        "--network",
        "container:op0a1b2c-tikv1",
        "--cap-add",
        "NET_ADMIN",
        docker.TOOLS_IMAGE,
    ]
    assert delay[8:] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "250ms"]
    [loss] = FAULTS["loss"].commands(lab.prefix, "tikv1", {"percent": "40"})
    assert loss[-2:] == ["loss", "40%"]
    assert FAULTS["loss"].undo(lab.prefix, "tikv1", {})[0][-6:] == [
        "tc",
        "qdisc",
        "del",
        "dev",
        "eth0",
        "root",
    ]
    rules = FAULTS["partition"].rules("-I", ["10.5.0.3", "10.5.0.4"])  # type: ignore[attr-defined]
    assert rules == (
        "iptables -I INPUT -s 10.5.0.3 -j DROP && iptables -I OUTPUT -d 10.5.0.3 "
        "-j DROP && iptables -I INPUT -s 10.5.0.4 -j DROP && iptables -I OUTPUT "
        "-d 10.5.0.4 -j DROP"
    )
    [fill] = FAULTS["disk_pressure"].commands(lab.prefix, "tikv3", {"leave_mb": "64"})
    assert fill[:5] == ["docker", "run", "--rm", "--volumes-from", "op0a1b2c-tikv3"]
    assert "count=$((free - 64))" in fill[-1]


def test_fault_parameters_are_checked_before_anything_runs() -> None:
    from operator_ai.errors import LabError, UsageError

    with pytest.raises(UsageError, match="between 0 and 100"):
        FAULTS["loss"].commands(state().prefix, "tikv1", {"percent": "140"})
    with pytest.raises(LabError, match="targets a store"):
        FAULTS["disk_pressure"].commands(state().prefix, "pd1", {"leave_mb": "64"})


def test_the_docker_sandbox_is_a_locked_down_container_without_the_docker_socket() -> None:
    argv = run_argv(
        state(), Path("/var/lib/operator/labs/tikv"), "ops:1", "sbx", "pd-ctl store", Limits()
    )
    line = " ".join(argv)
    for flag in (
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--network op0a1b2c-net",
        "--user 10001:10001",
        "--pids-limit 512",
        "--rm",
    ):
        assert flag in line
    assert "/var/lib/operator/labs/tikv:/lab:ro" in line
    assert "docker.sock" not in line and "--privileged" not in line
    assert argv[-4:] == ["ops:1", "bash", "-c", "pd-ctl store"]


def test_compose_commands_name_the_lab_project_and_remove_volumes_on_down() -> None:
    lab, path = state(), Path("/labs/tikv")
    base = ["docker", "compose", "--project-name", "op0a1b2c", "--file", "/labs/tikv/compose.yaml"]
    # Every profile, so that a running load's container goes too (and frees the network).
    assert docker.down(lab.prefix, path) == [*base, "--profile", "*", "down", "--volumes",
                                      "--remove-orphans", "--timeout", "5"]  # fmt: skip
    load, run = load_commands(lab.cluster(path, NoControl()), 200.4, 30)
    assert load[: len(base) + 6] == [*base, "--profile", "load", "run", "--rm", "-T", "ycsb"]
    assert load[len(base) + 6] == "load" and run[len(base) + 6] == "run"
    assert "operationcount=6012" in run and "target=200" in run  # go-ycsb reads an integer
    assert "tikv.pd=pd1:2379,pd2:2379,pd3:2379" in run and "tikv.type=raw" in run


@pytest.mark.skipif(ENGINE is None, reason="a Docker engine answers here")
def test_lab_up_tikv_says_it_needs_docker_and_how_to_get_it(tmp_path: Path) -> None:
    done = run_cli("lab", "up", "tikv", home=tmp_path)
    assert done.returncode == 1
    assert "the tikv lab runs in Docker" in done.stderr
    assert "https://docs.docker.com/engine/install/" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "labs" / "tikv" / "lab.json").exists()  # nothing half-made


def test_lab_up_refuses_runtimes_a_subject_does_not_have(tmp_path: Path) -> None:
    done = run_cli("lab", "up", "tikv", "--runtime", "process", home=tmp_path)
    assert done.returncode == 1 and "runs only in Docker" in done.stderr
    done = run_cli("lab", "up", "etcd", "--runtime", "docker", home=tmp_path)
    assert done.returncode == 1 and "etcd has no Docker lab" in done.stderr


@pytest.fixture
def tikv_lab() -> Iterator[object]:
    with lab_home() as home, running_lab(home, "tikv", mode="docker") as lab:
        yield lab


@pytest.mark.skipif(ENGINE is not None, reason=f"needs a Docker engine: {ENGINE}")
@pytest.mark.skipif(shutil.which("losetup") is None, reason="needs losetup for the store disks")
def test_live_a_killed_store_opens_store_down(tikv_lab: object) -> None:
    from operator_ai.lab import Lab
    from operator_ai.lab import injections as chaos
    from operator_ai.monitor import Monitor
    from operator_ai.store import Store

    assert isinstance(tikv_lab, Lab)
    with Store(f"sqlite:///{tikv_lab.path / 'test.db'}") as store:
        monitor = Monitor(store, tikv_lab.subject, tikv_lab.cluster, interval=1.0)
        chaos.inject(tikv_lab, "kill", "tikv2", {})

        def opened() -> object:
            monitor.cycle()
            return live(store, "tikv:store_down:tikv2")

        wait_for(opened, timeout=90, what="PD to see the store disconnected")


def test_the_briefing_names_roles_containers_tools_and_queries() -> None:
    text = briefing(state().cluster(Path("/labs/tikv"), NoControl()))
    for needle in ("op0a1b2c-tikv2", "op0a1b2c-pd1", "pd-ctl -u http://pd1:2379", "tikv-ctl",
                   "tikv3:20160 (status tikv3:20180)", "histogram_quantile(0.99",
                   "no access\nto Docker", "`/lab/compose.yaml`"):  # fmt: skip
        assert needle in text, needle


def test_delay_and_loss_refuse_to_share_a_node(tmp_path: Path) -> None:
    from operator_ai.errors import LabError
    from operator_ai.lab import Lab, LabDir
    from operator_ai.lab import injections as chaos

    lab_dir = LabDir(tmp_path, "tikv")
    lab_dir.path.mkdir(parents=True)
    lab_dir.save(state())
    active = chaos.Injections(lab_dir.path).add(
        "delay", "tikv1", {"ms": "200", "jitter": "0"}, {"injected_at": "2026-12-01T00:00:00"}
    )
    with pytest.raises(LabError, match=f"tikv1 already has delay \\(injection {active.id}\\)"):
        chaos.inject(Lab(lab_dir), "loss", "tikv1", {})


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None,
                    reason="the store disks are loop devices: root and losetup")  # fmt: skip
def test_the_lab_files_and_store_disks_are_written_and_released(tmp_path: Path) -> None:
    lab = state()
    (tmp_path / "conf").mkdir()  # as `lab up` makes it
    try:
        spec = compose.write(lab, tmp_path)
        devices = [v["driver_opts"]["device"] for k, v in spec["volumes"].items() if "tikv" in k]
        assert len(devices) == 3 and all(Path(d).is_block_device() for d in devices)
        assert spec["name"] == "op0a1b2c" and spec["networks"]["lab"]["name"] == "op0a1b2c-net"
        assert 'reserve-space = "0MB"' in (tmp_path / "conf" / "tikv.toml").read_text()
        scraped = yaml.safe_load((tmp_path / "conf" / "prometheus.yml").read_text())
        assert scraped == compose.prometheus_config(["tikv1", "tikv2", "tikv3"],
                                                    ["pd1", "pd2", "pd3"])  # fmt: skip
        assert "COPY --from=pd /pd-ctl" in (tmp_path / "conf" / "ops" / "Dockerfile").read_text()
        assert lab.extra["ops_image"] == "operator-tikv-ops:op0a1b2c"
    finally:
        released = docker.release_loops(tmp_path / "disks")
    assert sorted(released) == sorted(f"loop device {d}" for d in devices)
    assert docker.release_loops(tmp_path / "disks") == []  # nothing left to release

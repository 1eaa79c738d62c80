"""The supervisor's arithmetic: worker node ids (a restarted worker is a new
node), the machine a worker belongs to, each worker's share of the WebRTC UDP
range, and port 0 resolved once for every worker."""

from __future__ import annotations

import pytest

from control.settings import SettingsError, load_settings
from control.supervisor import machine_of, resolve_ports, udp_slice, worker_env, worker_node_id


def test_a_restarted_worker_gets_a_new_node_id() -> None:
    assert worker_node_id("box", 0, 1) == "box-w0"
    assert worker_node_id("box", 1, 1) == "box-w1"
    assert worker_node_id("box", 1, 2) == "box-w1.2"


def test_the_machine_of_a_worker_is_its_supervisor() -> None:
    assert machine_of("box-w0") == "box"
    assert machine_of("box-w12.3") == "box"
    assert machine_of("edge-west") == "edge-west"
    assert machine_of("box-wx") == "box-wx"


def test_workers_split_the_udp_range_without_overlap() -> None:
    slices = [udp_slice("40000-40999", i, 3) for i in range(3)]
    assert slices == ["40000-40332", "40333-40665", "40666-40999"]
    assert udp_slice("", 1, 4) == ""
    with pytest.raises(SettingsError):
        udp_slice("40000-40001", 0, 3)


def test_port_zero_is_picked_once_for_every_worker() -> None:
    settings = load_settings(env={}, host="127.0.0.1", http_port=0, rtmp_port=0, workers=2)
    resolved = resolve_ports(settings)
    assert resolved.http_port > 0 and resolved.rtmp_port > 0
    env = worker_env(resolved, 1, "box-w1")
    assert env["ONAIR_HTTP_PORT"] == str(resolved.http_port)
    assert env["ONAIR_WORKER_INDEX"] == "1" and env["ONAIR_NODE_ID"] == "box-w1"


def test_workers_default_to_the_cores_and_stay_in_range() -> None:
    import os

    assert load_settings(env={}).workers == (os.cpu_count() or 1)
    assert load_settings(env={"ONAIR_WORKERS": "1"}).workers == 1
    with pytest.raises(SettingsError):
        load_settings(env={"ONAIR_WORKERS": "0"})

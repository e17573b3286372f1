"""The extender: plan book, scoring and the wire protocol over real HTTP (no cluster)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from dunnage.scheduler_extender import nodestate
from dunnage.scheduler_extender.metrics import DunnageMetrics
from dunnage.scheduler_extender.nodestate import NodeGpus, NodeState, pod_gpus
from dunnage.scheduler_extender.planbook import PlanBook, PodRef
from dunnage.scheduler_extender.protocol import ASSUME_SECONDS, ExtenderCore, best_fit_score
from dunnage.scheduler_extender.server import (
    MAX_BODY_BYTES,
    ExtenderHTTPServer,
    make_server,
    serve_in_thread,
)
from dunnage.scheduler_extender.steering import SteeringOrders
from dunnage.solver.plan import Plan, PlanStatus


def pod(
    name: str = "big",
    ns: str = "ml",
    gpus: int = 0,
    uid: str = "",
    owner: tuple[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True}
        ]
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "metadata": meta,
        "spec": {"priority": 100, "containers": [{"name": "c", "resources": {"limits": limits}}]},
    }


def node(name: str, gpus: int) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "8", "pods": "110", "nvidia.com/gpu": str(gpus)}},
    }


def orders(expires_at: float = 1e12) -> SteeringOrders:
    return SteeringOrders(
        plan="plan-1",
        expires_at=expires_at,
        pods={"ml/big": "n2"},
        owners={"ml/ReplicaSet/web": ("n3",)},
        victims={"n2": ("uid-v1", "uid-v2"), "n3": ()},
        nodes=frozenset({"n2", "n3"}),
    )


# --- plan book -----------------------------------------------------------------------------


def test_plan_book_steers_by_key_and_owner_and_forgets_retired_plans() -> None:
    book = PlanBook()
    assert book.steer(PodRef("ml", "big")) is None
    book.publish(orders())
    steer = book.steer(PodRef("ml", "big"))
    assert steer is not None and steer.nodes == ("n2",) and steer.plan == "plan-1"
    assert steer.reason() == "dunnage plan plan-1 places this pod on n2"
    moved = book.steer(PodRef("ml", "web-abcde", owner="ReplicaSet/web"))
    assert moved is not None and moved.nodes == ("n3",)
    assert book.steer(PodRef("other", "web-abcde", owner="ReplicaSet/web")) is None
    assert book.view().reserved == {"n2": "plan-1", "n3": "plan-1"}
    book.retire("plan-1")
    book.retire("never-published")
    assert book.steer(PodRef("ml", "big")) is None and book.active() == []


def test_plan_book_drops_expired_plans() -> None:
    now = [100.0]
    changes: list[int] = []
    book = PlanBook(clock=lambda: now[0], on_change=changes.append)
    book.publish(orders(expires_at=110.0))
    assert book.active() == ["plan-1"]
    now[0] = 110.0
    assert book.active() == [] and book.steer(PodRef("ml", "big")) is None
    assert changes == [1, 0]


# --- scoring -------------------------------------------------------------------------------


def test_best_fit_prefers_the_tightest_node_that_fits() -> None:
    assert best_fit_score(2, NodeGpus(8, 2)) == 9  # exact fit
    assert best_fit_score(2, NodeGpus(8, 3)) == 8
    assert best_fit_score(2, NodeGpus(8, 8)) == 3
    assert best_fit_score(2, NodeGpus(8, 1)) == 0  # does not fit
    assert best_fit_score(0, NodeGpus(0, 0)) == 9  # CPU pods prefer nodes without GPUs
    assert best_fit_score(0, NodeGpus(8, 0)) == 5
    assert best_fit_score(0, NodeGpus(8, 8)) == 1
    assert best_fit_score(1, None) == 5


def test_node_state_counts_free_gpus_from_watch_events() -> None:
    state = NodeState()
    state.reset([node("n1", 8), node("n2", 4)], [])
    bound = pod("a", gpus=3)
    bound["spec"]["nodeName"] = "n1"
    state.apply("ADDED", "Pod", bound)
    state.apply("MODIFIED", "Pod", bound)  # counted once
    assert state.gpus()["n1"] == NodeGpus(8, 5)
    assert state.pod_node("uid-a") == "n1"
    state.apply("DELETED", "Pod", bound)
    assert state.gpus()["n1"] == NodeGpus(8, 8) and state.pod_node("uid-a") is None
    done = pod("b", gpus=2)
    done["spec"]["nodeName"] = "n2"
    done["status"] = {"phase": "Succeeded"}
    state.apply("ADDED", "Pod", done)
    assert state.gpus()["n2"] == NodeGpus(4, 4)


def test_pod_gpus_counts_init_containers_and_milli_resources() -> None:
    spec = {
        "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
            {"resources": {"requests": {"nvidia.com/gpu": 2}}},
        ],
        "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}],
    }
    assert pod_gpus(spec, ["nvidia.com/gpu"]) == 4
    shared = {"containers": [{"resources": {"limits": {"dunnage.io/gpu-milli": "500"}}}]}
    assert pod_gpus(shared, ["dunnage.io/gpu-milli"]) == 0.5


# --- the protocol over real HTTP -----------------------------------------------------------


@pytest.fixture()
def server() -> Iterator[ExtenderHTTPServer]:
    metrics = DunnageMetrics(CollectorRegistry())
    srv = make_server("127.0.0.1", 0, ExtenderCore(PlanBook()), metrics)
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def call(
    srv: ExtenderHTTPServer, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        if body is None and raw is None:
            conn.request("GET", path)
        else:
            data = raw if raw is not None else json.dumps(body).encode()
            conn.request("POST", path, data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(payload)
    return response.status, payload.decode()


def test_filter_passes_unplanned_pods_through(server: ExtenderHTTPServer) -> None:
    status, result = call(server, "/filter", {"Pod": pod(), "NodeNames": ["n1", "n2"]})
    assert status == 200
    assert result["NodeNames"] == ["n1", "n2"]
    assert result["FailedNodes"] == {} and result["Error"] == ""


def test_filter_keeps_only_the_planned_node(server: ExtenderHTTPServer) -> None:
    server.core.book.publish(orders())
    status, result = call(server, "/filter", {"Pod": pod(), "NodeNames": ["n1", "n2", "n3"]})
    assert status == 200 and result["NodeNames"] == ["n2"]
    failed = {**result["FailedNodes"], **result["FailedAndUnresolvableNodes"]}
    assert set(failed) == {"n1", "n3"}
    assert failed["n1"] == "dunnage plan plan-1 places this pod on n2"
    # a bystander is kept off the nodes the plan frees up
    status, result = call(server, "/filter", {"Pod": pod("other"), "NodeNames": ["n1", "n2", "n3"]})
    assert result["NodeNames"] == ["n1"] and set(result["FailedNodes"]) == {"n2", "n3"}
    assert "plan-1" in result["FailedNodes"]["n2"]


def test_filter_with_full_node_lists_answers_with_nodes(server: ExtenderHTTPServer) -> None:
    server.core.book.publish(orders())
    nodes = {"items": [node("n1", 8), node("n2", 8)]}
    status, result = call(server, "/filter", {"pod": pod(), "nodes": nodes})  # any key case
    assert status == 200 and result["NodeNames"] is None
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["n2"]


def test_prioritize_scores_planned_node_ten(server: ExtenderHTTPServer) -> None:
    status, result = call(server, "/prioritize", {"Pod": pod(gpus=2), "NodeNames": ["n1", "n2"]})
    assert status == 200 and result == [{"Host": "n1", "Score": 5}, {"Host": "n2", "Score": 5}]
    server.core.book.publish(orders())
    status, result = call(server, "/prioritize", {"Pod": pod(gpus=2), "NodeNames": ["n1", "n2"]})
    assert result == [{"Host": "n1", "Score": 0}, {"Host": "n2", "Score": 10}]


def test_prioritize_best_fit_from_node_objects_and_from_node_state() -> None:
    core = ExtenderCore(PlanBook())
    nodes = {"items": [node("n8", 8), node("n2", 2), node("n1", 1)]}
    answer, _ = core.prioritize(json.dumps({"Pod": pod(gpus=2), "Nodes": nodes}).encode())
    assert [h["Score"] for h in json.loads(answer)] == [3, 9, 0]

    state = NodeState()
    state.reset([node("a", 8), node("b", 8), node("cpu", 0)], [])
    busy = pod("busy", gpus=6)
    busy["spec"]["nodeName"] = "b"
    state.apply("ADDED", "Pod", busy)
    core = ExtenderCore(PlanBook(), state)
    body = json.dumps({"Pod": pod(gpus=2), "NodeNames": ["a", "b", "cpu", "unknown"]}).encode()
    scores = {h["Host"]: h["Score"] for h in json.loads(core.prioritize(body)[0])}
    assert scores == {"a": 3, "b": 9, "cpu": 0, "unknown": 5}
    body = json.dumps({"Pod": pod("web"), "NodeNames": ["a", "b", "cpu"]}).encode()
    scores = {h["Host"]: h["Score"] for h in json.loads(core.prioritize(body)[0])}
    assert scores["cpu"] > scores["b"] > scores["a"]


def test_preempt_returns_plan_victims_or_the_schedulers_candidates(
    server: ExtenderHTTPServer,
) -> None:
    candidates = {
        "n1": {"Pods": [{"UID": "uid-x"}], "NumPDBViolations": 0},
        "n2": {"Pods": [{"UID": "uid-v1"}], "NumPDBViolations": 1},
    }
    args = {"Pod": pod(), "NodeNameToMetaVictims": candidates}
    status, result = call(server, "/preempt", args)
    assert status == 200 and result == {"NodeNameToMetaVictims": candidates}
    # full victims (not node-cache-capable) are mapped to meta victims
    full = {"n1": {"Pods": [pod("x")], "NumPDBViolations": 0}}
    status, result = call(server, "/preempt", {"Pod": pod(), "NodeNameToVictims": full})
    assert result == {
        "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "uid-x"}], "NumPDBViolations": 0}}
    }

    server.core.book.publish(orders())
    status, result = call(server, "/preempt", args)
    assert result == {
        "NodeNameToMetaVictims": {
            "n2": {"Pods": [{"UID": "uid-v1"}, {"UID": "uid-v2"}], "NumPDBViolations": 1}
        }
    }
    # a moved pod's replacement: its planned node has no victims left -> no preemption at all
    moved = {"Pod": pod("web-1", owner=("ReplicaSet", "web")), "NodeNameToMetaVictims": candidates}
    status, result = call(server, "/preempt", moved)
    assert result == {"NodeNameToMetaVictims": {}}
    # bystanders may not preempt on reserved nodes
    status, result = call(
        server, "/preempt", {"Pod": pod("other"), **{"NodeNameToMetaVictims": candidates}}
    )
    assert set(result["NodeNameToMetaVictims"]) == {"n1"}


def test_preempt_skips_victims_the_node_state_knows_are_gone() -> None:
    state = NodeState()
    victim = pod("v1")
    victim["spec"]["nodeName"] = "n2"
    state.reset([node("n2", 8)], [victim])  # uid-v2 already gone
    book = PlanBook()
    book.publish(orders())
    core = ExtenderCore(book, state)
    answer, steer = core.preempt(json.dumps({"Pod": pod()}).encode())
    assert steer is not None
    assert json.loads(answer)["NodeNameToMetaVictims"] == {
        "n2": {"Pods": [{"UID": "uid-v1"}], "NumPDBViolations": 0}
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b'{"Pod": 3}',
        b'{"Pod": {"metadata": []}}',
        b'{"Pod": {}, "NodeNames": "n1"}',
        b'{"Pod": {}, "NodeNames": [1]}',
        b'{"Pod": {}, "Nodes": {"items": [{}]}}',
        b'{"Pod": {"spec": {"priority": "high"}}}',
        b"\xff\xfe\x00",
        b"[" * 100_000,
        b'{"Pod": {}, "NodeNameToMetaVictims": []}',
        b'{"Pod": {}, "NodeNameToMetaVictims": {"n": {"Pods": [{"UID": 1}]}}}',
        b'{"Pod": {}, "NodeNameToVictims": {"n": {"Pods": [{}]}}}',
        b'{"Pod": {}, "NodeNameToVictims": {"n": {"NumPDBViolations": true}}}',
    ],
)
def test_malformed_bodies_get_400_with_a_json_error(server: ExtenderHTTPServer, raw: bytes) -> None:
    if b"Victims" in raw:
        verbs = ["/preempt"]
    elif b"Node" in raw:
        verbs = ["/filter", "/prioritize"]
    else:
        verbs = ["/filter", "/prioritize", "/preempt"]
    for verb in verbs:
        status, result = call(server, verb, raw=raw)
        assert status == 400 and isinstance(result["error"], str), (verb, raw[:40])
    assert server.internal_errors == 0


def test_oversized_and_chunked_bodies_are_refused(server: ExtenderHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/filter")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 400 and "exceeds" in json.loads(response.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/filter", iter([b'{"Pod": {}}']), {"Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 400
    conn.close()
    status, _ = call(server, "/healthz")  # still serving
    assert status == 200


def test_keep_alive_connection_serves_many_calls(server: ExtenderHTTPServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"Pod": pod(), "NodeNames": [f"n{i}" for i in range(100)]}).encode()
    for verb in ("/filter", "/prioritize", "/preempt") * 5:
        conn.request("POST", verb, body)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    conn.request("POST", "/filter", b"{bad")  # an error keeps the connection usable
    response = conn.getresponse()
    assert response.status == 400
    response.read()
    conn.request("POST", "/filter", body)
    assert conn.getresponse().status == 200
    conn.close()


def test_health_readiness_metrics_and_unknown_paths(server: ExtenderHTTPServer) -> None:
    assert call(server, "/healthz") == (200, "ok")
    assert call(server, "/readyz") == (200, "ok")
    call(server, "/filter", {"Pod": pod(), "NodeNames": ["n1"]})
    call(server, "/filter", raw=b"nope")
    status, text = call(server, "/metrics")
    assert status == 200
    assert 'dunnage_extender_request_seconds_count{verb="filter"} 2.0' in text
    assert 'dunnage_extender_requests_total{code="400",verb="filter"} 1.0' in text
    assert call(server, "/nope")[0] == 404
    assert call(server, "/bind", {"Pod": pod()})[0] == 404


def test_metrics_count_plans_and_execution() -> None:
    metrics = DunnageMetrics(CollectorRegistry())
    plan = Plan(
        status=PlanStatus.IMPROVED,
        assignments={},
        bindings=(),
        moves=(),
        evictions=(),
        placed_before={},
        placed_after={},
        proven_optimal=False,
        solve_seconds=0.4,
    )
    metrics.observe_plan(plan)
    metrics.count("evictions", 2)
    metrics.count("moves")
    metrics.count("placed", 3)
    value = metrics.registry.get_sample_value
    assert value("dunnage_plans_total", {"outcome": "improved"}) == 1
    assert value("dunnage_plan_solve_seconds_sum") == pytest.approx(0.4)
    assert value("dunnage_evictions_total") == 2
    assert value("dunnage_moves_total") == 1
    assert value("dunnage_pods_placed_by_fallback_total") == 3
    assert value("dunnage_plans_finished_total", {"phase": "Expired"}) == 0  # from the start
    metrics.finish_plan("Expired")
    assert value("dunnage_plans_finished_total", {"phase": "Expired"}) == 1
    with pytest.raises(ValueError):
        metrics.count("nonsense")
    with pytest.raises(ValueError):
        metrics.finish_plan("Certified")  # recorded, never executed


def test_cli_registers_extender_and_solver_serve() -> None:
    from dunnage.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["extender", "serve", "--port", "0", "--host", "127.0.0.1"])
    assert args.port == 0 and args.kubeconfig is None and callable(args.func)
    args = parser.parse_args(["solver", "serve", "--port", "0"])
    assert args.port == 0 and callable(args.func)


def test_concurrent_calls_while_plans_come_and_go(server: ExtenderHTTPServer) -> None:
    import threading

    body = json.dumps({"Pod": pod(), "NodeNames": ["n1", "n2", "n3"]}).encode()
    statuses: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(40):
            conn.request("POST", "/filter", body)
            response = conn.getresponse()
            result = json.loads(response.read())
            assert result["NodeNames"] in (["n1", "n2", "n3"], ["n2"])
            statuses.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(40):
        server.core.book.publish(orders())
        server.core.book.retire("plan-1")
    for t in threads:
        t.join()
    assert statuses == [200] * 160 and server.internal_errors == 0


def test_a_recorded_plan_steers_through_the_plan_book() -> None:
    """PackingPlan (as the fallback planner records it) -> steering orders -> extender answers."""
    from dunnage.cluster import snapshot_from_objects
    from dunnage.scheduler_extender.fallback import PlannerSettings, executing_from, plan_object
    from dunnage.solver.planner import solve

    def bound(name: str, gpus: int, node_name: str | None, prio: int) -> dict[str, Any]:
        obj = pod(name, gpus=gpus, owner=("ReplicaSet", f"rs-{name}"))
        obj["kind"] = "Pod"
        obj["spec"]["priority"] = prio
        if node_name:
            obj["spec"]["nodeName"] = node_name
        return obj

    snap = snapshot_from_objects(
        [
            node("a", 4),
            node("b", 4),
            bound("x", 2, "a", 0),
            bound("y", 2, "b", 0),
            bound("z", 2, "b", 0),
            bound("big", 4, None, 10),
        ]
    )
    plan = solve(snap, time_limit=2, workers=1)
    assert plan.status is PlanStatus.IMPROVED
    obj = plan_object("plan-x", plan, snap, PlannerSettings(plan_ttl_seconds=60))
    obj["status"] = {"evicted": []}
    book = PlanBook()
    book.publish(executing_from(obj).orders)

    core = ExtenderCore(book)
    target = plan.assignments["ml/big"]
    answer = json.loads(
        core.filter(json.dumps({"Pod": pod(), "NodeNames": ["a", "b"]}).encode())[0]
    )
    assert answer["NodeNames"] == [target]
    victims = {f"uid-{e.pod.split('/')[1]}" for e in plan.evictions if e.node == target}
    victims |= {f"uid-{m.pod.split('/')[1]}" for m in plan.moves if m.source == target}
    answer = json.loads(core.preempt(json.dumps({"Pod": pod()}).encode())[0])
    got = answer["NodeNameToMetaVictims"]
    assert victims, "the 4-GPU pod needs a node emptied"
    assert set(got) == {target}  # exactly the plan's victims, on the planned node only
    assert {p["UID"] for p in got[target]["Pods"]} == victims
    for move in plan.moves:  # the moved pod's replacement goes where the plan says
        name = move.pod.split("/")[1]
        replacement = pod(f"{name}-new", owner=("ReplicaSet", f"rs-{name}"))
        steer = book.steer(PodRef("ml", f"{name}-new", owner=f"ReplicaSet/rs-{name}"))
        assert steer is not None and steer.nodes == (move.target,)
        assert replacement["metadata"]["ownerReferences"][0]["name"] == f"rs-{name}"


def web_moves(quota: dict[str, int]) -> PlanBook:
    """A plan book whose plan moves pods of ReplicaSet web to n3 and n4, ``quota`` per node."""
    book = PlanBook()
    book.publish(
        SteeringOrders(
            plan="plan-1",
            expires_at=1e12,
            owners={"ml/ReplicaSet/web": ("n3", "n4")},
            nodes=frozenset({"n3", "n4"}),
            owner_quota={"ml/ReplicaSet/web": quota},
        )
    )
    return book


def kept_for_replacement(core: ExtenderCore, name: str, feasible: list[str]) -> list[str]:
    """The nodes the filter keeps for a new pod of web, given what kube-scheduler passed."""
    body = {"Pod": pod(name, owner=("ReplicaSet", "web")), "NodeNames": feasible}
    answer, _ = core.filter(json.dumps(body).encode())
    return json.loads(answer)["NodeNames"]


def test_owner_replacements_fill_each_target_only_up_to_the_plans_count() -> None:
    # The plan moves two pods of ReplicaSet web, one to n3 and one to n4; web already has one
    # pod on n3 that stays. Replacements are interchangeable: each is sent to the one target
    # furthest below the plan's count, counting those sent there and not yet seen bound.
    state = NodeState()
    staying = pod("web-a", owner=("ReplicaSet", "web"))
    staying["spec"]["nodeName"] = "n3"
    state.reset([node("n3", 8), node("n4", 8)], [staying])
    now = [0.0]
    core = ExtenderCore(web_moves({"n3": 2, "n4": 1}), state, clock=lambda: now[0])

    def kept(name: str) -> list[str]:
        return kept_for_replacement(core, name, ["n3", "n4"])

    assert kept("web-new1") == ["n3"]
    assert kept("web-new1") == ["n3"]  # filtered again (not placed yet): the same target
    # Back to back, before the node state has seen web-new1 bound: the other target.
    assert kept("web-new2") == ["n4"]
    assert kept("web-new3") == []  # both targets have their count
    landed = pod("web-new1", owner=("ReplicaSet", "web"))
    landed["spec"]["nodeName"] = "n3"
    state.apply("ADDED", "Pod", landed)
    assert kept("web-new3") == []
    state.apply("DELETED", "Pod", landed)
    assert kept("web-new3") == ["n3"]
    # A replacement sent somewhere and never seen bound stops counting after a while.
    now[0] += ASSUME_SECONDS + 1
    assert kept("web-new4") == ["n3"]


def test_a_replacement_goes_to_a_target_that_has_room_now() -> None:
    # Two targets, one replacement each. n3's victim is still terminating, so kube-scheduler's
    # own filters pass only n4: the first replacement goes there rather than wait for n3.
    state = NodeState()
    state.reset([node("n3", 8), node("n4", 8)], [])
    core = ExtenderCore(web_moves({"n3": 1, "n4": 1}), state)
    assert kept_for_replacement(core, "web-new1", ["n4"]) == ["n4"]
    # The second has only n3 left, which has no room yet: it waits, and nothing is assumed.
    assert kept_for_replacement(core, "web-new2", ["n4"]) == []
    assert kept_for_replacement(core, "web-new2", ["n3", "n4"]) == ["n3"]


def test_packing_plan_records_owner_quotas_for_move_targets() -> None:
    from dunnage.cluster import snapshot_from_objects
    from dunnage.scheduler_extender.fallback import PlannerSettings, owner_quotas, plan_object

    def gpu_pod(name: str, gpus: int, prio: int, on: str | None, owner: str | None) -> dict:
        spec: dict[str, Any] = {
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
            "priority": prio,
        }
        if on:
            spec["nodeName"] = on
        meta: dict[str, Any] = {"name": name, "namespace": "ml", "uid": f"uid-{name}"}
        if owner:
            meta["ownerReferences"] = [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "controller": True}
            ]
        return {"kind": "Pod", "metadata": meta, "spec": spec}

    snap = snapshot_from_objects(
        [
            {**node("a", 4), "metadata": {"name": "a"}},
            {**node("b", 4), "metadata": {"name": "b"}},
            gpu_pod("x", 2, 0, "a", "rs-x"),
            gpu_pod("y", 2, 0, "b", "rs-y"),
            gpu_pod("big", 4, 100, None, None),
        ]
    )
    from dunnage.solver.planner import solve

    plan = solve(snap, time_limit=2, pin_bare_pods=True)
    (move,) = plan.moves
    quotas = owner_quotas(plan, snap)
    moved_owner = "ml/ReplicaSet/rs-" + move.pod.split("/")[1]
    assert quotas == [{"owner": moved_owner, "node": move.target, "pods": 1}]
    assert plan_object("p", plan, snap, PlannerSettings())["spec"]["ownerQuotas"] == quotas


# Watch events on a 4-node cluster: nodes (re)sized or deleted, GPU and CPU pods bound, moved
# or deleted, and prioritize calls for some GPU requests in between.
_events = st.lists(
    st.one_of(
        st.tuples(st.just("node"), st.sampled_from("abcd"), st.integers(-1, 8)),  # -1: deleted
        st.tuples(st.just("pod"), st.integers(0, 5), st.sampled_from("abcd"), st.integers(-1, 3)),
        st.tuples(st.just("ask"), st.sampled_from([0, 1, 2, 4])),
    ),
    max_size=40,
)


@pytest.mark.parametrize("log_limit", [2, nodestate.CHANGE_LOG_LIMIT])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events)
def test_prioritize_scores_follow_every_change_like_a_fresh_state(
    log_limit: int, events: list[tuple[Any, ...]]
) -> None:
    """Scores kept node by node across watch events (and started over once the change log
    has dropped what a reader missed) equal those from a state built afresh."""
    nodes: dict[str, dict[str, Any]] = {n: node(n, 8) for n in "abcd"}
    pods: dict[int, dict[str, Any]] = {}
    with patch.object(nodestate, "CHANGE_LOG_LIMIT", log_limit):
        state = NodeState()
    state.reset(nodes.values(), [])
    core = ExtenderCore(PlanBook(), state)
    for event in events:
        if event[0] == "node":
            _, name, gpus = event
            if gpus < 0:
                state.apply("DELETED", "Node", nodes.pop(name, node(name, 0)))
            else:
                nodes[name] = node(name, gpus)
                state.apply("MODIFIED", "Node", nodes[name])
        elif event[0] == "pod":
            _, index, where, gpus = event
            if gpus < 0:
                gone = pods.pop(index, None)
                if gone is not None:
                    state.apply("DELETED", "Pod", gone)
            else:
                bound = pod(f"p{index}", gpus=gpus)
                bound["spec"]["nodeName"] = where
                pods[index] = bound
                state.apply("MODIFIED", "Pod", bound)
        else:
            fresh = NodeState()
            fresh.reset(nodes.values(), pods.values())
            gpus = fresh.gpus()
            request = float(event[1])
            names = list("abcde")
            body = json.dumps({"Pod": pod("asking", gpus=event[1]), "NodeNames": names})
            answer = json.loads(core.prioritize(body.encode())[0])
            expected = [best_fit_score(request, gpus.get(n)) for n in names]
            assert [h["Score"] for h in answer] == expected

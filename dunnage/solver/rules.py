"""Rules between pods: kube-scheduler's InterPodAffinity, PodTopologySpread and NodePorts.

The planner models the ones that say "at most k per node", exactly, as a resource of k units
on every node that each pod of the group asks one of:

- required pod anti-affinity on ``kubernetes.io/hostname`` whose term selects exactly the pods
  carrying it (the replicas of a workload kept one per node), when hostnames are unique;
- host ports: the pods asking for one port and protocol on every address (one per node);
- a DoNotSchedule topology spread constraint on ``kubernetes.io/hostname`` whose selector picks
  exactly the pods carrying it, when they are fewer than the nodes they may use: some node then
  keeps none whatever the plan, the skew's minimum is 0, and the rule is "at most maxSkew per
  node" (``minDomains`` changes nothing then; the loader merged ``matchLabelKeys`` into the
  selector, as kube-apiserver does).

Each modelled group is a resource in every pod's demand vector, so at most MAX_GROUPS are:
those with pending pods first, then the biggest; the pods of the others are held.

Every other rule is held: the pods under it stay where they are (running; they may still be
evicted for a higher-priority newcomer, as kube-scheduler's preemption would) or are left to
kube-scheduler (pending). The other pods a running pod's unmodelled anti-affinity selects
are kept out of its domain, as kube-scheduler keeps them (the running pod stays there, or
is evicted). A group already over its limit on some node (the rules are
IgnoredDuringExecution) is held too: its units cannot hold it.

But one pending pod at a time of a group under required anti-affinity or a DoNotSchedule
spread on any other topology (zones, racks; or hostnames past the groups modelled), whose
term selects exactly the pods carrying it, is planned: the group's other pods are held, so
what decides where kube-scheduler takes the pod changes only by evictions of the group's
running pods, and it may go to the nodes it is accepted on whatever those evictions:
anti-affinity, the domains where none of the group runs (evictions only free more); a spread,
the domains whose count, plus itself, is within maxSkew of the smallest count of the pods no
plan can evict (priority at least every other pending pod's that may preempt and may be
placed; minDomains and nodeInclusionPolicies honoured). The next pod of the group is planned
once that one runs. Pods under required pod affinity too, one per group of pods with the same
terms: on the nodes where, for each term, a pod matching every term runs in the term's domain
that no plan moves (held, or tied to its node) or evicts; failing such a pod, beside one no plan
evicts, which the plan then keeps where it runs (pinned: the highest whose domain admits the
pod); or, while no pod matching every term runs and none waits outside the group, anywhere
with the terms' keys if the pod matches its own terms (kube-scheduler's rule for the first pod
of a group). A pod under pod affinity with no such node is held.

So no plan puts a pod where kube-scheduler could refuse it; kube-scheduler checks an incoming
pod only against its own rules and the running pods' anti-affinity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from dunnage.cluster.model import Node, Pod, PodAffinityTerm, SpreadConstraint
from dunnage.cluster.predicates import (
    admission_key,
    admission_reason,
    node_affinity_reason,
    taint_reason,
)

HOSTNAME = "kubernetes.io/hostname"
PER_NODE = "dunnage.io/per-node"  # the modelled groups' resources: PER_NODE/<which rule>
_EVERY_ADDRESS = ("", "0.0.0.0", "::")
NOT_MODELLED = "the planner does not model this rule between pods"
UNANCHORED = "no pod its pod affinity surely selects runs, and may stay, on a node with its keys"
# Groups modelled at most: each is a resource in every pod's demand vector, which every
# step of the search reads; the others' pods are held.
MAX_GROUPS = 16
_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True)
class PerNode:
    """A modelled group: at most ``limit`` of ``pods`` (indexes) on any node, and none on a
    node without the ``needs`` label (a spread's topology key: kube-scheduler refuses those)."""

    limit: int
    pods: frozenset[int]
    needs: str | None = None

    def limit_on(self, node: Node) -> int:
        return self.limit if self.needs is None or self.needs in node.labels else 0


@dataclass(frozen=True)
class OneAtATime:
    """A pending pod planned alone of its group (module docstring): the nodes (indexes)
    kube-scheduler takes it on whatever a plan evicts, and its rules, named."""

    nodes: frozenset[int]
    rules: str


@dataclass(frozen=True)
class KeptOut:
    """The nodes (indexes) a pod may not go to while the running pods whose unmodelled
    anti-affinity selects it (``by``, indexes) run where they do: their domains."""

    nodes: frozenset[int]
    by: tuple[int, ...]


@dataclass(frozen=True)
class RulesBetweenPods:
    per_node: dict[str, PerNode]  # by the name of the resource standing for it
    held: dict[int, str]  # pod index -> the rules that hold it, named
    one_at_a_time: dict[int, OneAtATime] = field(default_factory=dict)  # by pod index
    kept_out: dict[int, KeptOut] = field(default_factory=dict)  # by pod index
    # Running pods a plan keeps where they are, neither moved nor evicted, by pod index: the
    # pending pods whose pod affinity counts on them (keys).
    pinned: dict[int, tuple[str, ...]] = field(default_factory=dict)


def _groups(ruled: Sequence[int], keys: Callable[[int], Iterable[_K]]) -> dict[_K, list[int]]:
    """The pods (indexes, ascending) under each rule ``keys`` names for them; a rule given
    twice by one pod counts once."""
    out: dict[_K, list[int]] = {}
    for pi in ruled:
        for key in keys(pi):
            group = out.setdefault(key, [])
            if not group or group[-1] != pi:
                group.append(pi)
    return out


def _over(pods: Sequence[Pod], group: Iterable[int], limit: int) -> bool:
    """Whether more than ``limit`` of the group's pods already run on one node."""
    counts: dict[str, int] = {}
    for pi in group:
        node = pods[pi].node_name
        if node is not None:
            counts[node] = counts.get(node, 0) + 1
            if counts[node] > limit:
                return True
    return False


class _Selection:
    """Which pods a term selects. A term reads only a pod's namespace and labels, which a
    workload's pods share: each (namespace, labels) is matched once, and a term's matchLabels
    narrow the candidates through an index (thousands of pods, hundreds of terms)."""

    def __init__(self, pods: Sequence[Pod]) -> None:
        self.pods = pods
        self.alike: dict[tuple[str, frozenset[tuple[str, str]]], list[int]] = {}
        for pi, pod in enumerate(pods):
            self.alike.setdefault((pod.namespace, frozenset(pod.labels.items())), []).append(pi)
        self.labelled: dict[tuple[str, str], list[tuple[str, frozenset[tuple[str, str]]]]] = {}
        for kind in self.alike:
            for label in kind[1]:
                self.labelled.setdefault(label, []).append(kind)

    def selected(self, term: PodAffinityTerm, owner: Pod) -> list[int]:
        if term.selector is None:
            return []
        wanted = term.selector.match_labels.items()
        kinds = (
            min((self.labelled.get(label, []) for label in wanted), key=len)
            if wanted
            else self.alike
        )
        out = [
            pi
            for kind in kinds
            if term.selects(owner, self.pods[self.alike[kind][0]])
            for pi in self.alike[kind]
        ]
        return sorted(out)


def rules_between_pods(pods: Sequence[Pod], nodes: Sequence[Node]) -> RulesBetweenPods:
    ruled = [
        pi
        for pi, p in enumerate(pods)
        if p.pod_affinity or p.pod_anti_affinity or p.spread_constraints or p.host_ports
    ]
    if not ruled:  # most clusters' GPU pods: one pass
        return RulesBetweenPods(per_node={}, held={})
    hostnames = [n.labels[HOSTNAME] for n in nodes if HOSTNAME in n.labels]
    unique_hostnames = len(set(hostnames)) == len(hostnames)
    selection = _Selection(pods)

    # Anti-affinity: pods of a workload share their terms, so each (term, namespace) once.
    owners = _groups(
        ruled, lambda pi: ((t, pods[pi].namespace) for t in pods[pi].pod_anti_affinity)
    )
    # Candidates: groups a per-node limit holds exactly, as (resource name, rule, group).
    candidates: list[tuple[str, object, PerNode]] = []
    for (term, namespace), group in owners.items():
        if term.topology_key != HOSTNAME or not unique_hostnames:
            continue
        selected = selection.selected(term, pods[group[0]])
        if selected == group and not _over(pods, group, 1):
            name = f"{PER_NODE}/anti-affinity-{len(candidates)}-{namespace}"
            candidates.append((name, (term, namespace), PerNode(1, frozenset(group))))

    # Spread over hostnames: the carriers are the selected pods, fewer than their nodes.
    spreaders = _groups(
        ruled, lambda pi: ((c, pods[pi].namespace) for c in pods[pi].spread_constraints)
    )
    usable: dict[tuple[object, ...], int] = {}
    for (c, namespace), group in spreaders.items():
        if c.topology_key != HOSTNAME or not unique_hostnames:
            continue
        spread = PodAffinityTerm(topology_key=HOSTNAME, selector=c.selector)  # own namespace
        if (
            selection.selected(spread, pods[group[0]]) == group
            and len(group) < _fewest_nodes(pods, group, nodes, usable)
            and not _over(pods, group, c.max_skew)
        ):
            name = f"{PER_NODE}/spread-{len(candidates)}-{namespace}"
            candidates.append(
                (name, (c, namespace), PerNode(c.max_skew, frozenset(group), HOSTNAME))
            )

    # Host ports: one group per port and protocol, if every pod asks for it on every address.
    users = _groups(ruled, lambda pi: ((h.port, h.protocol) for h in pods[pi].host_ports))
    one_address = {
        (h.port, h.protocol)
        for pi in ruled
        for h in pods[pi].host_ports
        if h.host_ip not in _EVERY_ADDRESS
    }
    for (number, protocol), group in users.items():
        if (number, protocol) not in one_address and not _over(pods, group, 1):
            name = f"{PER_NODE}/host-port-{protocol}-{number}"
            candidates.append((name, (number, protocol), PerNode(1, frozenset(group))))

    # Each modelled group is a resource every pod carries: a few, those with pods to place
    # first (highest priority first), then the biggest (each frees the most pods to move).
    def rank(candidate: tuple[str, object, PerNode]) -> tuple[bool, int, int]:
        group = candidate[2].pods
        waiting = [pods[pi].priority for pi in group if pods[pi].node_name is None]
        return (not waiting, -max(waiting, default=0), -len(group))

    chosen = sorted(candidates, key=rank)[:MAX_GROUPS]
    per_node = {name: group for name, _, group in chosen}
    modelled = {rule for _, rule, _ in chosen}

    held: dict[int, str] = {}
    for pi in ruled:
        pod = pods[pi]
        rules = []
        if pod.pod_affinity:
            rules.append("required pod affinity")
        if any((t, pod.namespace) not in modelled for t in pod.pod_anti_affinity):
            rules.append("required pod anti-affinity")
        if any((c, pod.namespace) not in modelled for c in pod.spread_constraints):
            rules.append("a topology spread constraint (DoNotSchedule)")
        unmodelled = [h for h in pod.host_ports if (h.port, h.protocol) not in modelled]
        if unmodelled:
            rules.append("host port " + ", ".join(f"{h.port}/{h.protocol}" for h in unmodelled))
        if rules:
            held[pi] = f"{', '.join(rules)} ({NOT_MODELLED})"
    # Unmodelled groups whose term selects exactly their carriers: their pods may be
    # planned one at a time. Others' running pods (held: they stay, or are evicted) keep the
    # other pods their term selects out of their domains, as kube-scheduler does.
    domains = _Domains(nodes)
    index = domains.index
    exact: dict[tuple[object, str], list[int]] = {}
    # Per selected pod, each term's (domains, running pods): shared by the pods a term
    # selects (thousands, where a term selects every GPU pod).
    kept: dict[int, list[tuple[frozenset[int], tuple[int, ...]]]] = {}
    unknown: set[int] = set()  # selected by a pod on a node the snapshot lacks
    for (term, namespace), group in owners.items():
        if (term, namespace) in modelled:
            continue
        selected = selection.selected(term, pods[group[0]])
        if selected == group:
            exact[(term, namespace)] = group
            continue  # it selects its carriers alone, which their own rule covers
        key = term.topology_key
        running = [q for q in group if pods[q].node_name in index]
        elsewhere = next(
            (q for q in group if pods[q].node_name is not None and pods[q].node_name not in index),
            None,
        )
        if elsewhere is not None:  # on a node the snapshot lacks: its domain is unknown
            why = f"the required pod anti-affinity of {pods[elsewhere].key} ({NOT_MODELLED})"
            for pi in selected:
                held.setdefault(pi, why)
                unknown.add(pi)
        off = frozenset(domains.around(key, (index[str(pods[q].node_name)] for q in running)))
        if off:
            for pi in selected:
                kept.setdefault(pi, []).append((off, tuple(running)))
    for (c, namespace), group in spreaders.items():
        spread = PodAffinityTerm(topology_key=c.topology_key, selector=c.selector)
        if (c, namespace) not in modelled and selection.selected(spread, pods[group[0]]) == group:
            exact[(c, namespace)] = group
    kept_out: dict[int, KeptOut] = {}
    for pi, terms in kept.items():
        if len(terms) == 1:
            kept_out[pi] = KeptOut(*terms[0])
        else:
            nodes_off = frozenset().union(*(off for off, _ in terms))
            kept_out[pi] = KeptOut(nodes_off, tuple(sorted({q for _, by in terms for q in by})))
    anchoring: dict[int, list[str]] = {}
    one_at_a_time = _one_at_a_time(
        pods, held, exact, kept_out, unknown, modelled, domains, selection, anchoring
    )
    for pi in one_at_a_time:
        del held[pi]
    pinned = {qi: tuple(keys) for qi, keys in anchoring.items()}
    return RulesBetweenPods(
        per_node=per_node,
        held=held,
        one_at_a_time=one_at_a_time,
        kept_out=kept_out,
        pinned=pinned,
    )


def _one_at_a_time(
    pods: Sequence[Pod],
    held: dict[int, str],
    exact: dict[tuple[object, str], list[int]],
    kept_out: dict[int, KeptOut],
    unknown: set[int],
    modelled: set[object],
    domains: _Domains,
    selection: _Selection,
    pinned: dict[int, list[str]],
) -> dict[int, OneAtATime]:
    """The pending pods planned alone of their groups, highest priority first (module
    docstring), with the nodes kube-scheduler takes each on. ``exact``: the unmodelled
    groups whose term selects exactly their carriers (indexes); ``kept_out``: the domains
    other running pods' anti-affinity keeps pods out of; ``unknown``: the pods such a pod on
    a node the snapshot lacks selects (held). Fills ``pinned``: the running pods a plan must
    keep where they run, with the pods whose pod affinity counts on them (keys)."""
    chosen: dict[int, list[tuple[object, str]]] = {}
    taken: dict[tuple[object, ...], int] = {}  # rule -> the pod planned under it
    together: dict[int, frozenset[int]] = {}  # by pod: the nodes its pod affinity allows
    # Pods alike (terms, namespace, labels: a workload's replicas) are allowed alike.
    allowed_alike: dict[tuple[object, ...], tuple[frozenset[int], int | None]] = {}
    # Every pending pod that may preempt, held or not: pods below it may be evicted.
    top_any = top_preemptor(pods)
    for pi in sorted(held, key=lambda pi: (-pods[pi].priority, pi)):
        pod = pods[pi]
        if pod.node_name is not None or pi in unknown:
            continue
        if any((h.port, h.protocol) not in modelled for h in pod.host_ports):
            continue
        rules = [
            (rule, pod.namespace)
            for rule in (*pod.pod_anti_affinity, *pod.spread_constraints)
            if (rule, pod.namespace) not in modelled
        ]
        if not all(r in exact for r in rules):
            continue
        # Pods under the same pod affinity terms are a group too (the first of a group may
        # go anywhere, the next only beside it).
        keys: list[tuple[object, ...]] = [*rules]
        keys += [("affinity", t, pod.namespace) for t in pod.pod_affinity]
        if not keys:
            continue
        first = next((taken[k] for k in keys if k in taken), None)
        if first is None and pod.pod_affinity:
            alike = (pod.pod_affinity, pod.namespace, frozenset(pod.labels.items()))
            if alike not in allowed_alike:
                allowed_alike[alike] = _together(pi, pods, held, selection, domains, top_any)
            allowed, anchor = allowed_alike[alike]
            if not allowed:
                names = _rules_named(held[pi])
                held[pi] = f"{names} ({UNANCHORED})"
                continue
            together[pi] = allowed
            if anchor is not None:
                pinned.setdefault(anchor, []).append(pod.key)
        if first is None:
            chosen[pi] = rules
            taken.update(dict.fromkeys(keys, pi))
        else:  # its turn comes once that one runs
            names = _rules_named(held[pi])
            held[pi] = f"{names} (one pod of the group at a time: {pods[first].key} first)"
    if not chosen:
        return {}
    index = domains.index
    # The pending pods a plan may place that may preempt, highest first: a running pod
    # lower than one of them may be evicted (the pod planned alone evicts only on its own
    # node, which lowers only its own domain's count: not counted against itself).
    evictors = sorted(
        (
            (p.priority, qi)
            for qi, p in enumerate(pods)
            if p.node_name is None and p.may_preempt and (qi not in held or qi in chosen)
        ),
        reverse=True,
    )

    out: dict[int, OneAtATime] = {}
    for pi, rules in chosen.items():
        pod = pods[pi]
        top = next((priority for priority, qi in evictors if qi != pi), None)

        def stays(q: Pod, top: int | None = top) -> bool:
            """Whether no plan takes ``q`` away: not evictable, not leaving already."""
            return not evictable(q, top) and not q.terminating

        allowed = domains.every
        for rule, namespace in rules:
            running = [
                (q, index[str(q.node_name)])
                for q in (pods[i] for i in exact[(rule, namespace)])
                if q.node_name in index
            ]
            if isinstance(rule, SpreadConstraint):
                allowed = allowed & _spread_allows(pod, rule, running, stays, domains)
            else:
                assert isinstance(rule, PodAffinityTerm)
                # Anti-affinity: no domain where one of them runs.
                allowed = allowed - domains.around(rule.topology_key, (ni for _, ni in running))
        if pi in together:
            allowed = allowed & together[pi]
        if pi in kept_out:
            allowed = allowed - kept_out[pi].nodes
        names = _rules_named(held[pi])
        out[pi] = OneAtATime(frozenset(allowed), names)
    return out


class _Domains:
    """The nodes by topology key and value, and the nodes with every key of a set, indexed
    once per snapshot (a pod planned alone per group: hundreds on big clusters)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = nodes
        self.index = {n.name: ni for ni, n in enumerate(nodes)}
        self.every = frozenset(range(len(nodes)))
        self._by_value: dict[str, dict[str, set[int]]] = {}
        self._with: dict[frozenset[str], frozenset[int]] = {}
        self._counted: dict[tuple[object, ...], frozenset[int]] = {}

    def by_value(self, key: str) -> dict[str, set[int]]:
        if key not in self._by_value:
            out: dict[str, set[int]] = {}
            for ni, n in enumerate(self.nodes):
                if key in n.labels:
                    out.setdefault(n.labels[key], set()).add(ni)
            self._by_value[key] = out
        return self._by_value[key]

    def within(self, key: str, values: Iterable[str]) -> set[int]:
        """The nodes whose ``key`` has one of ``values``."""
        by_value = self.by_value(key)
        return {ni for v in values for ni in by_value.get(v, ())}

    def around(self, key: str, nodes: Iterable[int]) -> set[int]:
        """The nodes in the ``key`` domain of any of ``nodes`` (a node without the key has
        no domain: nothing around it)."""
        labels = (self.nodes[ni].labels for ni in nodes)
        return self.within(key, {lb[key] for lb in labels if key in lb})

    def with_keys(self, keys: frozenset[str]) -> frozenset[int]:
        if keys not in self._with:
            self._with[keys] = frozenset(
                ni for ni, n in enumerate(self.nodes) if keys <= n.labels.keys()
            )
        return self._with[keys]

    def counted(self, pod: Pod, keys: frozenset[str], rule: SpreadConstraint) -> frozenset[int]:
        """The nodes ``rule``, a spread of ``pod``, counts: with every key of its spreads,
        admitted by its nodeSelector and required node affinity (nodeAffinityPolicy Honor)
        and tolerated (nodeTaintsPolicy Honor)."""
        honour_affinity = rule.node_affinity_policy == "Honor"
        honour_taints = rule.node_taints_policy == "Honor"
        shape = (
            keys,
            (tuple(sorted(pod.node_selector.items())), pod.affinity_terms)
            if honour_affinity
            else None,
            pod.tolerations if honour_taints else None,
        )
        if shape not in self._counted:
            self._counted[shape] = frozenset(
                ni
                for ni in self.with_keys(keys)
                if not (honour_affinity and node_affinity_reason(pod, self.nodes[ni]))
                and not (honour_taints and taint_reason(pod, self.nodes[ni]))
            )
        return self._counted[shape]


def _spread_allows(
    pod: Pod,
    rule: SpreadConstraint,
    running: Sequence[tuple[Pod, int]],
    stays: Callable[[Pod], bool],
    domains: _Domains,
) -> set[int]:
    """The nodes where ``pod`` keeps ``rule`` (a spread over the ``running`` pods it selects,
    with their nodes, and itself) whatever a plan evicts: its domain's count now, plus one,
    at most maxSkew above the smallest count of the pods that stay, over the domains
    kube-scheduler counts (:meth:`_Domains.counted`). Pods being deleted count nowhere, as
    kube-scheduler skips them."""
    keys = frozenset(c.topology_key for c in pod.spread_constraints)
    counted = domains.counted(pod, keys, rule)
    key = rule.topology_key
    values = {domains.nodes[ni].labels[key] for ni in counted}
    now: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for q, ni in running:
        if ni in counted and not q.terminating:
            now[domains.nodes[ni].labels[key]] += 1
            if stays(q):
                kept[domains.nodes[ni].labels[key]] += 1
    floor = min((kept[v] for v in values), default=0)
    if rule.min_domains is not None and len(values) < rule.min_domains:
        floor = 0
    ok = [v for v in domains.by_value(key) if now[v] + 1 - floor <= rule.max_skew]
    return domains.within(key, ok) & domains.with_keys(keys)


def _together(
    pi: int,
    pods: Sequence[Pod],
    held: dict[int, str],
    selection: _Selection,
    domains: _Domains,
    top: int | None,
) -> tuple[frozenset[int], int | None]:
    """The nodes where kube-scheduler takes pending ``pods[pi]`` under its required pod
    affinity whatever a plan does, and the running pod the plan must then keep where it runs
    (None: none). Those with each term's key where, for each term, a pod matching every term
    runs in the term's domain and stays there: not being deleted, not evictable for a
    pending pod of priority ``top`` (the pod's own included), and never moved (held, or tied
    to its node; else one such pod is pinned: the one of highest priority whose domain admits
    the pod). Or, while no pod matching every term runs or waits outside the pod's group,
    every node with the keys, if it matches its own terms (the first of its group, which
    kube-scheduler lets go anywhere)."""
    pod = pods[pi]
    terms = pod.pod_affinity
    keys = frozenset(t.topology_key for t in terms)
    matching = set(selection.selected(terms[0], pod)).intersection(
        *(selection.selected(t, pod) for t in terms[1:])
    )  # over-approximated: what may count against the first-pod rule
    first = all(t.surely_selects(pod, pod) for t in terms) and all(
        pods[qi].node_name is None
        and pods[qi].namespace == pod.namespace
        and set(terms) <= set(pods[qi].pod_affinity)  # a group-mate: it waits for this one
        for qi in matching
        if qi != pi
    )
    if first:
        return domains.with_keys(keys), None
    index = domains.index
    staying = sorted(
        (
            qi
            for qi in matching
            if pods[qi].node_name in index
            and not pods[qi].terminating
            and not evictable(pods[qi], top)
            and all(t.surely_selects(pod, pods[qi]) for t in terms)
        ),
        key=lambda qi: (-pods[qi].priority, qi),  # the first that will do is pinned
    )

    def beside(anchors: Iterable[int]) -> set[int]:
        nodes = [index[str(pods[qi].node_name)] for qi in anchors]
        allowed = set(domains.with_keys(keys))
        for t in terms:
            allowed &= domains.around(t.topology_key, nodes)
        return allowed

    fixed = beside(qi for qi in staying if qi in held or pods[qi].tied_to_node)
    if fixed:
        return frozenset(fixed), None
    tried: set[tuple[str | None, ...]] = set()  # the anchors' domains, by their key values
    for qi in staying:
        labels = domains.nodes[index[str(pods[qi].node_name)]].labels
        domain = tuple(labels.get(k) for k in sorted(keys))
        if domain in tried:
            continue
        tried.add(domain)
        allowed = beside([qi])
        if any(admission_reason(pod, domains.nodes[ni]) is None for ni in allowed):
            return frozenset(allowed), qi
    return frozenset(), None


def _rules_named(reason: str) -> str:
    """A held pod's rules, named, without saying the planner does not model them."""
    return reason.removesuffix(f" ({NOT_MODELLED})")


def top_preemptor(pods: Sequence[Pod]) -> int | None:
    """The highest priority of a pending pod that may preempt (None: none may): running pods
    below it may be evicted by a plan (:func:`evictable`)."""
    return max((p.priority for p in pods if p.node_name is None and p.may_preempt), default=None)


def evictable(pod: Pod, top: int | None) -> bool:
    """Whether a plan may evict running ``pod`` for a pending one of priority ``top`` (the
    highest that may preempt; None: none may): only for a strictly higher one, and never a
    static pod's mirror or a DaemonSet's pod."""
    return top is not None and pod.priority < top and not pod.tied_to_node


def _fewest_nodes(
    pods: Sequence[Pod],
    group: Sequence[int],
    nodes: Sequence[Node],
    cache: dict[tuple[object, ...], int],
) -> int:
    """The fewest nodes with a hostname that admit a pod of the group (selector, affinity,
    taints, schedulable): no more than the domains its spread counts, which are the nodes its
    selector and affinity admit (and, if told, its tolerations)."""
    fewest = len(nodes)
    for pi in group:
        pod = pods[pi]
        key = admission_key(pod)
        if key not in cache:
            cache[key] = sum(
                1 for n in nodes if HOSTNAME in n.labels and admission_reason(pod, n) is None
            )
        fewest = min(fewest, cache[key])
    return fewest

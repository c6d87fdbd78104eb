"""ClusterNetworkPolicy semantics and validation, as network-policy-api v0.3.0
documents them (docs/clusternetworkpolicy/): the reference the renderer will
be held to. Each case names the behaviour it pins."""

from __future__ import annotations

import pytest

from builders import cnp, namespace, pod, policy, rule, state
from dataplane import Dataplane
from rules.evaluate import tiered_verdict
from rules.load import InvalidObject, parse_cluster_network_policy
from rules.model import L4Protocol

CLUSTER = [
    namespace("tenant-a", tenant="a"),
    namespace("tenant-b", tenant="b"),
    namespace("kube-system"),
    pod("tenant-a/web", "10.0.1.1", labels={"app": "web"}),
    pod("tenant-a/db", "10.0.1.2", labels={"app": "db"}, ports=[("sql", 5432), ("dns", 53, "UDP")]),
    pod("tenant-b/web", "10.0.2.1", node="n2", labels={"app": "web"}),
    pod("kube-system/dns", "10.0.1.9", labels={"app": "dns"}),
    pod("tenant-a/host", "192.168.0.5", labels={"app": "web"}, hostNetwork=True),  # on n1, so at n1's address
    *(
        {
            "kind": "Node",
            "metadata": {"name": name, "labels": {"zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }
        for name, zone, address in (("n1", "a", "192.168.0.5"), ("n2", "b", "192.168.0.6"))
    ),
]
ZONE_A_NODES = {"nodes": {"matchLabels": {"zone": "a"}}}
WEB = {"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}
NP_WEB_EGRESS_DENY = policy("tenant-a/web-no-egress", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]})


ALL_NS = {"namespaces": {}}
TENANT_A = {"namespaces": {"matchLabels": {"tenant": "a"}}}
TENANT_B = {"namespaces": {"matchLabels": {"tenant": "b"}}}
DB = {"pods": {"namespaceSelector": {"matchLabels": {"tenant": "a"}}, "podSelector": {"matchLabels": {"app": "db"}}}}
NP_DENY_DB = policy("tenant-a/deny-db", {"podSelector": {"matchLabels": {"app": "db"}}})
NP_ALLOW_DB_FROM_B = policy(
    "tenant-a/db-from-b",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tenant": "b"}}}]}],
    },
)


def decide(policies: list[dict], nps: list[dict], src: str, dst: str, port: int = 80, protocol: str = "TCP"):
    cluster = state(*CLUSTER, *nps)
    cluster = cluster.with_objects(cluster_policies=[parse_cluster_network_policy(p) for p in policies])
    src_pod = next(p for p in cluster.pods if p.key == src)
    dst_pod = next(p for p in cluster.pods if p.key == dst)
    decision = tiered_verdict(cluster, src_pod, dst_pod, port, protocol)
    # and the rendered rules of every node on the path decide alike (traced, without a kernel)
    assert Dataplane(cluster).allows(src_pod, dst_pod, port, L4Protocol(protocol)) is decision[0], decision
    return decision


SQL_ONLY = cnp(
    "named",
    "Admin",
    1,
    DB,
    ingress=[rule("Accept", [ALL_NS], protocols=[{"destinationNamedPort": "sql"}]), rule("Deny", [ALL_NS])],
)

CASES = {
    "nothing at all: allowed by default": ([], [], "tenant-b/web", "tenant-a/db", True, "default"),
    "an admin Deny overrides a NetworkPolicy that allows": (
        [cnp("isolate", "Admin", 10, DB, ingress=[rule("Deny", [TENANT_B], "no-b")])],
        [NP_ALLOW_DB_FROM_B],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Admin",
    ),
    "an admin Accept overrides a NetworkPolicy that isolates": (
        [cnp("let-b", "Admin", 10, DB, ingress=[rule("Accept", [TENANT_B])])],
        [NP_DENY_DB],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "Admin",
    ),
    "an admin Pass hands the decision to NetworkPolicy, which denies": (
        [
            cnp("pass", "Admin", 10, DB, ingress=[rule("Pass", [ALL_NS])]),
            cnp("deny", "Admin", 20, DB, ingress=[rule("Accept", [ALL_NS])]),
        ],
        [NP_DENY_DB],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "NetworkPolicy",
    ),
    "an admin Pass with no NetworkPolicy goes on to the baseline tier": (
        [
            cnp("pass", "Admin", 10, DB, ingress=[rule("Pass", [ALL_NS])]),
            cnp("base", "Baseline", 10, DB, ingress=[rule("Deny", [ALL_NS])]),
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Baseline",
    ),
    "a NetworkPolicy that isolates decides before the baseline tier": (
        [cnp("base", "Baseline", 10, DB, ingress=[rule("Deny", [ALL_NS])])],
        [NP_ALLOW_DB_FROM_B],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "NetworkPolicy",
    ),
    "a baseline Deny applies where no NetworkPolicy isolates": (
        [cnp("base", "Baseline", 10, DB, ingress=[rule("Deny", [TENANT_B])])],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Baseline",
    ),
    "a named port matches the destination's container port of that name": (
        [SQL_ONLY],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "Admin",
        5432,
    ),
    "a named port does not match another port of the destination": (
        [SQL_ONLY],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Admin",
        80,
    ),
    "a named port matches with the protocol the container port has": (
        [
            cnp(
                "named",
                "Admin",
                1,
                {"namespaces": {}},
                egress=[rule("Deny", [ALL_NS], protocols=[{"destinationNamedPort": "dns"}], field="to")],
            )
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Admin",
        53,
        "UDP",
    ),
    "a nodes peer matches a node's addresses by its labels": (
        [cnp("no-zone-a", "Admin", 1, WEB, egress=[rule("Deny", [ZONE_A_NODES], field="to")])],
        [],
        "tenant-b/web",
        "tenant-a/host",
        False,
        "Admin",
    ),
    "a nodes peer does not match a node of other labels": (
        [cnp("no-zone-b", "Admin", 1, WEB, egress=[rule("Deny", [{"nodes": {"matchLabels": {"zone": "b"}}}], field="to")])],
        [],
        "tenant-b/web",
        "tenant-a/host",
        True,
        "default",
    ),
    "a networks peer matches node addresses too": (
        [cnp("no-192", "Admin", 1, WEB, egress=[rule("Deny", [{"networks": ["192.168.0.0/24"]}], field="to")])],
        [],
        "tenant-b/web",
        "tenant-a/host",
        False,
        "Admin",
    ),
    "a pod's traffic to its own node meets its admin egress tier": (
        [cnp("no-zone-a", "Admin", 1, WEB, egress=[rule("Deny", [ZONE_A_NODES], field="to")])],
        [],
        "tenant-a/web",
        "tenant-a/host",
        False,
        "Admin",
    ),
    "NetworkPolicy always allows a pod's traffic to its own node: the baseline is not reached": (
        [cnp("base", "Baseline", 1, WEB, egress=[rule("Deny", [ZONE_A_NODES], field="to")])],
        [NP_WEB_EGRESS_DENY],
        "tenant-a/web",
        "tenant-a/host",
        True,
        "NetworkPolicy",
    ),
    "with no NetworkPolicy, a baseline Deny stops a pod's traffic to its own node": (
        [cnp("base", "Baseline", 1, WEB, egress=[rule("Deny", [ZONE_A_NODES], field="to")])],
        [],
        "tenant-a/web",
        "tenant-a/host",
        False,
        "Baseline",
    ),
    "a baseline Pass goes on to the default: allowed": (
        [
            cnp("base", "Baseline", 10, DB, ingress=[rule("Pass", [ALL_NS])]),
            cnp("deny", "Baseline", 20, DB, ingress=[rule("Deny", [ALL_NS])]),
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "default",
    ),
    "a subject with no rules for a direction is not isolated by it": (
        [cnp("egress-only", "Admin", 10, DB, egress=[rule("Deny", [ALL_NS], field="to")])],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "default",
    ),
    "a lower priority value is evaluated first": (
        [
            cnp("b-deny", "Admin", 20, DB, ingress=[rule("Deny", [ALL_NS])]),
            cnp("a-accept", "Admin", 10, DB, ingress=[rule("Accept", [ALL_NS])]),
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "Admin",
    ),
    "at equal priority the order is fixed, by name": (
        [
            cnp("z-accept", "Admin", 10, DB, ingress=[rule("Accept", [ALL_NS])]),
            cnp("a-deny", "Admin", 10, DB, ingress=[rule("Deny", [ALL_NS])]),
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Admin",
    ),
    "at equal priority a policy's rules never apply to another's subject": (
        [
            cnp(
                "a-deny-web",
                "Admin",
                10,
                {"pods": {"podSelector": {"matchLabels": {"app": "web"}}}},
                ingress=[rule("Deny", [ALL_NS])],
            ),
            cnp("b-accept-db", "Admin", 10, DB, ingress=[rule("Accept", [ALL_NS])]),
        ],
        [NP_DENY_DB],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "Admin",
    ),
    "within a policy the first matching rule wins": (
        [cnp("order", "Admin", 10, DB, ingress=[rule("Accept", [TENANT_B]), rule("Deny", [ALL_NS])])],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "Admin",
    ),
    "a rule with protocols matches only those ports": (
        [
            cnp(
                "ports",
                "Admin",
                10,
                DB,
                ingress=[
                    rule("Deny", [ALL_NS], protocols=[{"tcp": {"destinationPort": {"range": {"start": 5432, "end": 5433}}}}])
                ],
            )
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        True,
        "default",
    ),
    "a networks peer matches pod addresses too": (
        [
            cnp(
                "cidr",
                "Admin",
                10,
                {"pods": {"podSelector": {"matchLabels": {"app": "web"}}}},
                egress=[rule("Deny", [{"networks": ["10.0.1.0/24"]}], field="to")],
            )
        ],
        [],
        "tenant-b/web",
        "tenant-a/db",
        False,
        "Admin",
    ),
    "host-network pods are never a peer of a pods or namespaces rule": (
        [cnp("no-a", "Admin", 10, {"namespaces": {"matchLabels": {"tenant": "b"}}}, ingress=[rule("Deny", [TENANT_A])])],
        [],
        "tenant-a/host",
        "tenant-b/web",
        True,
        "default",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_tiers_decide_as_the_api_documents(name) -> None:
    policies, nps, src, dst, allowed, tier, *flow = CASES[name]
    ok, egress, ingress = decide(policies, nps, src, dst, *flow)
    deciding = next((d for d in (ingress, egress) if d is not None and (not d.allowed or d.tier != "default")), ingress or egress)
    assert ok is allowed, (egress, ingress)
    assert deciding.tier == tier, (egress, ingress)


def test_an_egress_accept_does_not_bypass_the_destination_s_ingress() -> None:
    ok, egress, ingress = decide(
        [
            cnp(
                "out",
                "Admin",
                10,
                {"pods": {"podSelector": {"matchLabels": {"app": "web"}}}},
                egress=[rule("Accept", [ALL_NS], field="to")],
            )
        ],
        [NP_DENY_DB],
        "tenant-b/web",
        "tenant-a/db",
    )
    assert not ok and egress.allowed and egress.tier == "Admin" and not ingress.allowed and ingress.tier == "NetworkPolicy"


def test_the_deciding_rule_is_named_with_its_policy_direction_index_and_name() -> None:
    _, _, ingress = decide(
        [cnp("tenant-isolation", "Admin", 5, DB, ingress=[rule("Deny", [TENANT_B], "deny-other-tenants")])],
        [],
        "tenant-b/web",
        "tenant-a/db",
    )
    assert ingress.decided_by == "cnp/tenant-isolation ingress[0] (deny-other-tenants) Deny"


def test_a_pass_is_recorded_on_the_way() -> None:
    _, _, ingress = decide(
        [cnp("p", "Admin", 1, DB, ingress=[rule("Pass", [ALL_NS], "to-np")])], [NP_DENY_DB], "tenant-b/web", "tenant-a/db"
    )
    assert ingress.passed == ("cnp/p ingress[0] (to-np)",) and ingress.decided_by.startswith(
        "isolated by NetworkPolicy tenant-a/deny-db"
    )


VALID = cnp("v", "Admin", 0, ALL_NS, egress=[rule("Deny", [{"networks": ["10.0.0.0/24", "2001:db8::/32"]}], field="to")])


# What the CRD's schema and CEL rules reject (the API server agrees: test_kubernetes.py),
# then what only the loader checks: label selector rules the CRD leaves to its users.
INVALID_CLUSTER_POLICIES = [
    ({"tier": "Middle"}, "spec.tier: Unsupported value: 'Middle'"),
    ({"priority": 1001}, "spec.priority: must be an integer from 0 to 1000"),
    ({"priority": -1}, "spec.priority: must be an integer from 0 to 1000"),
    ({"subject": {}}, "spec.subject: must have exactly one of namespaces, pods"),
    ({"subject": {"namespaces": {}, "pods": {"podSelector": {}}}}, "spec.subject: must have exactly one of namespaces, pods"),
    ({"subject": {"pods": {}}}, "spec.subject.pods.podSelector: Required value"),
    ({"ingress": [rule("Allow", [ALL_NS])]}, "spec.ingress[0].action: Unsupported value: 'Allow'"),
    ({"ingress": [rule("Deny", [])]}, "spec.ingress[0].from: must have at least 1 item"),
    (
        {"ingress": [rule("Deny", [{"networks": ["10.0.0.0/8"]}])]},
        "spec.ingress[0].from[0]: must have exactly one of namespaces, pods",
    ),
    (
        {"egress": [rule("Deny", [{"networks": ["10.1.2.3/8"]}], field="to")]},
        "spec.egress[0].to[0].networks[0]: Invalid CIDR format provided",
    ),
    ({"egress": [rule("Deny", [{"networks": ["10.0.0.300/24"]}], field="to")]}, "networks[0]: Invalid CIDR format provided"),
    (
        {"egress": [rule("Deny", [{"networks": ["::ffff:10.0.0.0/104"]}], field="to")]},
        "networks[0]: Invalid CIDR format provided",
    ),
    ({"egress": [rule("Deny", [{"networks": ["10.0.0.1"]}], field="to")]}, "networks[0]: Invalid CIDR format provided"),
    (
        {"egress": [rule("Deny", [{"networks": ["10.0.0.0/8", "10.0.0.0/8"]}], field="to")]},
        "networks: must not contain duplicates",
    ),
    (
        {"egress": [rule("Deny", [{"domainNames": ["example.com"]}], field="to")]},
        "spec.egress[0].to[0].domainNames: unknown field",
    ),
    ({"ingress": [rule("Deny", [ALL_NS], protocols=[{"tcp": {}}])]}, "protocols[0].tcp: must have at least 1 property"),
    (
        {"ingress": [rule("Deny", [ALL_NS], protocols=[{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}])]},
        "destinationPort.range: Start port must be less than End port",
    ),
    (
        {"ingress": [rule("Deny", [ALL_NS], protocols=[{"tcp": {"destinationPort": {"number": 0}}}])]},
        "destinationPort.number: must be an integer from 1 to 65535",
    ),
    ({"ingress": [rule("Deny", [ALL_NS], protocols=[])]}, "spec.ingress[0].protocols: must have at least 1 item"),
    (
        {"ingress": [rule("Deny", [ALL_NS], name="n" * 101)]},
        "spec.ingress[0].name: must be a string of at most 100 characters",
    ),
    ({"ingress": [rule("Deny", [ALL_NS])] * 26}, "spec.ingress: must have at most 25 items"),
]
INVALID_SELECTORS = [
    ({"subject": {"namespaces": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}, "spec.subject.namespaces"),
]


def with_change(change: dict) -> dict:
    return {**VALID, "spec": {**VALID["spec"], **change}}


@pytest.mark.parametrize("change, message", INVALID_CLUSTER_POLICIES + INVALID_SELECTORS)
def test_what_the_crd_rejects_is_rejected_naming_the_field(change, message) -> None:
    with pytest.raises(InvalidObject) as e:
        parse_cluster_network_policy(with_change(change))
    assert str(e.value).startswith("cnp/v: ") and message in str(e.value), str(e.value)


def test_a_valid_policy_parses() -> None:
    p = parse_cluster_network_policy(VALID)
    assert (
        p.name == "v" and p.priority == 0 and [str(n) for n in p.egress[0].peers[0].networks] == ["10.0.0.0/24", "2001:db8::/32"]
    )

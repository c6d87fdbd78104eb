"""Loading API objects and YAML: what the API server would reject is rejected
with the object's name and the field path; what it accepts loads faithfully."""

from __future__ import annotations

import textwrap

import pytest

from builders import policy
from enforcer.sources.manifests import load_state
from rules.load import InvalidObject, parse_network_policy, state_from_objects
from rules.model import Direction, NAMESPACE_NAME_LABEL, L4Protocol

INVALID_POLICIES = [
    (
        "endPort below port",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"port": 90, "endPort": 80}]}]},
        "x/deny-all: spec.ingress[0].ports[1].endPort: must not be less than port",
    ),
    (
        "endPort with a named port",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        "spec.ingress[0].ports[0].endPort: may not be specified when `port` is non-numeric",
    ),
    (
        "endPort without port",
        {"podSelector": {}, "egress": [{"ports": [{"endPort": 90}]}]},
        "spec.egress[0].ports[0].endPort: may not be specified when `port` is not specified",
    ),
    (
        "port out of range",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
        "spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive",
    ),
    (
        "port zero",
        {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]},
        "spec.ingress[0].ports[0].port: must be between 1 and 65535, inclusive",
    ),
    (
        "invalid port name",
        {"podSelector": {}, "ingress": [{"ports": [{"port": "Http_Port"}]}]},
        "spec.ingress[0].ports[0].port: must contain only alpha-numeric",
    ),
    (
        "unsupported protocol",
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
        'spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"',
    ),
    ("peer with nothing in it", {"podSelector": {}, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]: must specify a peer"),
    (
        "ipBlock together with a selector",
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
        "spec.egress[0].to[0]: may not specify both ipBlock and another peer",
    ),
    (
        "ipBlock without cidr",
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr: Required value",
    ),
    (
        "ipBlock with a bad cidr",
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
        "spec.egress[0].to[0].ipBlock.cidr: must be a valid CIDR",
    ),
    (
        "except outside the cidr",
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
        "spec.egress[0].to[0].ipBlock.except[0]: must be a strict subset of `cidr`",
    ),
    (
        "except equal to the cidr",
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
        "except[0]: must be a strict subset of `cidr`",
    ),
    (
        "unknown policy type",
        {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
        'spec.policyTypes[1]: Unsupported value: "Sideways"',
    ),
    (
        "three policy types",
        {"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]},
        "spec.policyTypes: may not specify more than two policyTypes",
    ),
    (
        "In without values",
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}},
        "spec.podSelector.matchExpressions[0].values: must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        "Exists with values",
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}},
        "spec.podSelector.matchExpressions[0].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
    ),
    (
        "unknown operator",
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]}},
        "spec.podSelector.matchExpressions[0].operator: not a valid selector operator",
    ),
    (
        "invalid label key",
        {"podSelector": {"matchLabels": {"bad key!": "a"}}},
        "spec.podSelector.matchLabels.bad key!: name part must consist of",
    ),
    (
        "invalid label value",
        {"podSelector": {"matchLabels": {"app": "-a"}}},
        "spec.podSelector.matchLabels.app: a valid label must be",
    ),
    ("ingress that is not a list", {"podSelector": {}, "ingress": {"from": []}}, "spec.ingress: must be a list"),
    ("misspelt field", {"podSelector": {}, "ingres": [{}]}, "spec.ingres: unknown field"),
]


@pytest.mark.parametrize("spec,message", [(s, m) for _, s, m in INVALID_POLICIES], ids=[n for n, _, _ in INVALID_POLICIES])
def test_invalid_policy_is_rejected_with_object_and_field_path(spec: dict, message: str) -> None:
    with pytest.raises(InvalidObject) as err:
        parse_network_policy(policy("x/deny-all", spec))
    assert message in str(err.value)
    assert str(err.value).startswith("x/deny-all: ")


def test_every_error_of_an_object_is_reported_at_once() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": 0}, {"protocol": "ICMP"}]}]}
    with pytest.raises(InvalidObject) as err:
        parse_network_policy(policy("x/two", spec))
    assert "ports[0].port" in str(err.value) and "ports[1].protocol" in str(err.value)


def test_invalid_policy_name_is_rejected() -> None:
    with pytest.raises(InvalidObject, match="metadata.name: a lowercase RFC 1123 subdomain"):
        parse_network_policy(policy("x/Not_Valid", {"podSelector": {}}))


def test_policy_types_default_from_the_spec() -> None:
    ingress_only = parse_network_policy(policy("x/a", {"podSelector": {}}))
    with_egress = parse_network_policy(policy("x/b", {"podSelector": {}, "egress": [{}]}))
    assert ingress_only.policy_types == {Direction.INGRESS}
    assert with_egress.policy_types == {Direction.INGRESS, Direction.EGRESS}


def test_full_policy_loads_every_field() -> None:
    p = parse_network_policy(
        policy(
            "x/full",
            {
                "podSelector": {"matchLabels": {"app": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}},
                            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                        ],
                        "ports": [{"port": 8000, "endPort": 8080}, {"port": "dns", "protocol": "UDP"}, {"protocol": "SCTP"}],
                    }
                ],
            },
        )
    )
    rule = p.egress[0]
    assert rule.peers[0].namespace_selector.match_labels == (("team", "b"),)
    assert rule.peers[0].pod_selector is not None and rule.peers[0].ip_block is None
    assert str(rule.peers[1].ip_block.except_[0]) == "10.1.0.0/16"
    assert [(x.protocol, x.port, x.end_port) for x in rule.ports] == [
        (L4Protocol.TCP, 8000, 8080),
        (L4Protocol.UDP, "dns", None),
        (L4Protocol.SCTP, None, None),
    ]


def test_pods_keep_all_ips_and_named_container_ports() -> None:
    s = state_from_objects(
        [
            {
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "x", "labels": {"app": "a"}},
                "spec": {
                    "nodeName": "n1",
                    "containers": [
                        {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]},
                        {"name": "d", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
                    ],
                },
                "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]},
            }
        ]
    )
    p = s.pod("x/p")
    assert [str(ip) for ip in p.ips] == ["10.0.0.1", "fd00::1"]
    assert p.named_port("http", L4Protocol.TCP) == 8080 and p.named_port("http", L4Protocol.UDP) is None


def test_namespaces_carry_their_name_label() -> None:
    s = state_from_objects([{"kind": "Namespace", "metadata": {"name": "x"}}])
    assert s.namespace_labels("x") == {NAMESPACE_NAME_LABEL: "x"}


def test_yaml_files_with_several_documents_and_lists(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text(
        textwrap.dedent("""\
        apiVersion: v1
        kind: Namespace
        metadata: {name: x}
        ---
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: x}, status: {podIP: 10.0.0.1}}
        - apiVersion: networking.k8s.io/v1
          kind: NetworkPolicy
          metadata: {name: deny, namespace: x}
          spec: {podSelector: {}}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: ignored}
        """)
    )
    (tmp_path / "b.yaml").write_text(
        "kind: NetworkPolicyList\nitems:\n- {metadata: {name: other, namespace: x}, spec: {podSelector: {}}}\n"
    )
    s = load_state([tmp_path])
    assert [n.name for n in s.namespaces] == ["x"]
    assert [p.key for p in s.pods] == ["x/p"]
    assert [p.key for p in s.policies] == ["x/deny", "x/other"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("kind: NetworkPolicy\nmetadata: {name: a\n", "not valid YAML"),
        ("- just\n- a list\n", "must be an object"),
        ("metadata: {name: a}\n", "kind: Required value"),
        ("kind: List\nitems: 3\n", "items: must be a list"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InvalidObject) as err:
        load_state([f])
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_duplicate_objects_are_rejected() -> None:
    p = policy("x/a", {"podSelector": {}})
    with pytest.raises(InvalidObject, match="NetworkPolicy x/a: defined more than once"):
        state_from_objects([p, p])

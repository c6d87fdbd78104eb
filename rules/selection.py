"""Who a policy selects and whom its peers name: the spec's matching rules,
shared by the reference evaluator and the translator."""

from __future__ import annotations

from rules.model import ClusterState, IPAddress, NetworkPolicy, Peer, Pod


def policy_selects(policy: NetworkPolicy, pod: Pod) -> bool:
    """A policy applies to the policy-target pods of its namespace that its podSelector matches."""
    return pod.is_policy_target and pod.namespace == policy.namespace and policy.pod_selector.matches(pod.label_map)


def peer_selects_pod(state: ClusterState, peer: Peer, policy_namespace: str, pod: Pod) -> bool:
    """Whether a selector peer names this pod.

    podSelector alone: pods of the policy's namespace. namespaceSelector alone:
    every pod of the matching namespaces. Both in one peer: pods matching the
    podSelector *within* the matching namespaces (AND). ipBlock peers never
    select pods by identity; they match addresses (see ``peer_matches``).
    """
    if peer.ip_block is not None or not pod.is_policy_target:
        return False
    if peer.namespace_selector is None:
        in_scope = pod.namespace == policy_namespace
    else:
        in_scope = peer.namespace_selector.matches(state.namespace_labels(pod.namespace))
    return in_scope and (peer.pod_selector is None or peer.pod_selector.matches(pod.label_map))


def peer_matches(state: ClusterState, peer: Peer, policy_namespace: str, ip: IPAddress, pod: Pod | None) -> bool:
    """Whether a peer matches an endpoint: ipBlocks by address, selectors by pod."""
    if peer.ip_block is not None:
        return peer.ip_block.contains(ip)
    return pod is not None and peer_selects_pod(state, peer, policy_namespace, pod)

"""Every name nftpolicy gives a kernel object, and the grammar of its comments.

The translator builds names and comments only here, and whatever reads a live
ruleset back (the audit dump, metrics, the deny log) parses them only here,
so the writer and the readers cannot drift apart.

``inet nftpolicy`` (NetworkPolicy)::

    chain forward, chain ingress-dispatch   base chain and the ingress lookup
    map {ingress,egress}-pods-v4|v6         local pod IP -> its isolation chain
    chain isolate-DIR-HASH                  one per distinct combination of tiers (isolating
                                            policies, and ClusterNetworkPolicies of each tier)
    chain policy-DIR-HASH-NS/NAME           one policy's rules for one direction
    chain cnp-admin|baseline-DIR-HASH       one per distinct list of a tier's ClusterNetworkPolicies,
                                            their rules inlined in evaluation order
    chain cnp-deny-DIR                      logs (rate-limited) and drops what a Deny rule denies
    chain input, map node-egress-pods-v4|v6 a local pod's traffic to its own node (input hook):
    chain node-egress-HASH                  its ClusterNetworkPolicy egress tiers (only pods that have some)
    set nodes-HASH-v4|v6                    the addresses of the nodes a ``nodes`` peer selects
    set peer-HASH-v4|v6                     the pods a selector peer names
    set cidr-HASH-v4|v6                     an ipBlock, cidr minus except
    set [local-]port-PROTO-NAME-v4|v6       pod IP . number of a named port

``bridge nftpolicy`` (anti-spoofing on pod ports) has fixed names, built in
``rules.bridge``; the two sets others read are named here: ``pod-ports`` (the
host veths of registered pods: a pod is programmed once its veth is in it)
and ``foreign-ports`` (ports of bridges that are not pod bridges).

Comments: a policy chain, and the jump to it, say ``NS/NAME DIR``; a policy
rule says ``NS/NAME DIR[i]``, then ``.from[j]``/``.to[j]`` for a peer, then
`` port NAME`` for a named port. A ClusterNetworkPolicy rule says
``cnp/NAME TIER/PRIORITY DIR[i]``, the same peer and port parts, then
`` (RULE NAME)`` and its action. Denied packets are logged with the prefix
``nftpolicy DIR CHAIN``.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from rules.model import Direction, IPBlock, L4Protocol

TABLE = "nftpolicy"
POLICY_TABLE = ("inet", TABLE)
BRIDGE_TABLE = ("bridge", TABLE)
NAME_MAX = 200  # nft allows 256; leaves room for prefixes and suffixes

POD_PORTS_SET = "pod-ports"
FOREIGN_PORTS_SET = "foreign-ports"

FORWARD_CHAIN = "forward"
INPUT_CHAIN = "input"
DISPATCH_CHAIN = "ingress-dispatch"
_POLICY, _ISOLATE, _CNP = "policy-", "isolate-", "cnp-"
_PORT, _LOCAL_PORT = "port-", "local-port-"
_LOG = "nftpolicy"


@functools.lru_cache(maxsize=1 << 16)
def short_hash(*parts: str) -> str:
    """Eight stable characters that keep names unique after truncation."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest)[:8].decode().lower()


# --- names -------------------------------------------------------------------


def dispatch_map_name(direction: Direction, family: int) -> str:
    return f"{direction.field}-pods-v{family}"


def policy_chain_name(policy_key: str, direction: Direction) -> str:
    return f"{_POLICY}{direction.field}-{short_hash(policy_key, direction.field)}-{policy_key}"[:NAME_MAX]


def isolate_chain_name(direction: Direction, policy_keys: tuple[str, ...]) -> str:
    return f"{_ISOLATE}{direction.field}-{short_hash(*policy_keys)}"


def cluster_tier_chain_name(tier: str, direction: Direction, policy_keys: tuple[str, ...]) -> str:
    """``tier``: Admin or Baseline."""
    return f"{_CNP}{tier.lower()}-{direction.field}-{short_hash(tier, *policy_keys)}"


def node_egress_map_name(family: int) -> str:
    return f"node-egress-pods-v{family}"


def node_egress_chain_name(keys: tuple[str, ...]) -> str:
    return f"node-egress-{short_hash(*keys)}"


def node_set_name(selector: str, family: int) -> str:
    """``selector``: a stable text of the node label selector."""
    return f"nodes-{short_hash(selector)}-v{family}"


def cluster_deny_chain_name(direction: Direction) -> str:
    return f"{_CNP}deny-{direction.field}"


def peer_set_name(scope: str, family: int) -> str:
    """``scope``: a stable text of whom the peer names (namespace scope and selectors)."""
    return f"peer-{short_hash(scope)}-v{family}"


def ip_block_set_name(block: IPBlock) -> str:
    return f"cidr-{short_hash(block.describe())}-v{block.cidr.version}"


def named_port_set_name(protocol: L4Protocol, name: str, family: int, direction: Direction) -> str:
    """Ingress: only this node's pods (the destination is local); egress: every pod."""
    scope = _LOCAL_PORT if direction is Direction.INGRESS else _PORT
    return f"{scope}{protocol.value.lower()}-{name}-v{family}"


def is_policy_chain(name: str) -> bool:
    return name.startswith(_POLICY)


def is_cluster_tier_chain(name: str) -> bool:
    """A ClusterNetworkPolicy tier's chain (not the shared Deny chains)."""
    return name.startswith((f"{_CNP}admin-", f"{_CNP}baseline-"))


def is_cluster_deny_chain(name: str) -> bool:
    """The chains that log and drop what a ClusterNetworkPolicy Deny rule denies."""
    return name in (cluster_deny_chain_name(d) for d in Direction)


def is_isolate_chain(name: str) -> bool:
    return name.startswith(_ISOLATE)


def isolate_chain_direction(name: str) -> str:
    """``ingress`` or ``egress``, from an isolation chain's name."""
    return name[len(_ISOLATE) :].split("-", 1)[0]


def is_named_port_set(name: str) -> bool:
    """Sets of ``pod IP . port`` for a named port: they name ports, not peers."""
    return name.startswith((_PORT, _LOCAL_PORT))


def named_port_of(set_name: str) -> tuple[str, str]:
    """(protocol, port name) of a named-port set: ``local-port-tcp-http-v4`` -> ("tcp", "http")."""
    rest = set_name.removeprefix(_LOCAL_PORT).removeprefix(_PORT).rsplit("-v", 1)[0]
    protocol, name = rest.split("-", 1)
    return protocol, name


# --- comments ----------------------------------------------------------------


def policy_comment(policy_key: str, direction: Direction) -> str:
    """A policy chain's comment, and its jump's."""
    return f"{policy_key} {direction.field}"


def policy_of(comment: str) -> str:
    """The policy (``NS/NAME``) a policy chain or jump comment names."""
    return comment.rsplit(" ", 1)[0]


def is_direction_comment(comment: str, direction: str) -> bool:
    """Whether a jump comment is for ``direction`` (``ingress``/``egress``)."""
    return comment.endswith(f" {direction}")


def rule_comment(
    policy_key: str,
    direction: Direction,
    index: int,
    peer: int | None = None,
    named_port: str | None = None,
    tier: str | None = None,
    name: str = "",
) -> str:
    """The policy rule (and peer, and named port) an nft rule implements;
    ClusterNetworkPolicy rules also name their tier, priority and rule name."""
    where = f"{policy_key} {tier} {direction.field}[{index}]" if tier else f"{policy_key} {direction.field}[{index}]"
    if peer is not None:
        where += f".{direction.peers_field}[{peer}]"
    if named_port is not None:
        where += f" port {named_port}"
    if name:
        where += f" ({name})"
    return where


def cluster_tier_comment(tier: str, direction: Direction, policies: tuple[tuple[str, int], ...]) -> str:
    """A tier chain's comment, and its jump's: the tier and its policies with their priorities."""
    return f"{tier} tier {direction.field}: " + ", ".join(f"{key} ({priority})" for key, priority in policies)


# --- the deny log ------------------------------------------------------------


def deny_log_prefix(direction: Direction, isolate_chain: str) -> str:
    """What a denied packet's log line starts with: the direction and the chain that dropped it."""
    return f"{_LOG} {direction.field} {isolate_chain} "


def parse_deny_log_prefix(prefix: str) -> tuple[str, str] | None:
    """(direction, isolation chain) from a logged prefix; None if it is not ours."""
    words = prefix.split()
    if len(words) != 3 or words[0] != _LOG:
        return None
    return words[1], words[2]

"""What CNI tells the enforcer about local pods, and the bridge table built on it.

The CNI plugin registers each local pod's host-side veth, MAC and IPs. Two
things follow:

- the pod's addresses are known before the API shows them
  (``with_interfaces``), so the pod is protected before its first packet;
- ``table bridge nftpolicy`` binds each bridge port to its pod's MAC and IPs:
  a pod cannot send with a source it does not own, so it cannot borrow another
  pod's allowances, and a port that is not registered yet passes nothing in
  either direction (fail closed).

Which ports are checked does not depend on their names: every bridge port is,
except the "foreign" ports the enforcer found enslaved to bridges that are not
pod bridges (another bridge on the node is not ours to police). A port
attached anywhere is closed until the enforcer has seen where it went.

The bridge family has no conntrack on this kernel, so this table only checks
sources; NetworkPolicy itself is in ``table inet nftpolicy``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Iterable

from rules.model import ClusterState, Pod, PodInterface
from rules.naming import BRIDGE_TABLE, FOREIGN_PORTS_SET, POD_PORTS_SET
from rules.nft import (
    ACCEPT,
    DROP,
    AnonSet,
    Chain,
    Concat,
    Counter,
    Hook,
    Match,
    Meta,
    Payload,
    Prefix,
    RawPayload,
    Rule,
    Set,
    SetRef,
    Str,
    Table,
)

BRIDGE_PRIORITY = -200  # filter

# Link-local and unspecified sources a pod needs before (and beside) its own
# address: neighbour discovery, duplicate address detection, MLD.
LINK_LOCAL_ICMPV6 = (
    "nd-router-solicit",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-report",
    "mld2-listener-report",
)


def with_interfaces(state: ClusterState, node: str, interfaces: Iterable[PodInterface]) -> ClusterState:
    """The state with each registered local pod on ``node`` and holding the IPs CNI gave it.

    A registered pod the API does not know yet is added without labels: policies
    that select every pod of its namespace already protect it.
    """
    local = []
    for i in interfaces:
        pod = state.pod(i.key)
        local.append(
            replace(pod, node=node, ips=i.ips) if pod else Pod(i.namespace, i.name, node=node, ips=i.ips, uid=i.container_id)
        )
    return state.with_pods(local)


def _port_pairs(interfaces: Iterable[PodInterface], version: int) -> tuple:
    pairs = sorted({(i.host_ifname, str(ip)) for i in interfaces for ip in i.ips if ip.version == version})
    return tuple(Concat((Str(ifname), ip)) for ifname, ip in pairs)


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The pod's IPv6 link-local address: EUI-64 from its MAC, as Linux forms it by default."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui))


def _nd_targets(interfaces: Iterable[PodInterface]) -> tuple:
    """Each port's own IPv6 addresses, link-local included, as the 128-bit
    integers a raw-payload set holds: what its neighbour advertisements may claim."""
    pairs = sorted({(i.host_ifname, int(ip)) for i in interfaces for ip in _ipv6_with_link_local(i)})
    return tuple(Concat((Str(ifname), f"0x{value:032x}")) for ifname, value in pairs)


def _ipv6_with_link_local(interface: PodInterface) -> list:
    own = [ip for ip in interface.ips if ip.version == 6]
    return own + [link_local(interface.mac)] if interface.mac else own


def bridge_table(interfaces: Iterable[PodInterface], foreign_ports: Iterable[str] = ()) -> Table:
    interfaces = sorted(interfaces, key=lambda i: i.host_ifname)
    iif, oif = Meta("iifname"), Meta("oifname")
    sets = (
        Set(
            POD_PORTS_SET,
            ("ifname",),
            "host veths of registered pods",
            (),
            tuple(Str(n) for n in sorted({i.host_ifname for i in interfaces})),
        ),
        Set(
            FOREIGN_PORTS_SET,
            ("ifname",),
            "ports of bridges that are not pod bridges",
            (),
            tuple(Str(n) for n in sorted(set(foreign_ports))),
        ),
        Set(
            "port-macs",
            ("ifname", "ether_addr"),
            "each pod port's MAC",
            (),
            tuple(sorted({Concat((Str(i.host_ifname), i.mac)) for i in interfaces if i.mac}, key=repr)),
        ),
        Set("port-ipv4", ("ifname", "ipv4_addr"), "each pod port's IPv4 addresses", (), _port_pairs(interfaces, 4)),
        Set("port-ipv6", ("ifname", "ipv6_addr"), "each pod port's IPv6 addresses", (), _port_pairs(interfaces, 6)),
        Set(
            "port-link-local",
            ("ifname", "ipv6_addr"),
            "each pod port's IPv6 link-local address",
            (),
            tuple(
                Concat((Str(ifname), str(ip)))
                for ifname, ip in sorted({(i.host_ifname, link_local(i.mac)) for i in interfaces if i.mac})
            ),
        ),
        Set(
            "port-nd-targets",
            ("ifname", "integer"),
            "addresses each pod port's neighbour advertisements may claim",
            (),
            _nd_targets(interfaces),
            typeof="iifname . @th,64,128",
        ),
    )
    from_pods = (
        Rule((Match(iif, SetRef(FOREIGN_PORTS_SET)), ACCEPT), "a port of a bridge that is not a pod bridge"),
        Rule(
            (Match(Concat((iif, Payload("ether", "saddr"))), SetRef("port-macs"), "!="), Counter(), DROP),
            "source MAC is not the port's pod's, or the port is not registered",
        ),
        # ether type, not meta protocol: the kernel takes a VLAN tag out of the
        # frame before this hook, and meta protocol then shows what it hid.
        Rule(
            (Match(Payload("ether", "type"), AnonSet(("ip", "ip6", "arp")), "!="), Counter(), DROP),
            "VLAN tags and other ethertypes could hide a forged source or skip the policy table",
        ),
        Rule((Match(Payload("arp", "saddr ip"), "0.0.0.0"), ACCEPT), "ARP probe"),
        Rule(
            (Match(Concat((iif, Payload("arp", "saddr ether"))), SetRef("port-macs"), "!="), Counter(), DROP),
            "ARP sender MAC is not the pod's",
        ),
        Rule(
            (Match(Concat((iif, Payload("arp", "saddr ip"))), SetRef("port-ipv4"), "!="), Counter(), DROP),
            "ARP sender IP is not the pod's",
        ),
        Rule(
            (Match(Concat((iif, Payload("ip", "saddr"))), SetRef("port-ipv4"), "!="), Counter(), DROP),
            "IPv4 source is not the pod's",
        ),
        Rule(
            (
                Match(Payload("icmpv6", "type"), "nd-neighbor-advert"),
                Match(Concat((iif, RawPayload("th", 64, 128))), SetRef("port-nd-targets"), "!="),
                Counter(),
                DROP,
            ),
            "neighbour advertisement for an address that is not the pod's",
        ),
        Rule(
            (
                Match(Payload("ip6", "saddr"), Prefix("fe80::", 10)),
                Match(Concat((iif, Payload("ip6", "saddr"))), SetRef("port-link-local"), "!="),
                Counter(),
                DROP,
            ),
            "IPv6 link-local source is not the pod's",
        ),
        Rule(
            (
                Match(Payload("ip6", "saddr"), AnonSet(("::", Prefix("fe80::", 10)))),
                Match(Payload("icmpv6", "type"), AnonSet(LINK_LOCAL_ICMPV6)),
                ACCEPT,
            ),
            "neighbour discovery, DAD and MLD from link-local or unspecified sources",
        ),
        Rule(
            (Match(Concat((iif, Payload("ip6", "saddr"))), SetRef("port-ipv6"), "!="), Counter(), DROP),
            "IPv6 source is not the pod's",
        ),
    )
    to_pods = (
        Rule(
            (Match(oif, SetRef(FOREIGN_PORTS_SET), "!="), Match(oif, SetRef(POD_PORTS_SET), "!="), Counter(), DROP),
            "the port is not registered: its pod is not protected yet",
        ),
    )
    return Table(
        *BRIDGE_TABLE,
        "nftpolicy: each pod port sends only its pod's addresses",
        chains=(
            Chain(
                "from-pods", "anti-spoofing on frames from pod ports", Hook("filter", "prerouting", BRIDGE_PRIORITY), from_pods
            ),
            Chain(
                "to-bridged-pods", "closed until registered, bridged traffic", Hook("filter", "forward", BRIDGE_PRIORITY), to_pods
            ),
            Chain(
                "to-routed-pods", "closed until registered, routed traffic", Hook("filter", "output", BRIDGE_PRIORITY), to_pods
            ),
        ),
        sets=sets,
    )

"""The node's links, through pyroute2: bring a held pod's veth up once its
rules are in the kernel, and know which bridge ports are not on a pod bridge
(the bridge table checks every other port, whatever its name)."""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

log = logging.getLogger("nftpolicy.links")


class Links:
    def __init__(self) -> None:
        from pyroute2 import IPRoute

        self._ipr = IPRoute()

    def set_up(self, ifname: str) -> bool:
        """True when the link exists (and is now up)."""
        index = self._ipr.link_lookup(ifname=ifname)
        if not index:
            return False
        self._ipr.link("set", index=index[0], state="up")
        return True

    def foreign_ports(self, pod_bridges: Iterable[str]) -> frozenset[str]:
        """Ports enslaved to a bridge that is not one of ``pod_bridges``."""
        links = self._ipr.get_links()
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        bridges = {link["index"] for link in links if _kind(link) == "bridge"} - {i for i, n in names.items() if n in set(pod_bridges)}
        return frozenset(names[link["index"]] for link in links if link.get_attr("IFLA_MASTER") in bridges)

    def watch(self, stop: threading.Event, changed: Callable[[], None]) -> None:
        """Call ``changed`` after any link appears, goes or changes master, until
        ``stop``. Returns once subscribed, so no change slips in before the
        caller's first listing. Without link events, ``changed`` every second."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import RTMGRP_LINK

        subscribed = threading.Event()

        def run() -> None:
            try:
                events = IPRoute()  # pyroute2's sockets belong to the thread that made them
                events.bind(groups=RTMGRP_LINK)
                subscribed.set()
                with events:
                    while not stop.is_set():
                        if any(m["event"] in ("RTM_NEWLINK", "RTM_DELLINK") for m in events.get()):
                            changed()
            except OSError as e:  # no event socket: enforcement must not depend on it
                log.error("link events unavailable (%s): the bridge ports are listed every second", e)
                subscribed.set()
                while not stop.wait(1.0):
                    changed()

        threading.Thread(target=run, name="link-events", daemon=True).start()
        subscribed.wait()


def _kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None

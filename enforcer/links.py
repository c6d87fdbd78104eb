"""Host-side pod links, through pyroute2: bring a held pod's veth up once its
rules are in the kernel."""
from __future__ import annotations


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

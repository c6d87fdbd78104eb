"""Pure core of nftpolicy: cluster-state model, NetworkPolicy semantics and the
translation to nftables. Nothing in this package performs I/O beyond parsing
text it is handed; it imports neither ``enforcer`` nor ``cni``."""

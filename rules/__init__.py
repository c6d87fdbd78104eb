"""Pure core of nftpolicy: cluster-state model, NetworkPolicy semantics and the
translation to nftables. Data in, data out: no I/O, no YAML, no clock; it
imports neither ``enforcer`` nor ``cni`` (``lint-imports`` checks)."""

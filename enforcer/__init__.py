"""The per-node side of nftpolicy: everything with side effects (files, the
API, the kernel) lives here, and calls into the pure ``rules`` package."""

"""``python -m enforcer``: the nftpolicy command line."""

from enforcer.cli import main

main()

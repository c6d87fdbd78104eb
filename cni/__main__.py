"""``python -m cni``: run as the CNI plugin."""

from cni.plugin import exit_with_main

exit_with_main()

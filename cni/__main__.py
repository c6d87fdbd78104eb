"""``python -m cni``: run as the CNI plugin."""
import sys

from cni.plugin import main

sys.exit(main())

"""Simulated nodes in network namespaces (``simulation``), the agent each
simulated pod runs (``probe_agent``) and the demo built on them (``demo``).
Used by the demo and the tests; needs root, ip and the CNI plugins."""

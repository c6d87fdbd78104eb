"""The audit tools behind the CLI: offline rendering and explanation from
manifests (``offline``), and the live ruleset of a node (``live``)."""

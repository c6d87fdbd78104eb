"""What the enforcer tells operators: health and readiness (``health``),
Prometheus metrics (``metrics``) and the log of denied connections
(``deny_log``)."""

"""Prometheus metrics, in the text exposition format, for ``/metrics``.

Sync counts, time and failures, the last transaction's size, drift repairs,
the size of what is in force, and per-policy counters read from the kernel's
rule counters at scrape time: packets each policy rule allowed, packets
dropped for each set of policies isolating pods, and packets each
ClusterNetworkPolicy rule decided (or passed on), with its action.
"""

from __future__ import annotations

from enforcer.kernel import Kernel, KernelError
from enforcer.status import EnforcerStatus
from rules.naming import (
    POLICY_TABLE,
    is_cluster_tier_chain,
    is_isolate_chain,
    is_policy_chain,
    isolate_chain_direction,
    policy_of,
)
from rules.nft import Counter, Verdict


def _label(value: str) -> str:
    """A label value as the exposition format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _summary(name: str, values: list[float]) -> list[str]:
    ordered = sorted(values)
    lines = [
        f'{name}{{quantile="{q}"}} {ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.6f}'
        for q in (0.5, 0.9, 0.99)
        if ordered
    ]
    return lines + [f"{name}_sum {sum(ordered):.6f}", f"{name}_count {len(ordered)}"]


def metrics(status: EnforcerStatus, kernel: Kernel) -> str:
    """``kernel``: where the rule counters are read, at scrape time."""
    lines = [
        "# HELP nftpolicy_syncs_total Transactions committed.",
        "# TYPE nftpolicy_syncs_total counter",
        f"nftpolicy_syncs_total {status.sync_count}",
        "# HELP nftpolicy_sync_failures_total Transactions the kernel refused (the previous ruleset stayed).",
        "# TYPE nftpolicy_sync_failures_total counter",
        f"nftpolicy_sync_failures_total {status.sync_failures}",
        "# HELP nftpolicy_sync_seconds_total Time spent computing and committing transactions.",
        "# TYPE nftpolicy_sync_seconds_total counter",
        f"nftpolicy_sync_seconds_total {status.sync_seconds:.6f}",
        "# HELP nftpolicy_last_transaction_commands Commands in the last committed transaction.",
        "# TYPE nftpolicy_last_transaction_commands gauge",
        f"nftpolicy_last_transaction_commands {status.last_commands}",
        "# HELP nftpolicy_drift_repairs_total Hand-made changes to the tables found and undone.",
        "# TYPE nftpolicy_drift_repairs_total counter",
        f"nftpolicy_drift_repairs_total {status.drift_repairs}",
        "# HELP nftpolicy_source_up Whether the cluster state is current (1) or the last good one is in force (0).",
        "# TYPE nftpolicy_source_up gauge",
        f"nftpolicy_source_up {0 if status.source_error else 1}",
        "# HELP nftpolicy_change_commit_seconds From a change reaching the enforcer to its commit (recent syncs).",
        "# TYPE nftpolicy_change_commit_seconds summary",
        *_summary("nftpolicy_change_commit_seconds", status.change_latencies),
        "# HELP nftpolicy_objects Objects of the committed tables, by kind.",
        "# TYPE nftpolicy_objects gauge",
    ]
    for table in status.tables.values():
        counts = {
            "chains": len(table.chains),
            "rules": sum(len(c.rules) for c in table.chains),
            "sets": len(table.sets),
            "elements": sum(len(s.elements) for s in table.sets),
        }
        lines += [f'nftpolicy_objects{{table="{table.family} {table.name}",kind="{k}"}} {v}' for k, v in counts.items()]
    lines += [
        "# HELP nftpolicy_policy_rule_packets_total Packets of new connections a policy rule allowed.",
        "# TYPE nftpolicy_policy_rule_packets_total counter",
        "# HELP nftpolicy_denied_packets_total Packets dropped because no rule of the isolating policies allowed them.",
        "# TYPE nftpolicy_denied_packets_total counter",
        "# HELP nftpolicy_cluster_policy_rule_packets_total Packets of new connections a ClusterNetworkPolicy rule matched.",
        "# TYPE nftpolicy_cluster_policy_rule_packets_total counter",
    ]
    try:
        live = kernel.read(*POLICY_TABLE, elements=False) if status.tables else None
    except KernelError:
        live = None
    allowed: dict[str, int] = {}
    tiered: dict[str, int] = {}  # "cnp/NAME TIER/PRIORITY DIR[i]... (NAME) ACTION"
    for chain in live.chains if live else ():
        for rule in chain.rules:
            counter = next((s for s in rule.statements if isinstance(s, Counter)), None)
            verdict = next((s for s in rule.statements if isinstance(s, Verdict)), None)
            if counter is None or verdict is None:
                continue
            if is_policy_chain(chain.name) and rule.comment:
                allowed[rule.comment] = allowed.get(rule.comment, 0) + counter.packets
            elif is_cluster_tier_chain(chain.name) and rule.comment:
                tiered[rule.comment] = tiered.get(rule.comment, 0) + counter.packets
            elif is_isolate_chain(chain.name) and verdict.kind == "drop":
                policies = ",".join(
                    policy_of(r.comment)
                    for r in chain.rules
                    if r.comment and any(isinstance(s, Verdict) and s.kind == "jump" for s in r.statements)
                )
                direction = isolate_chain_direction(chain.name)
                lines.append(
                    f'nftpolicy_denied_packets_total{{direction="{direction}",policies="{_label(policies)}"}} {counter.packets}'
                )
    lines += [f'nftpolicy_policy_rule_packets_total{{rule="{_label(r)}"}} {n}' for r, n in sorted(allowed.items())]
    for comment, n in sorted(tiered.items()):
        rule, _, action = comment.rpartition(" ")
        lines.append(f'nftpolicy_cluster_policy_rule_packets_total{{rule="{_label(rule)}",action="{action}"}} {n}')
    return "\n".join(lines) + "\n"

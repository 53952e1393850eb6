"""The A/B simulation's numbers: per-arm rates with Wilson intervals, the difference against
the first arm with its interval and the listeners per arm a test would need, written to
``simulations/`` and rendered as Markdown (:mod:`jobs.simulate.arms` runs the arms)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.atomic import write_json
from core.workspace import Workspace
from evaluation.stats import Z95, diff_interval, needed_per_arm, wilson


def write_report(
    ws: Workspace,
    results: dict[str, dict[str, Any]],
    policies: Sequence[str],
    days: int,
    k: int,
    seed: int,
) -> dict[str, Any]:
    metrics = {  # name -> (successes key, trials key, scale)
        "ctr": ("clicks", "impressions", 100.0),
        "stream_through": ("streams", "clicks", 1.0),
        "follow_rate": ("follows", "impressions", 100.0),
        "churn7": ("churned7", "listeners", 1.0),
        "churn14": ("churned14", "listeners", 1.0),
    }
    base = results[policies[0]]
    table: dict[str, dict[str, Any]] = {}
    for policy in policies:
        r = results[policy]
        row: dict[str, Any] = {"listeners": r["listeners"], "impressions": r["impressions"]}
        for name, (s, n, scale) in metrics.items():
            if r[s] is None or not r[n]:
                continue
            lo, hi = wilson(r[s], r[n], Z95)
            row[name] = [scale * r[s] / r[n], scale * lo, scale * hi]
            if policy != policies[0] and base[s] is not None and base[n]:
                d, dlo, dhi = diff_interval(base[s], base[n], r[s], r[n])
                row[f"{name}_vs_{policies[0]}"] = [scale * d, scale * dlo, scale * dhi]
                row[f"{name}_needed_per_arm"] = needed_per_arm(base[s] / base[n], r[s] / r[n])
        table[policy] = row
    summary = {
        "policies": list(policies),
        "days": days,
        "k": k,
        "seed": seed,
        "arms": table,
        "raw": results,
    }
    out = ws.simulations / f"{'-vs-'.join(policies)}-{days}d-seed{seed}.json"
    write_json(out, summary)
    summary["path"] = str(out)
    summary["markdown"] = render(summary)
    return summary


def render(summary: dict[str, Any]) -> str:
    policies = summary["policies"]
    head = (
        "| arm | listeners | impressions | CTR /100 | stream-through | follows /100 "
        "| 7-day churn | 14-day churn |"
    )
    lines = [head, "|---" * 8 + "|"]

    def cell(row: dict[str, Any], name: str, fmt: str) -> str:
        if name not in row:
            return "-"
        v, lo, hi = row[name]
        return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    for p in policies:
        r = summary["arms"][p]
        lines.append(
            f"| {p} | {r['listeners']:,} | {r['impressions']:,} | {cell(r, 'ctr', '.2f')} "
            f"| {cell(r, 'stream_through', '.3f')} | {cell(r, 'follow_rate', '.3f')} "
            f"| {cell(r, 'churn7', '.3f')} | {cell(r, 'churn14', '.3f')} |"
        )
    lines += [
        "",
        f"Differences against `{policies[0]}` (95 % interval; listeners or trials per "
        "arm needed to detect the observed difference at 5 % / 80 % power):",
        "",
    ]
    for p in policies[1:]:
        r = summary["arms"][p]
        parts = []
        for name in ("ctr", "stream_through", "churn14"):
            key = f"{name}_vs_{policies[0]}"
            if key in r:
                d, lo, hi = r[key]
                need = r[f"{name}_needed_per_arm"]
                parts.append(f"{name} {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (needs {need:,.0f})")
        lines.append(f"- `{p}`: " + "; ".join(parts))
    return "\n".join(lines) + "\n"

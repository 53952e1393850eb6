"""The daily cycle's report: the engagement table as Arrow, today against yesterday, the
plots (CTR and churn by segment; champion against challenger) and the Markdown summary."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any


def to_arrow(frame: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def today_vs_yesterday(eng: Any, day: date) -> dict[str, Any]:
    rows = eng[(eng["version"] == "*") & (eng["segment"] == "all=all")].set_index("date")
    out: dict[str, Any] = {}
    for label, d in (("today", day), ("yesterday", day - timedelta(days=1))):
        key = d.isoformat()
        if key in rows.index:
            r = rows.loc[key]
            out[label] = {
                "impressions": int(r["impressions"]),
                "ctr": float(r["ctr"]),
                "stream_through": float(r["stream_through"]),
                "follow_rate": float(r["follow_rate"]),
            }
    for col in ("churn7", "churn14"):  # the latest day whose following window is complete
        known = rows[col].dropna()
        if len(known):
            out[f"latest_{col}"] = {"date": known.index[-1], "value": float(known.iloc[-1])}
    return out


def segment_plots(eng: Any, out_dir: Path) -> list[Path]:
    """CTR and 7-day churn over days, one line per segment value, one panel per field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = eng[eng["version"] == "*"]
    paths = []
    for metric, label in (("ctr", "CTR (clicks per 100 impressions)"), ("churn7", "7-day churn")):
        fields = ["all", "age_group", "gender", "country", "tenure"]
        fig, axes = plt.subplots(1, len(fields), figsize=(4 * len(fields), 3.2), sharey=True)
        for ax, f in zip(axes, fields, strict=True):
            for seg, g in rows[rows["segment"].str.startswith(f + "=")].groupby("segment"):
                g = g[g["impressions"] >= 20] if metric == "ctr" else g
                ax.plot(g["date"], g[metric], label=str(seg).split("=", 1)[1], lw=1)
            ax.set_title(f)
            ax.tick_params(axis="x", labelrotation=90, labelsize=6)
            ax.legend(fontsize=6)
        axes[0].set_ylabel(label)
        fig.tight_layout()
        path = out_dir / f"{metric}_by_segment.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def gate_plot(decision: Any, out_dir: Path) -> Path:
    """Champion against challenger on the gate's metric, the delta's interval as a whisker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    champ, chall = decision.champion_score, decision.challenger_score
    lo, hi = decision.ci
    ax.bar([0, 1], [champ, chall], color=["#98a2b3", "#1f7a5c" if decision.promote else "#b42318"])
    ax.errorbar(
        [1],
        [champ + decision.delta],
        yerr=[[decision.delta - lo], [hi - decision.delta]],
        color="#101828",
        capsize=6,
    )
    ax.set_xticks(
        [0, 1], [decision.champion.split(" (")[0][:24], decision.challenger[:24]], fontsize=7
    )
    ax.set_ylabel(f"{decision.metric} ({decision.n_users} users)")
    ax.set_title("promoted" if decision.promote else "kept out", fontsize=9)
    fig.tight_layout()
    path = out_dir / "champion_vs_challenger.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_summary(summary: dict[str, Any]) -> str:
    d = summary["decision"]
    eng = summary["engagement"]
    lines = [
        f"# Daily cycle {summary['day']}",
        "",
        f"Challenger `{summary['challenger']}`: **{'promoted' if d['promote'] else 'kept out'}**. "
        + " ".join(f"{r}." for r in d["reasons"]),
        "",
        *(
            [
                f"In its place, `{i['challenger']}` (the best benchmark, ahead of it) vs "
                f"`{i['champion']}`: **{'promoted' if i['promote'] else 'kept out'}**. "
                + " ".join(f"{r}." for r in i["reasons"]),
                "",
            ]
            if (i := d.get("instead"))
            else []
        ),
        f"Serving: `{summary.get('serving_model')}`, run `{summary['serving_run']}`, "
        f"bundle `{summary['serving_bundle']}`.",
        "",
        "| model | test Recall@20 |",
        "|---|---|",
    ]
    lines += [f"| {m} | {v:.4f} |" for m, v in summary["test_recall@20"].items() if v is not None]
    b = d.get("benchmark")
    if b:
        v = b["decision"]
        lines += [
            "",
            f"Benchmarks on the gate's users ({d['metric']}): "
            + ", ".join(f"{k} {s:.4f}" for k, s in b["scores"].items())
            + f". Against the best, {b['label']}: delta {v['delta']:+.4f} "
            f"(95% CI [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]), "
            + ("beaten." if v["promote"] else "not beaten: " + "; ".join(v["reasons"]) + "."),
        ]
    r = summary.get("ranker")
    if r:
        ndcg = r["held_out_ndcg@10"]
        lines += [
            "",
            f"Ranker `{r['run_id']}` (held-out slates NDCG@10 {ndcg['ranker']:.4f} vs "
            f"retrieval {ndcg['retrieval']:.4f}): {r['summary']}. "
            + (
                "The serving bundle carries it."
                if r["serving"]
                else "The serving bundle has no ranker from this day."
            ),
        ]
    ts = summary.get("two_stage")
    if ts:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in ts["test_recall@20"].items())
        lines += [
            "",
            f"Two-stage `{ts['run_id']}` (test Recall@20: {scores}): {ts['summary']}. "
            + (
                "The serving bundle carries it."
                if ts["serving"]
                else "The serving bundle has no two-stage system from this day."
            ),
        ]
    if "today" in eng:
        t, y = eng["today"], eng.get("yesterday")
        lines += [
            "",
            f"CTR today {t['ctr']:.2f} per 100 impressions"
            + (f" (yesterday {y['ctr']:.2f})" if y else "")
            + f"; stream-through {t['stream_through']:.2f}; "
            f"follows {t['follow_rate']:.2f} per 100 impressions.",
        ]
    for h in (7, 14):
        if f"latest_churn{h}" in eng:
            c = eng[f"latest_churn{h}"]
            lines.append(
                f"{h}-day churn of the users active in the week to {c['date']}: {c['value']:.3f}."
            )
    lines += ["", "## Alarms", ""]
    lines += [
        f"- {a['segment']}: {a['metric']} {a['value']:.3f} < {a['threshold']:.3f}"
        for a in summary["alarms"]
    ] or ["none"]
    return "\n".join(lines) + "\n"

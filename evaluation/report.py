"""The evaluation report: PNG plots first, then Markdown tables; and ``compare`` of runs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402

from core.atomic import write_bytes  # noqa: E402
from core.workspace import RunDir  # noqa: E402

START, END = "<!-- evaluation:start -->", "<!-- evaluation:end -->"
HEADLINE = ("recall@10", "recall@20", "ndcg@20", "hitrate@20", "mrr", "coverage@20", "novelty@20")


def _ks(summary: dict[str, float], split: str) -> list[int]:
    found = (re.fullmatch(rf"{split}/recall@(\d+)", key) for key in summary)
    return sorted(int(m.group(1)) for m in found if m)


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def plot_recall_curves(result: dict[str, Any], path: Path) -> None:
    split = result["split"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, summary in result["models"].items():
        ks = _ks(summary, split)
        ax.plot(ks, [summary[f"{split}/recall@{k}"] for k in ks], marker="o", label=name)
    ax.set(xlabel="K", ylabel="Recall@K", title=f"Recall@K ({split}, warm users)", xscale="log")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_segments(result: dict[str, Any], path: Path, metric: str = "recall@20") -> None:
    fields = sorted({f for segs in result["segments"].values() for f in segs})
    fig, axes = plt.subplots(
        len(fields), 1, figsize=(9, 3.0 * max(len(fields), 1)), squeeze=False, layout="constrained"
    )
    models = list(result["segments"])
    width = 0.8 / max(len(models), 1)
    for ax, field in zip(axes[:, 0], fields, strict=True):
        values = sorted({v for m in models for v in result["segments"][m].get(field, {})})
        for j, model in enumerate(models):
            rows = [result["segments"][model].get(field, {}).get(v) for v in values]
            mean = [r[metric][0] if r else 0.0 for r in rows]
            err_lo = [r[metric][0] - r[metric][1] if r else 0.0 for r in rows]
            err_hi = [r[metric][2] - r[metric][0] if r else 0.0 for r in rows]
            xs = [i + j * width for i in range(len(values))]
            ax.bar(xs, mean, width, yerr=[err_lo, err_hi], capsize=2, label=model)
        n_users = [
            next(
                (
                    result["segments"][m][field][v]["n_users"]
                    for m in models
                    if v in result["segments"][m].get(field, {})
                ),
                0,
            )
            for v in values
        ]
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(values))])
        ax.set_xticklabels(
            [f"{v}\n(n={n})" for v, n in zip(values, n_users, strict=True)], fontsize=7
        )
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by {field} (95% bootstrap intervals)", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=min(len(models), 4))
    _save(fig, path)


def plot_gap(result: dict[str, Any], path: Path, metric: str = "recall@20") -> None:
    split = result["split"]
    models = list(result["models"])
    test = [result["models"][m].get(f"{split}/{metric}", 0.0) for m in models]
    train = [result["train_sample"].get(m, {}).get(f"train/{metric}", 0.0) for m in models]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(models))
    ax.bar([x - 0.2 for x in xs], train, 0.4, label="train sample")
    ax.bar([x + 0.2 for x in xs], test, 0.4, label=split)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(models, fontsize=8)
    ax.set(ylabel=metric, title=f"Train vs {split} {metric}")
    ax.legend(fontsize=8)
    _save(fig, path)


def _table(rows: dict[str, dict[str, float]], prefix: str, cols: Sequence[str]) -> str:
    head = "| model | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    body = ""
    for name, summary in rows.items():
        cells = [summary.get(f"{prefix}/{c}") for c in cols]
        body += f"| {name} | " + " | ".join("" if v is None else f"{v:.4f}" for v in cells) + " |\n"
    return head + body


def render_report(result: dict[str, Any]) -> str:
    split = result["split"]
    lines = [
        f"# Evaluation ({result['protocol']}, split `{split}`)",
        "",
        "![Recall@K per model](recall_at_k.png)",
        *(["![Train vs test gap](train_test_gap.png)"] if result["train_sample"] else []),
        *(["![Segments](segments.png)"] if result["segments"] else []),
        "",
        f"{result['n_warm_users']} warm users (in train), {result['n_cold_users']} cold users; "
        f"{result['cold_artist_target_share']:.1%} of target pairs are artists unseen in train "
        "(no model trained on train can rank them; they count as misses).",
        "",
        "## Warm users",
        _table(result["models"], split, HEADLINE),
    ]
    if result["train_sample"]:
        lines += [
            "## Overfitting check (held-in training artists vs test)",
            _table(result["train_sample"], "train", ("recall@20", "ndcg@20", "hitrate@20")),
        ]
        flagged = [m for m, f in result.get("overfit_flags", {}).items() if f]
        lines.append(
            f"**Large train/test gap flagged for: {', '.join(flagged)}.**\n"
            if flagged
            else "No model shows a large train/test gap.\n"
        )
    if result["cold_start"]:
        lines += ["## Cold-start users", _table(result["cold_start"], split, HEADLINE[:5])]
    if result["segments"]:
        lines.append("## Segments (recall@20, mean [95% CI], users)\n")
    for name, fields in result["segments"].items():
        for field, values in fields.items():
            cells = ", ".join(
                f"{v}: {r['recall@20'][0]:.3f} [{r['recall@20'][1]:.3f}, {r['recall@20'][2]:.3f}]"
                f" n={r['n_users']}"
                for v, r in values.items()
                if "recall@20" in r
            )
            lines.append(f"- **{name}** by {field}: {cells}")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, result: dict[str, Any]) -> Path:
    files = RunDir(Path(run_dir))
    plot_recall_curves(result, files.plot("recall_at_k"))
    if result["train_sample"]:
        plot_gap(result, files.plot("train_test_gap"))
    if result["segments"]:
        plot_segments(result, files.plot("segments"))
    path = files.report
    section = f"{START}\n{render_report(result)}{END}\n"
    old = path.read_text() if path.is_file() else ""
    if START in old and END in old:  # re-evaluation replaces its own section only
        before, rest = old.split(START, 1)
        old = before + rest.split(END, 1)[1].lstrip("\n")
    # the evaluation (plots first) opens the report; what training wrote follows unchanged
    write_bytes(path, (section + ("\n" + old if old.strip() else "")).encode())
    return path


def compare_runs(run_dirs: Sequence[Path], metrics: Sequence[str] = HEADLINE) -> str:
    """One row per (run, model) with the headline metrics of each run's evaluation."""
    head = "| run | model | " + " | ".join(metrics) + " |\n|---|---|" + "---|" * len(metrics)
    lines = [head]
    for run in run_dirs:
        path = RunDir(Path(run)).metrics
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; evaluate the run first")
        ev = json.loads(path.read_text()).get("evaluation")
        if not ev:
            raise ValueError(f"{path} has no 'evaluation' section; run `tastemaker evaluate`")
        for name, summary in ev["models"].items():
            cells = [summary.get(f"{ev['split']}/{m}") for m in metrics]
            text = " | ".join("" if v is None else f"{v:.4f}" for v in cells)
            lines.append(f"| {Path(run).name} | {name} | {text} |")
    return "\n".join(lines) + "\n"

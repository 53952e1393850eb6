"""Run every benchmark and write benchmarks/README.md.

    python -m benchmarks.run            # full sizes (what `make bench` runs)
    python -m benchmarks.run --quick    # smaller sizes, for a smoke run
    python -m benchmarks.run --only ingest features

Each ``benchmarks/bench_<area>.py`` exposes ``main(quick: bool) -> str`` returning a Markdown
section that names the command behind its numbers and compares against a baseline measured in
the same run (these machines are shared and noisy, so ratios, not absolute times, are the
claim).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from core.atomic import write_bytes

AREAS = (
    "ingest",
    "features",
    "features_incremental",
    "spark_features",
    "eval",
    "serving",
    "stream",
    "burst",
    "deploy",
    "ann",
    "precompute",
    "hetrec",
    "tuned_hetrec",
    "hetrec_inputs",
    "tuned_demo",
    "two_tower_demo",
    "two_tower_cold",
    "two_tower_few_events",
    "two_tower_speed",
    "simulate",
    "ranker",
    "two_stage",
    "world",
)
HERE = Path(__file__).resolve().parent


def _module(area: str) -> str:
    return "benchmarks.hetrec" if area == "hetrec" else f"benchmarks.bench_{area}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=AREAS, default=list(AREAS))
    args = parser.parse_args(argv)

    for area in args.only:
        started = time.perf_counter()
        print(f"== benchmark {area} ...", file=sys.stderr, flush=True)
        section = importlib.import_module(_module(area)).main(quick=args.quick)
        record(area, section)
        print(f"== {area} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


def record(area: str, section: str) -> None:
    """Store ``area``'s section in ``results/`` and rewrite README.md from every stored one
    (a benchmark run with its own options, e.g. ``bench_deploy --compress 1 --write``)."""
    if area not in AREAS:
        raise ValueError(f"unknown benchmark area {area!r}")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    write_bytes(results_dir / f"{area}.md", (section.strip() + "\n").encode())
    # areas not run this time keep their last recorded section
    sections = {
        name: (results_dir / f"{name}.md").read_text()
        for name in AREAS
        if (results_dir / f"{name}.md").exists()
    }

    header = [
        "# Benchmarks",
        "",
        "Measured numbers, each with the command that produced it. Regenerate everything with",
        "`make bench` (`python -m benchmarks.run`); one area with",
        "`python -m benchmarks.run --only AREA`. Machines here are shared and noisy: every",
        "figure is set against a baseline measured in the same run.",
        "",
        f"Last full write: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()}, Python {platform.python_version()}.",
        "",
    ]
    body = "\n".join(sections[a] for a in AREAS if a in sections)
    write_bytes(HERE / "README.md", ("\n".join(header) + "\n" + body).encode())


if __name__ == "__main__":
    sys.exit(main())

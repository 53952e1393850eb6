"""``tastemaker features``: build the point-in-time feature tables and publish online."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from data.features.config import FeatureConfig

    p = sub.add_parser(
        "features", help="lake -> features/ (examples, eval, trending) and the online store"
    )
    defaults = FeatureConfig()
    p.add_argument(
        "--online",
        default=None,
        help="online store: redis://host:port/db[?prefix=P], sqlite:///path or a path "
        "(default: <workspace>/online/users.sqlite; '' to skip publishing)",
    )
    p.add_argument("--test-days", type=int, default=defaults.test_days)
    p.add_argument("--valid-days", type=int, default=defaults.valid_days)
    p.add_argument(
        "--stream-min-ms",
        type=int,
        default=defaults.stream_min_ms,
        help="a stream counts as a positive from this many ms played",
    )
    p.add_argument("--click-weight", type=float, default=defaults.click_weight)
    p.add_argument("--stream-weight", type=float, default=defaults.stream_weight)
    p.add_argument("--follow-weight", type=float, default=defaults.follow_weight)
    p.add_argument(
        "--as-of-version",
        type=int,
        default=None,
        help="read the lake's events table at this Delta version (a run's lineage.json "
        "lake_version) instead of the latest",
    )
    p.add_argument(
        "--engine",
        dest="feature_engine",
        choices=("local", "spark"),
        default=None,
        help="local: this process (default, $TASTEMAKER_FEATURE_ENGINE); spark: PySpark, the "
        "same tables (needs Java 17 and the 'spark' extra)",
    )
    p.add_argument(
        "--master",
        dest="spark_master",
        default=None,
        help="with --engine spark: local[N], spark://host:port or a Spark Connect "
        "sc://host:port (default local[*], $TASTEMAKER_SPARK_MASTER)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--incremental",
        action="store_true",
        help="read only the lake files added since the state the last build carried "
        "(features/state); a full rebuild, saying why, when that state is missing or does "
        "not match (local engine only)",
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="read the whole lake (the default); still writes the state --incremental reads",
    )
    p.set_defaults(func=_features)


def _features(args: argparse.Namespace) -> int:
    from data.features.build import build_features
    from data.features.config import FeatureConfig

    config = FeatureConfig(
        test_days=args.test_days,
        valid_days=args.valid_days,
        stream_min_ms=args.stream_min_ms,
        click_weight=args.click_weight,
        stream_weight=args.stream_weight,
        follow_weight=args.follow_weight,
    )
    settings = args.settings
    spark = None
    if settings.feature_engine == "spark":
        from data.features.spark import spark_session

        spark = spark_session(settings)
    try:
        summary = build_features(
            args.ws,
            config,
            online=args.online,
            as_of_version=args.as_of_version,
            spark=spark,
            incremental=args.incremental,
        )
    finally:
        if spark is not None:
            spark.stop()
    print(
        json.dumps(
            {
                "cutoffs": summary["cutoffs"],
                **summary["counts"],
                "lake_version": summary["lake_version"],
                "build": summary["build"],
            },
            indent=2,
        )
    )
    return 0

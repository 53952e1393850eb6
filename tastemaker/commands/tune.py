"""``tastemaker tune``: tune the two-tower and its peers with the same validation protocol and
the same trial budget (:mod:`jobs.tune`)."""

from __future__ import annotations

import argparse
from pathlib import Path

TUNABLE = ("als", "ease", "itemknn", "two-tower")


def register(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser(
        "tune",
        help="tune models on the validation split (never test), the same trial budget each",
    )
    tune.add_argument("--model", choices=(*TUNABLE, "all"), default="all")
    tune.add_argument("--trials", type=int, default=10, help="trials per model (default 10)")
    tune.add_argument(
        "--dataset",
        choices=("demo", "hetrec"),
        default="demo",
        help="demo: the workspace's features, temporal valid split; hetrec: a validation "
        "slice of the training part of split --split-seed",
    )
    tune.add_argument("--split-seed", type=int, default=0, help="hetrec: the 80/20 split's seed")
    tune.add_argument("--path", default=None, help="hetrec: the folder (default: shared data)")
    tune.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    tune.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from data import datasets
    from jobs.tune import TuneConfig, format_table, make_validation, run_tuning

    models = TUNABLE if args.model == "all" else (args.model,)
    path = args.path
    if args.dataset == "hetrec" and path is None:
        found = datasets.hetrec_dir(args.settings.data_dir)
        if found is None:
            raise FileNotFoundError(
                "HetRec folder not found under "
                f"{datasets.shared_data_dir(args.settings.data_dir)}; pass --path DIR"
            )
        path = Path(found)
    validation = make_validation(args.ws, args.dataset, path, args.split_seed)
    record = run_tuning(args.ws, validation, models, TuneConfig(args.trials, args.seed))
    print(f"{args.dataset}: {record['validation']['protocol']}")
    print(format_table(record))
    print(f"best params: {record['path']}")
    return 0

"""``tastemaker import hetrec``: bring a real data set in as interactions + artists."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="import a real data set as interactions + artists")
    kinds = imp.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    het = kinds.add_parser(
        "hetrec", help="HetRec 2011 Last.fm 2K (user_artists, artists, tags, friends, user tags)"
    )
    het.add_argument(
        "--path",
        default=None,
        help="folder with the .dat files "
        "(default: lastfm-hetrec-2k in $TASTEMAKER_DATA_DIR, else ../shared/data)",
    )
    het.add_argument("--out", required=True, help="output folder")
    het.add_argument("--format", choices=("parquet", "tsv"), default="parquet")
    het.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="also write a per-user random train/test holdout with this seed",
    )
    het.add_argument("--test-frac", type=float, default=0.2)
    het.set_defaults(func=_import_hetrec)


def _import_hetrec(args: argparse.Namespace) -> int:
    from data import datasets
    from data.importers import (
        holdout_split,
        import_hetrec,
        import_hetrec_social,
        write_artists,
        write_interactions,
        write_side_table,
    )

    data_dir = args.settings.data_dir
    path = Path(args.path) if args.path else datasets.hetrec_dir(data_dir)
    if path is None:
        raise FileNotFoundError(
            f"HetRec folder not found under {datasets.shared_data_dir(data_dir)}; pass --path DIR"
        )
    interactions, artists = import_hetrec(path)
    friends, user_tags = import_hetrec_social(path)
    out, ext = Path(args.out), args.format
    written = {f"interactions.{ext}": interactions, f"artists.{ext}": artists}
    # every user's friends and tag assignments (held-out artists' tags included): training
    # reads only what the training file allows (training.user_side)
    side = {f"friends.{ext}": friends, f"user_tags.{ext}": user_tags}
    if args.split_seed is not None:
        train, test = holdout_split(interactions, args.test_frac, args.split_seed)
        written.update({f"train.{ext}": train, f"test.{ext}": test})
    for name, table in written.items():
        (write_artists if name.startswith("artists") else write_interactions)(table, out / name)
        print(f"  {out / name}: {table.num_rows} rows")
    for name, table in side.items():
        write_side_table(table, out / name)
        print(f"  {out / name}: {table.num_rows} rows")
    return 0

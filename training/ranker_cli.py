"""``tastemaker train-ranker``: fit the ranking stage against a two-tower run (``training.ranker``)."""

from __future__ import annotations

import argparse
import dataclasses


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-ranker",
        help="fit the XGBoost ranking stage on logged slates against a --no-refit two-tower run",
    )
    p.add_argument("--run", default=None, help="two-tower run dir (default: the latest run)")
    p.add_argument("--candidates", type=int, default=None, help="retrieval depth re-ranked")
    p.add_argument("--rounds", type=int, default=None, help="most boosting rounds")
    p.add_argument("--max-depth", type=int, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--threads", type=int, default=None, help="XGBoost threads (default 2)")
    p.add_argument(
        "--extra-negatives",
        type=int,
        default=0,
        help="unshown top retrieval candidates added to each clicked slate as non-clicks",
    )
    p.set_defaults(func=_train_ranker)


def _train_ranker(args: argparse.Namespace) -> int:
    from models.ranker import RankerConfig
    from training.ranker import RANKER_DIR, RankerJobConfig, train_ranker

    model_kw = {
        field: value
        for field, value in (
            ("n_rounds", args.rounds),
            ("max_depth", args.max_depth),
            ("eta", args.eta),
            ("nthread", args.threads),
        )
        if value is not None
    }
    config = RankerJobConfig(model=dataclasses.replace(RankerConfig(), **model_kw))
    if args.candidates is not None:
        config = dataclasses.replace(config, candidates=args.candidates)
    config = dataclasses.replace(config, extra_negatives=args.extra_negatives)
    result = train_ranker(args.ws, args.run, config)
    s = result["held_out_slates"]
    t = result["temporal"]["recall@20"]
    print(f"ranker: {result['fit']['rounds']} rounds -> {args.run or 'latest run'}/{RANKER_DIR}/")
    print(
        f"held-out slates NDCG@10: ranker {s['ranker']['ndcg@10']['mean']:.4f} vs retrieval "
        f"{s['retrieval']['ndcg@10']['mean']:.4f}; AUC {s['ranker']['auc']['mean']:.4f} vs "
        f"{s['retrieval']['auc']['mean']:.4f}"
    )
    print(
        f"temporal Recall@20: two-tower+ranker {t['two-tower+ranker']['mean']:.4f} vs two-tower "
        f"{t['two-tower']['mean']:.4f} (difference {t['difference']['mean']:+.4f}, 95% CI "
        f"[{t['difference']['lo']:+.4f}, {t['difference']['hi']:+.4f}])"
    )
    return 0

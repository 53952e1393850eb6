"""``tastemaker train``, ``tastemaker train ranker``, ``tastemaker export`` and
``tastemaker index rebuild``.

``train`` feeds the one two-tower from either source: the workspace's features (the lake
pipeline), or ``--interactions FILE --out DIR`` (a user's own interaction log, through
``training.byod``). Every flag left out keeps ``training.train_config.TrainConfig``'s default.
``train ranker`` fits the XGBoost ranking stage against a two-tower run (``training.ranker``);
``train-ranker`` is its old spelling, kept for one release. Torch is imported inside the
handlers so other commands stay light.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from tastemaker.commands import deprecated_alias

# flag -> (TrainConfig field, type); model fields live under TrainConfig.model
_TRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    "epochs": ("epochs", int),
    "batch_size": ("batch_size", int),
    "lr": ("lr", float),
    "lr_schedule": ("lr_schedule", str),
    "temperature": ("temperature", float),
    "uniform_negatives": ("uniform_negatives", int),
    "history_keep": ("history_keep", float),
    "val_fraction": ("val_fraction", float),
    "positives": ("positives", str),
    "user_features": ("user_features", str),
    "max_train_examples": ("max_train_examples", int),
    "patience": ("patience", int),
    "accelerator": ("accelerator", str),
    "precision": ("precision", str),
    "seed": ("seed", int),
}
_MODEL_FLAGS = ("dim", "history_len", "pooling", "members", "friends_len", "user_tags_len")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the two-tower model (on the lake, or on --interactions); "
        "`train ranker`: the ranking stage",
    )
    for flag, (_, typ) in _TRAIN_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=typ, default=None)
    p.add_argument("--devices", default=None, help="number of devices (>1: DDP), or 'auto'")
    p.add_argument(
        "--launcher",
        dest="train_launcher",
        choices=("lightning", "torchdistributor"),
        default=None,
        help="lake mode: who starts the ranks: Lightning (default; or the ones torchrun "
        "started), or Spark's TorchDistributor (--num-processes ranks on the --master session)",
    )
    p.add_argument(
        "--num-processes",
        dest="train_processes",
        type=int,
        default=None,
        help="with --launcher torchdistributor: the number of ranks (default 2)",
    )
    p.add_argument(
        "--master",
        dest="spark_master",
        default=None,
        help="with --launcher torchdistributor: the Spark master (local[N], spark://host:port)",
    )
    p.add_argument("--dim", type=int, default=None, help="vector size (embeddings too)")
    p.add_argument("--history-len", type=int, default=None)
    p.add_argument("--pooling", choices=("mean", "attention", "self-attention"), default=None)
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help="an ensemble of this many two-towers in one model (dim is split between them)",
    )
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lake: after picking the epoch count on valid, retrain on train + valid",
    )
    p.add_argument("--interactions", default=None, help="bring-your-own-data: CSV/TSV/Parquet log")
    p.add_argument("--out", default=None, help="run dir for --interactions mode")
    p.add_argument("--model", default="two-tower", help="recommender for --interactions mode")
    p.add_argument("--artist-meta", default=None, help="artists file with tags (--interactions)")
    p.add_argument(
        "--friends",
        default=None,
        help="two-tower, --interactions: friends file (user_id, friend_id): the user tower "
        "also reads the friends' artists in the interactions file",
    )
    p.add_argument(
        "--user-tags",
        default=None,
        help="two-tower, --interactions: user tags file (user_id, artist_id, tag): the user "
        "tower also reads the tags each user put on their artists in the interactions file",
    )
    p.add_argument(
        "--friends-len", type=int, default=None, help="friends' artists read (--friends)"
    )
    p.add_argument("--user-tags-len", type=int, default=None, help="own tags read (--user-tags)")
    p.add_argument(
        "--init-from",
        default=None,
        help="lake mode: warm-start from this two-tower run dir (e.g. the champion's)",
    )
    p.set_defaults(func=_train)
    stages = p.add_subparsers(dest="stage", metavar="STAGE")
    _ranker_parser(
        stages.add_parser(
            "ranker",
            help="fit the XGBoost ranking stage on logged slates against a --no-refit "
            "two-tower run",
        )
    )
    deprecated_alias(sub, "train-ranker", "train ranker", _ranker_parser)
    _two_stage_parser(
        stages.add_parser(
            "two-stage",
            help="fit the two-stage system (multi-source candidates + a ranker trained for "
            "discovery) with a --no-refit run, measured with the served run",
        )
    )

    e = sub.add_parser("export", help="export a run as a serving bundle (ONNX + FAISS)")
    e.add_argument("--run", default=None, help="run dir (default: the latest run)")
    e.set_defaults(func=_export)

    idx = sub.add_parser("index", help="the serving bundle's artist index")
    kinds = idx.add_subparsers(dest="index_command", required=True)
    rb = kinds.add_parser(
        "rebuild",
        help="re-embed the current catalogue with the current model and publish a bundle "
        "(no training; new artists are placed by their tags)",
    )
    rb.add_argument("--run", default=None, help="run dir (default: the latest run)")
    rb.set_defaults(func=_rebuild)


def _ranker_parser(p: argparse.ArgumentParser) -> None:
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


def _two_stage_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fit-run",
        required=True,
        help="a `tastemaker train --no-refit` run: its candidates at the validation cutoff are "
        "out of sample",
    )
    p.add_argument(
        "--run", default=None, help="the served two-tower run (default: --fit-run); gets it"
    )
    p.add_argument("--two-tower", type=int, default=None, help="two-tower candidates")
    p.add_argument("--neighbours", type=int, default=None, help="neighbour candidates")
    p.add_argument("--trending", type=int, default=None, help="trending candidates")
    p.set_defaults(func=_train_two_stage)


def _train_two_stage(args: argparse.Namespace) -> int:
    from data.features.candidates import CandidateConfig
    from jobs.two_stage import train_two_stage
    from training.two_stage import TwoStageConfig

    depths = {
        k: getattr(args, k)
        for k in ("two_tower", "neighbours", "trending")
        if getattr(args, k) is not None
    }
    config = TwoStageConfig(candidates=dataclasses.replace(CandidateConfig(), **depths))
    result = train_two_stage(args.ws, args.fit_run, args.run, config)
    t = result["test"]["recall@20"]
    print(f"two-stage ranker: {result['fit']['rounds']} rounds -> {result['run_id']}/two_stage/")
    for other in ("retrieval alone", "itemknn (tuned)"):
        d = t[f"two-stage − {other}"]
        print(
            f"test Recall@20: two-stage {t['two-stage']['mean']:.4f} vs {other} "
            f"{t[other]['mean']:.4f} (difference {d['mean']:+.4f}, 95% CI "
            f"[{d['lo']:+.4f}, {d['hi']:+.4f}])"
        )
    return 0


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` that ``train``'s flags ask for (defaults for the flags left out)."""
    from training.train_config import TrainConfig

    base = TrainConfig()
    kw = {
        field: getattr(args, flag)
        for flag, (field, _) in _TRAIN_FLAGS.items()
        if getattr(args, flag, None) is not None
    }
    if getattr(args, "refit", None) is not None:
        kw["refit"] = args.refit
    if getattr(args, "devices", None) is not None:
        kw["devices"] = args.devices if args.devices == "auto" else int(args.devices)
    model_kw = {f: getattr(args, f) for f in _MODEL_FLAGS if getattr(args, f, None) is not None}
    if "dim" in model_kw:
        model_kw["embed_dim"] = model_kw["dim"]
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **model_kw), **kw)


def _train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.interactions or args.out:
        if not (args.interactions and args.out):
            raise ValueError(
                "bring-your-own-data mode needs both --interactions FILE and --out DIR"
            )
        from training.byod import train_interactions

        out = train_interactions(
            args.interactions,
            args.out,
            args.model,
            args.artist_meta,
            config,
            friends_path=args.friends,
            user_tags_path=args.user_tags,
        )
        print(f"trained {args.model} on {args.interactions} -> {out}")
        return 0
    if args.settings.train_launcher == "torchdistributor":
        # rank 0 printed the summary (TorchDistributor passes the ranks' output on)
        _train_under_torch_distributor(args, config)
        return 0
    from training.train import train_two_tower

    run_dir = train_two_tower(args.ws, config, init_from=args.init_from)
    from pytorch_lightning.utilities import rank_zero_only

    from core.workspace import RunDir

    if getattr(rank_zero_only, "rank", 0) != 0:  # --devices > 1: every rank runs this command
        return 0

    metrics = json.loads(RunDir(run_dir).metrics.read_text())["validation"]
    print(f"run {run_dir}")
    print(f"val/recall@20 {metrics['val/recall@20']:.4f}  val/ndcg@20 {metrics['val/ndcg@20']:.4f}")
    return 0


def rank_argv(args: argparse.Namespace, processes: int) -> list[str]:
    """The command line each rank runs under ``--launcher torchdistributor``: the same
    ``train`` (every flag given, the workspace made absolute) with Lightning over the ranks
    ``torchrun`` started, ``--devices`` = the number of processes."""
    argv = ["--workspace", str(args.ws.root)] + (["-v"] if args.verbose else [])
    argv += ["train", "--launcher", "lightning", "--devices", str(processes)]
    for flag in (*_TRAIN_FLAGS, *_MODEL_FLAGS, "init_from"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    if getattr(args, "refit", None) is not None:
        argv.append("--refit" if args.refit else "--no-refit")
    return argv


def _train_under_torch_distributor(args: argparse.Namespace, config: Any) -> None:
    """Start the ranks through Spark's TorchDistributor; check that they wrote a new run."""
    from pathlib import Path

    from training.distributor import run_under_torch_distributor

    processes = args.settings.train_processes
    if args.devices is not None and str(args.devices) != str(processes):
        raise ValueError(
            f"--devices {args.devices} with --launcher torchdistributor: the ranks are "
            f"--num-processes ({processes}); leave --devices out"
        )
    pointer = args.ws.latest_run_pointer
    before = pointer.read_text() if pointer.is_file() else None
    cli = Path(__file__).resolve().parents[1] / "cli.py"
    run_under_torch_distributor(
        args.settings,
        cli,
        rank_argv(args, processes),
        processes,
        use_gpu=config.accelerator in ("gpu", "cuda"),
    )
    if not pointer.is_file() or pointer.read_text() == before:
        raise RuntimeError("TorchDistributor's ranks finished without writing a new run")


def _train_ranker(args: argparse.Namespace) -> int:
    from jobs.ranker import train_ranker
    from models.ranker import RankerConfig
    from training.ranker import RANKER_DIR, RankerJobConfig

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


def _export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.ws, args.run)
    print(f"bundle {bundle}")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.ws, args.run, rebuild=True)
    print(f"bundle {bundle}")
    return 0

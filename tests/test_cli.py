"""The ``tastemaker`` program: every command parses, old spellings still work (with one
deprecation line), the settings are built once from the environment and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tastemaker.cli import build_parser, main, parse_args

COMMANDS = [
    ["world"],
    ["import", "hetrec"],
    ["ingest"],
    ["publish"],
    ["subscribe"],
    ["features"],
    ["train"],
    ["train", "ranker"],
    ["train-ranker"],
    ["export"],
    ["index", "rebuild"],
    ["evaluate"],
    ["tune"],
    ["recommend"],
    ["compare"],
    ["dashboard"],
    ["serve"],
    ["precompute"],
    ["daily"],
    ["models"],
    ["simulate"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: tastemaker " + " ".join(command) in capsys.readouterr().out


def test_train_ranker_old_and_new_spellings_parse_the_same(tmp_path: Path) -> None:
    flags = ["--rounds", "5", "--eta", "0.1", "--extra-negatives", "2", "--run", "r"]
    ws = ["--workspace", str(tmp_path)]
    new = parse_args([*ws, "train", "ranker", *flags])
    old = parse_args([*ws, "train-ranker", *flags])
    assert new.func is old.func
    fields = ("run", "candidates", "rounds", "max_depth", "eta", "threads", "extra_negatives")
    assert [getattr(new, f) for f in fields] == [getattr(old, f) for f in fields]
    assert [getattr(new, f) for f in fields] == ["r", None, 5, None, 0.1, None, 2]
    assert not getattr(new, "deprecated", None)
    assert old.deprecated == "tastemaker train-ranker is deprecated; use tastemaker train ranker"
    assert parse_args([*ws, "train"]).func is not new.func  # `train` alone: the two-tower


def test_the_old_spelling_prints_one_deprecation_line(tmp_path: Path, capsys) -> None:
    # an empty workspace: the job fails fast (no run), after the deprecation line
    assert main(["--workspace", str(tmp_path), "train-ranker"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tastemaker train-ranker is deprecated; use tastemaker train ranker"
    assert sum("deprecated" in line for line in err) == 1
    assert "no finished run" in err[-1]
    assert main(["--workspace", str(tmp_path), "train", "ranker"]) == 2
    assert "deprecated" not in capsys.readouterr().err


def test_settings_are_the_environment_with_the_command_line_over_it(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TASTEMAKER_WORKSPACE", str(tmp_path / "from-env"))
    monkeypatch.setenv("TASTEMAKER_ACCOUNTS_URL", "sqlite:///env-accounts.sqlite")
    monkeypatch.setenv("TASTEMAKER_REGISTRY_URL", "sqlite:///env-registry.sqlite")
    args = parse_args(["ingest"])
    assert args.settings.workspace == tmp_path / "from-env" == args.ws.root
    assert args.settings.accounts_url == "sqlite:///env-accounts.sqlite"
    assert args.settings.registry_url == "sqlite:///env-registry.sqlite"
    args = parse_args(
        ["--workspace", str(tmp_path / "flag"), "ingest", "--accounts-url", "sqlite:///a.sqlite"]
    )
    assert args.ws.root == tmp_path / "flag" and args.ws.root.is_dir()
    assert args.settings.accounts_url == "sqlite:///a.sqlite"
    for command in (["world"], ["daily"]):  # every job that reads the account table
        assert parse_args(command).settings.accounts_url == "sqlite:///env-accounts.sqlite"
    args = parse_args(["serve", "--bundle", "b", "--online-store", "redis://h:1/0"])
    assert (args.settings.bundle_dir, args.settings.online_store_url) == (
        Path("b"),
        "redis://h:1/0",
    )
    args = parse_args(["precompute", "--slates", str(tmp_path / "s.sqlite")])
    assert args.settings.slate_store_target == str(tmp_path / "s.sqlite")


def test_the_workspace_is_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASTEMAKER_WORKSPACE", raising=False)
    args = parse_args(["world"])
    assert args.settings.workspace == tmp_path / "workspace" == args.ws.root


def test_recommend_asks_for_the_api_default_k(tmp_path: Path, monkeypatch) -> None:
    import evaluation.runs

    asked: list[int] = []

    def fake_recommend(run_dir, k, users):
        asked.append(k)
        raise ValueError("stop here")

    monkeypatch.setattr(evaluation.runs, "recommend_run", fake_recommend)
    base = ["--workspace", str(tmp_path), "recommend", "--run", "r", "--all-users"]
    assert main([*base, "--out", str(tmp_path / "o.parquet")]) == 2
    monkeypatch.setenv("TASTEMAKER_DEFAULT_K", "7")
    assert main([*base, "--out", str(tmp_path / "o.parquet")]) == 2
    assert main([*base, "--k", "50", "--out", str(tmp_path / "o.parquet")]) == 2
    assert asked == [10, 7, 50]


def test_invalid_settings_are_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TASTEMAKER_DEFAULT_K", "1000")
    assert main(["--workspace", str(tmp_path), "world"]) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_a_too_short_secret_is_refused_without_printing_it(monkeypatch, capsys, tmp_path) -> None:
    from tastemaker.cli import main

    monkeypatch.setenv("TASTEMAKER_PSEUDONYM_KEY", "tiny-secret")
    assert main(["--workspace", str(tmp_path), "token", "--user", "a"]) == 2
    err = capsys.readouterr().err
    assert "pseudonym_key" in err and "16 characters" in err and "tiny-secret" not in err


def test_the_registry_has_its_own_database(tmp_path: Path, monkeypatch, capsys) -> None:
    # an account table in PostgreSQL (unreachable here) must not pull the registry there
    monkeypatch.setenv("TASTEMAKER_ACCOUNTS_URL", "postgresql://postgres@127.0.0.1:1/pii")
    monkeypatch.delenv("TASTEMAKER_REGISTRY_URL", raising=False)
    assert main(["--workspace", str(tmp_path / "ws"), "models", "list"]) == 0
    assert (tmp_path / "ws" / "registry.sqlite").is_file()
    monkeypatch.setenv("TASTEMAKER_REGISTRY_URL", f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    assert main(["--workspace", str(tmp_path / "ws2"), "models", "list"]) == 0
    assert (tmp_path / "elsewhere.sqlite").is_file()
    assert not (tmp_path / "ws2" / "registry.sqlite").exists()


def test_daily_benchmarks_flag() -> None:
    from evaluation.gate import DEFAULT_BENCHMARKS
    from tastemaker.commands.daily import _benchmarks

    args = build_parser().parse_args(["daily", "--date", "2024-04-14"])
    assert _benchmarks(args.benchmarks) == DEFAULT_BENCHMARKS
    assert _benchmarks("none") == ()
    assert _benchmarks("itemknn, als") == ("itemknn", "als")
    with pytest.raises(ValueError, match="unknown"):
        _benchmarks("itemknn,two-tower")


def test_daily_fits_the_two_stage_system_unless_told_not_to() -> None:
    assert build_parser().parse_args(["daily", "--date", "2024-04-14"]).two_stage is True
    off = build_parser().parse_args(["daily", "--date", "2024-04-14", "--no-two-stage"])
    assert off.two_stage is False

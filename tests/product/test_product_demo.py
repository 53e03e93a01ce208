"""glance demo: argument checks (the full demo is measured with `time make demo`)."""

from __future__ import annotations

from pathlib import Path

from glance.cli.main import build_parser, main


def test_demo_defaults() -> None:
    args = build_parser().parse_args(["demo"])
    assert args.out == Path("demo-run")
    assert args.preset == "fast" and args.n_explain == 8 and args.n_digits == 10_000


def test_demo_rejects_bad_arguments_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--n-digits", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["glance: error: --n-digits must be at least 100; got 5"]
    assert main(["demo", "--out", str(tmp_path), "--n-explain", "0"]) == 2
    assert "--n-explain" in capsys.readouterr().err


def test_demo_refuses_to_overwrite_a_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    rc = main(["demo", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    assert rc == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing was generated

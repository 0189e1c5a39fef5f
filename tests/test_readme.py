"""The README's reference sections say what the code does."""

from __future__ import annotations

from pathlib import Path

from streams.broker import kafka_version
from streams.settings import Settings, reference_table
from streams.topics import TopicRole, topic_specs


def test_configuration_reference_lists_every_setting_with_its_doc(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    missing = [name for name, _, doc in reference_table() if f"`{name}`" not in readme or doc not in readme]
    assert missing == []


def test_topics_table_names_every_topic_with_its_cleanup_policy(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    for spec in topic_specs(Settings()):
        if spec.role in (TopicRole.INPUT, TopicRole.OUTPUT):
            assert f"| `{spec.name}` |" in readme and f"| {spec.cleanup_policy} |" in readme


def test_readme_names_the_kafka_version_in_use(repo_root: Path) -> None:
    assert f"Apache Kafka **{kafka_version()}**" in (repo_root / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command(repo_root: Path) -> None:
    assert "make test   #" in (repo_root / "README.md").read_text()
    assert (repo_root / ".ci" / "run").read_text().strip().endswith("exec make test")


def test_readme_names_every_command_and_the_demo_model_it_trains(repo_root: Path) -> None:
    import argparse

    from streams.cli import build_parser

    readme = (repo_root / "README.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert [name for name in sub.choices if f"packwise {name}" not in readme] == []
    demo = sub.choices["demo"].parse_args([])
    assert f"({demo.train_products:,} products, shipped in" in readme  # the warm-up history the demo trains on
    for flag in ("--live-only", "--once"):  # how `watch` starts, as the README says
        assert flag in readme and flag in sub.choices["watch"].format_help()

"""deploy/prometheus/alerts.yml and deploy/grafana/pollbridge.json: the alerts pass their
promtool unit tests, and they and the dashboard use only series the daemon's /metrics serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = RULES.with_name("alerts_test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "pollbridge.json"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)",
)
# the series names each metric type is exposed as (no _created: bridge/metrics.py drops it)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
_METRIC_NAME = re.compile(r"\b(?:pollbridge|process|python)_[a-z0-9_]*[a-z0-9]")


def _served() -> set[str]:
    """Every series name the daemon's registry can expose."""
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def _dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests():
    """promtool test rules alerts_test.yml: each alert fires when it should and not before."""
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    """Each alert of alerts.yml is expected to fire in alerts_test.yml, and expected not to
    fire at some other time."""
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.MULTILINE)
    assert len(alerts) >= 4
    cases = re.findall(
        r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text(), re.MULTILINE
    )
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert set(alerts) <= firing, set(alerts) - firing
    assert set(alerts) <= quiet, set(alerts) - quiet
    for wanted in (
        "PollbridgeSourceStale",
        "PollbridgeDeadDeliveries",
        "PollbridgeListenerPaused",
        "PollbridgeBreakerOpen",
    ):
        assert wanted in alerts


@pytest.mark.parametrize("path", [RULES, DASHBOARD], ids=["alerts", "dashboard"])
def test_every_metric_used_is_served(path: Path):
    """A name in the alerts or the dashboard that /metrics does not serve would never match:
    each one is in the registry bridge/metrics.py builds."""
    used = set(_METRIC_NAME.findall(path.read_text()))
    assert len(used) >= 5
    assert used - _served() == set()


def test_dashboard_covers_the_pollbridge_metrics():
    """Every pollbridge_* series has a panel (a new metric gets one too)."""
    used = {name for query in _dashboard_queries() for name in _METRIC_NAME.findall(query)}
    served = {
        n for n in _served() if n.startswith("pollbridge_") and not n.endswith(("_sum", "_count"))
    }
    assert served - used == set()


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    """Every panel's query parses (promtool checks them as recording rules, with the
    dashboard's variables filled in)."""
    queries = _dashboard_queries()
    assert len(queries) >= 10
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, query in enumerate(queries):
        promql = re.sub(r"\$(instance|source|listener)\b", ".*", query)
        promql = promql.replace("$__rate_interval", "5m")
        rules += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(promql)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(rules) + "\n")
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_deployment_doc_lists_every_pollbridge_metric():
    """The metrics table of docs/deployment.md names each pollbridge_* metric, and only those."""
    documented = set(re.findall(r"^\| `(pollbridge_\w+)` \|", DEPLOYMENT_DOC.read_text(), re.M))
    families = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
        if family.name.startswith("pollbridge_")
    }
    assert documented == families

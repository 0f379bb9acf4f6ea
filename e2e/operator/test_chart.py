"""The Helm chart, linted by the real Helm engine (helm-sdkpy's Lint action)."""

import asyncio
import shutil
from pathlib import Path

import yaml

from oplib import CHART, ROOT

ERROR_SEVERITY = 3  # helm's support.ErrorSev


def lint(path: Path) -> dict:
    from helm_sdkpy import Configuration
    from helm_sdkpy.chart import Lint

    return asyncio.run(Lint(Configuration()).run(str(path)))


def errors(result: dict) -> list:
    msgs = [m for m in result.get("Messages") or [] if m.get("Severity", 0) >= ERROR_SEVERITY]
    return msgs + list(result.get("Errors") or [])


def test_chart_lints_clean() -> None:
    result = lint(CHART)
    assert result["TotalChartsLinted"] == 1
    assert errors(result) == [], result


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint is not vacuous: a template error fails it."""
    broken = tmp_path / "garage-operator"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.missing.deeper }}\n")
    assert errors(lint(broken))


def test_values_name_every_knob_the_issue_asks_for() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ["image", "resources", "leaderElection", "watchNamespaces"]:
        assert key in values, key


def test_rbac_is_least_privilege() -> None:
    text = (CHART / "templates" / "rbac.yaml").read_text()
    assert '"*"' not in text and "'*'" not in text, "no wildcards"
    for res in ["garageclusters", "statefulsets", "services", "configmaps", "secrets",
                "poddisruptionbudgets", "events", "leases", "pods", "persistentvolumeclaims", "nodes"]:
        assert res in text, res


def test_chart_ships_the_generated_crds() -> None:
    got = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    want = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert got == want and len(got) == 3

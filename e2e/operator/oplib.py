"""Shared paths and helpers of the operator's offline validation tests.

They need `target/release/operator` (cargo build --release -p operator) and the packages
of requirements.txt; nothing here talks to a Kubernetes cluster.
"""

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_BIN = Path(os.environ.get("OPERATOR_BIN", ROOT / "target" / "release" / "operator"))
CHART = ROOT / "charts" / "garage-operator"
# The oldest and newest Kubernetes minors we validate against.
K8S_VERSIONS = ["1.33", "1.37"]


def load_all(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(operator_bin: Path, manifest: Path) -> list[dict]:
    out = subprocess.run(
        [str(operator_bin), "render", "--example", str(manifest)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]

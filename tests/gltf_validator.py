"""The Khronos glTF-Validator for the GLB tests, through scripts/validate_gltf.js.

The validator is the npm package `gltf-validator`, installed by `make gltf-validator` (which `.ci/run`
calls) into the git-ignored `.node/` folder at the version the Makefile pins. Where Node or the package
is missing, the tests that need it skip and say why.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "validate_gltf.js"
PACKAGE = REPO / ".node" / "node_modules" / "gltf-validator" / "package.json"


def missing() -> str | None:
    """Why the validator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "no Node.js on this machine: the glTF-Validator is an npm package (apt-get install nodejs)"
    if not PACKAGE.is_file():
        return "the glTF-Validator is not installed: `make gltf-validator` (npm install into .node/)"
    return None


def validate(path: Path) -> dict:
    """The validator's JSON report on the glTF file at `path`, or skip when Node or the validator is missing."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    result = subprocess.run([shutil.which("node"), str(SCRIPT), str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode not in (0, 1):  # 1: the report has errors, which the caller asserts on
        raise RuntimeError(f"scripts/validate_gltf.js failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def counts(report: dict) -> dict[str, int]:
    """{"numErrors", "numWarnings", "numInfos", "numHints"} of a report."""
    return {k: report["issues"][k] for k in ("numErrors", "numWarnings", "numInfos", "numHints")}


def issue_summary(report: dict) -> str:
    """One line per issue: severity, code, message and JSON pointer (for assertion messages)."""
    severities = {0: "error", 1: "warning", 2: "info", 3: "hint"}
    return "\n".join(f"{severities.get(m['severity'], m['severity'])} {m['code']}: {m['message']} at {m.get('pointer', '')}"
                     for m in report["issues"]["messages"])

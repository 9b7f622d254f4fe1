"""envs/*.yaml (conda environments of the rule groups) pin the same versions as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def project_pins() -> dict[str, SpecifierSet]:
    """name -> specifier from pyproject (dependencies and extras) and the Makefile's --no-deps installs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    lines += re.findall(r"--no-deps\s+(\S+==\S+)", (REPO / "Makefile").read_text())
    return {canonicalize_name(r.name): r.specifier for r in map(Requirement, lines)}


def env_requirements(env_file: Path) -> tuple[list[str], list[str]]:
    """(conda dependency strings, pip lines) of a conda environment file."""
    deps = yaml.safe_load(env_file.read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    return conda, pip


def mismatches(requirements: list[str], pins: dict[str, SpecifierSet]) -> list[str]:
    """Requirements whose package pyproject does not know, or whose version specifier differs from it."""
    bad = []
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in pins:
            bad.append(f"{line}: not a dependency in pyproject.toml")
        elif req.specifier != pins[name]:
            bad.append(f"{line}: pyproject.toml says {name}{pins[name]}")
    return bad


def pip_requirements(pip_lines: list[str]) -> list[str]:
    return [line for line in pip_lines if not line.startswith("-")]  # options, -e, --extra-index-url


def test_there_is_an_env_per_rule_group():
    assert {p.stem for p in ENVS} >= {"train", "report"}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(env_file):
    conda, pip = env_requirements(env_file)
    assert mismatches(pip_requirements(pip), project_pins()) == []
    assert "torch==2.13.0" in pip  # torch is always pinned explicitly: it decides CPU vs CUDA wheels

    # The package itself, installed from the repository root (pip runs in the env file's directory).
    editable = [line.split(None, 1)[1] for line in pip if line.startswith("-e ")]
    assert editable and (env_file.parent / editable[0] / "pyproject.toml").is_file()

    # The conda python satisfies requires-python.
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = [d.split("=", 1)[1] for d in conda if d.startswith("python=")]
    assert python and SpecifierSet(requires).contains(python[0] + ".0"), (python, requires)


@pytest.mark.parametrize("script", sorted((REPO / "envs").glob("*.post-deploy.sh")), ids=lambda p: p.name)
def test_post_deploy_pins_agree(script):
    installs = re.findall(r"pip install [^\n]*?(\S+==\S+)", script.read_text())
    assert installs and mismatches(installs, project_pins()) == []


def test_mismatch_is_caught():
    pins = project_pins()
    assert pins["torch"] == SpecifierSet("==2.13.0")
    assert mismatches(["torch==2.12.0"], pins) == ["torch==2.12.0: pyproject.toml says torch==2.13.0"]
    assert mismatches(["transformers"], pins)  # unpinned where pyproject pins is a mismatch too
    assert mismatches(["not-a-dependency==1.0"], pins)
    assert mismatches(["torch==2.13.0", "numpy>=1.26"], pins) == []

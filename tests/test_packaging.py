"""pyproject.toml as setuptools reads it when pip installs the project: no deprecation warning."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_the_license_is_an_spdx_string_that_the_required_setuptools_understands():
    """A `license = {text = ...}` table makes every `pip install` print SetuptoolsDeprecationWarning;
    the SPDX string needs setuptools >= 77 in the build requirements (PEP 639)."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert config["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in config["build-system"]["requires"]
    assert not any(c.startswith("License ::") for c in config["project"].get("classifiers", []))  # refused beside SPDX


def test_setuptools_applies_the_project_table_without_a_warning(monkeypatch):
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(PYPROJECT.parent)  # readme and packages are found relative to the project
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any deprecation warning fails here, as it would print at install
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert dist.get_name() == "qfactory" and dist.metadata.license_expression == "Apache-2.0"

"""The dependency locks: each requirements*.txt is compiled (``./dev lock``) from its requirements*.in ranges, with
every package pinned to one version and its hashes, so what Azure and CI install is exactly what was tested."""

import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ["requirements", "requirements-dev", "requirements-bench", "requirements-infra"]
PYTHONS = [
    {"python_version": "3.12", "python_full_version": "3.12.8"},
    {"python_version": "3.13", "python_full_version": "3.13.1"},
]


def _entries(text: str) -> list[str]:
    """Logical lines without comments: continuation backslashes joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.split(" #")[0].strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _pins(name: str) -> list[tuple[Requirement, list[str]]]:
    pins = []
    for entry in _entries((ROOT / f"{name}.txt").read_text()):
        parts = entry.split(" --hash=")
        pins.append((Requirement(parts[0].strip()), [h.strip() for h in parts[1:]]))
    return pins


def _ranges(name: str) -> list[Requirement]:
    found = []
    for entry in _entries((ROOT / f"{name}.in").read_text()):
        if entry.startswith("-r "):
            found += _ranges(entry[3:].strip().removesuffix(".in"))
        else:
            found.append(Requirement(entry))
    return found


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_has_one_exact_version_and_its_hashes(name):
    pins = _pins(name)
    assert pins, name
    for requirement, hashes in pins:
        [spec] = requirement.specifier
        assert spec.operator == "==", f"{name}.txt: {requirement} is not pinned"
        assert hashes and all(h.startswith("sha256:") and len(h) == 71 for h in hashes), f"{name}.txt: {requirement}"


@pytest.mark.parametrize("name", LOCKS)
@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: p["python_version"])
def test_each_lock_holds_what_its_ranges_ask_for_on_each_supported_python(name, python):
    pins = _pins(name)
    for wanted in _ranges(name):
        if wanted.marker is not None and not wanted.marker.evaluate(python):
            continue
        versions = [
            next(iter(pin.specifier)).version
            for pin, _ in pins
            if canonicalize_name(pin.name) == canonicalize_name(wanted.name)
            and (pin.marker is None or Marker(str(pin.marker)).evaluate(python))
        ]
        assert len(versions) == 1, f"{name}.txt locks {wanted.name} {versions} for Python {python['python_version']}"
        assert wanted.specifier.contains(versions[0], prereleases=True), f"{name}.txt: {wanted.name} {versions[0]}"


def test_the_app_lock_and_the_test_lock_agree_on_every_shared_package():
    def versions(name):
        found: dict[str, set[str]] = {}
        for requirement, _ in _pins(name):
            found.setdefault(canonicalize_name(requirement.name), set()).add(str(requirement.specifier))
        return found

    app, dev = versions("requirements"), versions("requirements-dev")
    assert {name: dev.get(name) for name in app} == app  # tests run on exactly the versions Azure installs

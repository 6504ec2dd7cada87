"""Checks that every extra of pyproject.toml resolves to wheels on every supported platform.

    python .ci/check_platforms.py [--pyproject PATH] [--platform NAME] [--extra NAME]

For each platform (macOS arm64, Linux aarch64, Linux x86_64) and Python version, the
requirements of each extra are first evaluated for that platform (environment markers: pip
evaluates a requirement's markers for the machine it runs on, not for ``--platform``), then
resolved by ``pip install --dry-run --only-binary=:all: --platform ... --python-version ...``
against the package index: metadata only, nothing is installed. Prints one line per check and
exits 1 if any fails, with pip's reason. A resolution that needs a pre-release is a failure.

Python versions: the oldest the project supports, and the newest with wheels of everything an
extra needs: JAX's newest for the core and the docs, TensorFlow's newest for the extras that
install it (CLU imports TensorFlow).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from typing import NamedTuple

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The oldest Python the project supports and the newest that jaxlib publishes wheels for.
PYTHONS = ("3.11", "3.14")
#: With TensorFlow: the newest Python it has a release (not a release candidate) for.
TENSORFLOW_PYTHONS = ("3.11", "3.13")
TENSORFLOW = ("tensorflow", "tensorflow-cpu")


class Platform(NamedTuple):
    """A supported platform: its wheel tags and its environment markers."""

    name: str
    tags: tuple[str, ...]  # pip --platform tags, any of which a wheel may carry
    markers: dict[str, str]  # the environment markers of such a machine


def _manylinux(machine: str) -> tuple[str, ...]:
    # glibc 2.17 (manylinux2014) up to 2.35: Ubuntu 22.04, Debian 12 and the like run these.
    return (
        f"manylinux2014_{machine}",
        *(f"manylinux_2_{minor}_{machine}" for minor in range(17, 36)),
        f"linux_{machine}",
    )


PLATFORMS = (
    Platform(
        "macOS arm64",
        tuple(
            f"macosx_{major}_0_{arch}"
            for major in range(11, 16)
            for arch in ("arm64", "universal2")
        ),
        {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
            "os_name": "posix",
        },
    ),
    Platform(
        "Linux aarch64",
        _manylinux("aarch64"),
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "aarch64",
            "os_name": "posix",
        },
    ),
    Platform(
        "Linux x86_64",
        _manylinux("x86_64"),
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
        },
    ),
)


def requirements(project: dict, extra: str | None, environment: dict[str, str]) -> list[str]:
    """The requirements of the core (``extra=None``) or of an extra, for one environment.

    Markers are evaluated here; an extra that names the project itself (``pkg[other]``) is
    expanded. The result carries no markers.
    """
    name = project["name"]
    extras = project.get("optional-dependencies", {})
    listed = project.get("dependencies", []) if extra is None else extras[extra]
    out: list[str] = []
    for text in listed:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(
            {**environment, "extra": extra or ""}
        ):
            continue
        if requirement.name.replace("-", "_") == name.replace("-", "_"):
            for inner in sorted(requirement.extras):
                out += requirements(project, inner, environment)
            continue
        requirement.marker = None
        out.append(str(requirement))
    return out


class Result(NamedTuple):
    """One resolution: an extra on a platform and Python version."""

    platform: str
    python: str
    extra: str
    ok: bool
    detail: str


def resolve(platform: Platform, python: str, reqs: list[str]) -> tuple[bool, str]:
    """Resolves ``reqs`` for the platform with pip, metadata only; (ok, pip's verdict)."""
    with tempfile.TemporaryDirectory() as target:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--target",
            target,
            "--disable-pip-version-check",
            "--quiet",
            "--report",
            "-",
            *(arg for tag in platform.tags for arg in ("--platform", tag)),
            *reqs,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        return False, " ".join(errors) or done.stderr.strip()[-500:]
    picked = re.findall(r'"name": "([^"]+)",\s*"version": "([^"]+)"', done.stdout)
    pre = [f"{n}=={v}" for n, v in picked if re.search(r"(a|b|rc|dev)\d", v)]
    if pre:
        return False, f"only with pre-releases: {', '.join(pre)}"
    versions = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in picked}
    shown = ", ".join(
        f"{n} {versions[n]}"
        for n in ("jax", "jaxlib", "tensorflow", "tensorflow-cpu")
        if n in versions
    )
    return True, shown


def _environment(platform: Platform, python: str) -> dict[str, str]:
    return {
        **default_environment(),
        **platform.markers,
        "python_version": python,
        "python_full_version": f"{python}.0",
    }


def checks(
    project: dict, platforms: tuple[Platform, ...], extras: list[str | None]
) -> Iterator[Result]:
    """Resolves each extra on each platform, for each Python version it supports."""
    for platform in platforms:
        for extra in extras:
            # The extra's Pythons: with TensorFlow on some platform, TensorFlow's range.
            needs_tensorflow = any(
                Requirement(r).name in TENSORFLOW
                for p in PLATFORMS
                for r in requirements(project, extra, _environment(p, PYTHONS[0]))
            )
            for python in TENSORFLOW_PYTHONS if needs_tensorflow else PYTHONS:
                reqs = requirements(project, extra, _environment(platform, python))
                ok, detail = resolve(platform, python, reqs)
                yield Result(platform.name, python, extra or "(core)", ok, detail)


def main(argv: list[str] | None = None) -> int:
    """Runs the checks; 1 if any fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=pathlib.Path, default=ROOT / "pyproject.toml")
    parser.add_argument(
        "--platform", action="append", choices=[p.name for p in PLATFORMS], help="default: all"
    )
    parser.add_argument("--extra", action="append", help="default: the core and every extra")
    args = parser.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]
    platforms = tuple(p for p in PLATFORMS if not args.platform or p.name in args.platform)
    extras = args.extra or [None, *project.get("optional-dependencies", {})]
    failed = 0
    for result in checks(project, platforms, extras):
        verdict = "ok  " if result.ok else "FAIL"
        print(
            f"{verdict} {result.platform:<14} Python {result.python:<5} {result.extra:<12} "
            f"{result.detail}",
            flush=True,
        )
        failed += not result.ok
    print(
        f"{failed} of the checks failed." if failed else "Every extra resolves on every platform."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Packaging: the extras per platform (.ci/check_platforms.py), and the wheel on its own."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

import flax_cyclic

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / ".ci" / "check_platforms.py"


def _check_platforms():
    spec = importlib.util.spec_from_file_location("check_platforms", CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_platforms = _check_platforms()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PLATFORMS = {platform.name: platform for platform in check_platforms.PLATFORMS}


def _requirements(extra, platform, python="3.11"):
    environment = check_platforms._environment(PLATFORMS[platform], python)
    return [
        re.split(r"[<>=!~; ]", r)[0]
        for r in check_platforms.requirements(PROJECT, extra, environment)
    ]


@pytest.mark.parametrize(
    ("platform", "tensorflow"),
    [
        ("macOS arm64", "tensorflow"),
        ("Linux aarch64", "tensorflow"),
        ("Linux x86_64", "tensorflow-cpu"),
    ],
)
def test_each_platform_gets_the_tensorflow_that_has_wheels_for_it(platform, tensorflow):
    other = ({"tensorflow", "tensorflow-cpu"} - {tensorflow}).pop()
    assert not {"tensorflow", "tensorflow-cpu", "clu"} & set(_requirements("tensorboard", platform))
    for extra in ("clu", "examples", "dev"):
        names = _requirements(extra, platform)
        assert tensorflow in names
        assert other not in names


def test_extras_that_name_the_project_are_expanded():
    examples = _requirements("examples", "Linux x86_64")
    assert "clu" in examples  # from flax_cyclic[clu]
    assert "grain" in examples
    assert not any(name.startswith("flax_cyclic") for name in examples)
    assert _requirements(None, "macOS arm64") == [
        "jax",
        "flax",
        "optax",
        "orbax-checkpoint",
        "rich",
    ]


def _run_check(*args):
    return subprocess.run(
        [sys.executable, str(CHECK), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.mark.slow
def test_the_clu_extra_resolves_on_apple_silicon():
    done = _run_check("--platform", "macOS arm64", "--extra", "clu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   macOS arm64    Python 3.11  clu" in done.stdout
    assert "tensorflow 2." in done.stdout


@pytest.mark.slow
def test_the_check_fails_if_tensorflow_cpu_is_required_everywhere(tmp_path):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    unconditional, count = re.subn(r'"tensorflow-cpu>=2\.16;[^"]*"', '"tensorflow-cpu>=2.16"', text)
    assert count == 1
    unconditional = re.sub(r'\n\s*"tensorflow>=2\.16;[^"]*",', "", unconditional)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(unconditional, encoding="utf-8")
    done = _run_check(
        "--pyproject", str(pyproject), "--platform", "macOS arm64", "--platform", "Linux aarch64",
        "--extra", "clu",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 4  # two platforms, two Pythons
    assert all("No matching distribution found for tensorflow-cpu" in line for line in failures)
    assert done.stdout.rstrip().endswith("4 of the checks failed.")


README_FIRST_EXAMPLE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_the_wheel_alone_runs_the_readme_example_without_tensorflow(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"flax_cyclic-{flax_cyclic.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "flax_cyclic/py.typed" in names
    assert not any(name.startswith(("tests/", "examples/")) for name in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    example = README_FIRST_EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))[1]
    script = tmp_path / "example.py"
    script.write_text(
        example
        + "\nimport sys, flax_cyclic\n"
        + "print('version', flax_cyclic.__version__, flax_cyclic.__file__)\n"
        + "print('imported', sorted(m for m in ('tensorflow', 'clu') if m in sys.modules))\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [str(python), str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "[0.001, 0.0035, 0.006, 0.0035, 0.001]"  # the README's printed result
    assert f"version {flax_cyclic.__version__} {venv}" in lines[1]  # the installed wheel
    assert lines[2] == "imported []"
    # Without the extra, TensorFlow and CLU are not even installed.
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    )
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert not {"tensorflow", "tensorflow-cpu", "clu"} & installed

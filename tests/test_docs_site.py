"""The documentation site builds strictly (warnings are errors), API reference included."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import flax_cyclic

ROOT = Path(__file__).resolve().parents[1]
MISSING = [
    name for name in ("mkdocs", "material", "mkdocstrings") if not importlib.util.find_spec(name)
]

pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: pip install -e '.[docs]' (part of '.[dev]')",
)

# Docstring text the API page must carry, one sentence per kind of object.
DOCSTRINGS = {
    "cyclic_schedule": "Cyclical learning rate (Smith, 2017) as a pure, jit-safe optax schedule.",
    "CyclicLR": "Cyclical learning rate scheduler, with the API of",
    "LRSchedulerCallback": "Owns a scheduler and writes its values into the optimizer before every",
    "Trainer": "Trains an NNX model with an",
    "plot_schedule": "Plots the planned learning rate of every group over",
}


# The figures docs/tools/mkdocs_hooks.py draws from the code on every build.
DRAWN = (
    "schedule_triangular.png",
    "schedule_cyclic_modes.png",
    "schedule_onecycle.png",
    "schedule_cosine.png",
    "schedule_warm_restarts.png",
    "schedule_warmup_cyclic.png",
    "schedule_plateau.png",
    "lr_find.png",
)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict:
    site_dir = tmp_path_factory.mktemp("site")
    figures = tmp_path_factory.mktemp("figures")
    images = ROOT / "docs" / "images"
    before = digests(images)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "FLAX_CYCLIC_DOCS_FIGURES": str(figures)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return {"site": site_dir, "figures": figures, "before": before, "after": digests(images)}


@pytest.fixture(scope="module")
def site(build) -> Path:
    return build["site"]


def test_every_page_is_built(site):
    for page in sorted((ROOT / "docs").glob("*.md")):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), f"docs/{page.name} is not in the site"


def test_the_api_page_documents_every_public_name(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    public = [name for name in flax_cyclic.__all__ if not name.startswith("_")]
    missing = [name for name in public if f'id="flax_cyclic.{name}"' not in html]
    assert not missing, f"no API entry for {missing}"
    for name in ("schedule_values", "plot_schedule", "plot_lr_find"):
        assert f'id="flax_cyclic.plotting.{name}"' in html
    heading = html[html.index('id="flax_cyclic.CyclicLR"') :][:300]
    assert "doc-symbol-class" in heading  # the "class" badge of the heading
    assert ">CyclicLR</span>" in heading
    for name, text in DOCSTRINGS.items():
        assert text in html, f"the docstring of {name} is not on the API page"


def test_every_anchor_of_the_generated_api_page_is_on_the_site(site):
    # docs/api.md (generated for reading in the repository) and the site's mkdocstrings page
    # carry the same anchors, so a link `api.md#flax_cyclic.X` lands on both.
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    anchors = re.findall(r'<a id="([^"]+)"></a>', (ROOT / "docs" / "api.md").read_text())
    assert len(anchors) > 100
    missing = [anchor for anchor in anchors if f'id="{anchor}"' not in html]
    assert not missing, f"anchors of docs/api.md the site's API page lacks: {missing}"
    # The site renders the directives, not the generated Markdown with its hand-made anchors.
    assert not re.search(r'<a id="flax_cyclic\.[^"]*"></a>', html)


def _hooks():
    from mkdocs.config import load_config

    (hooks,) = load_config(str(ROOT / "mkdocs.yml"))["hooks"].values()
    return hooks


def test_the_hook_renders_the_api_page_with_mkdocstrings(caplog):
    hooks = _hooks()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="api.md"))
    current = hooks._tool("api_md").render()  # what docs/api.md holds when it is current
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        shown = hooks.on_page_markdown(current, page=page, config=None, files=None)
    assert not caplog.records
    assert "::: flax_cyclic.Trainer\n" in shown
    assert "<a id=" not in shown
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hooks.on_page_markdown("# Home\n", page=other, config=None, files=None) == "# Home\n"


def test_the_hook_fails_a_strict_build_when_the_api_page_is_stale(caplog):
    # A warning from a logger under "mkdocs" is what `mkdocs build --strict` counts.
    hooks = _hooks()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="api.md"))
    stale = hooks._tool("api_md").render().replace("Trains an NNX", "A")
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        hooks.on_page_markdown(stale, page=page, config=None, files=None)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.name.startswith("mkdocs.")
    assert "docs/api.md is stale" in record.getMessage()
    assert "docs/tools/api_md.py" in record.getMessage()


def test_the_site_shows_the_figures_drawn_by_this_build(build):
    # docs/tools/mkdocs_hooks.py draws them from the code, into $FLAX_CYCLIC_DOCS_FIGURES here,
    # and the site publishes those drawings, not the committed copies. Whether the committed
    # copies still look like them is tests/test_docs_plots.py's check.
    assert sorted(path.name for path in build["figures"].iterdir()) == sorted(DRAWN)
    for name in DRAWN:
        built = build["site"] / "images" / name
        assert built.is_file(), name
        assert built.read_bytes() == (build["figures"] / name).read_bytes(), name


def test_the_build_writes_nothing_into_docs_images(build):
    assert build["after"] == build["before"]


@pytest.mark.parametrize("kept", [True, False], ids=["FLAX_CYCLIC_DOCS_FIGURES", "temporary"])
def test_the_hook_publishes_its_drawings_in_place_of_the_committed_copies(
    tmp_path, monkeypatch, kept
):
    # The hook run in process with stand-in drawing tools, so that the drawings differ from the
    # committed copies: the site's images/ must come from the drawings.
    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files

    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"))
    (hooks,) = config["hooks"].values()
    names = {"plot_schedules": "schedule_cosine.png", "plot_lr_find": "lr_find.png"}

    def tool(name):
        def main(output):
            path = Path(output) / names[name]
            path.write_bytes(b"drawn by this build")
            return [path] if name == "plot_schedules" else path

        return SimpleNamespace(main=main)

    monkeypatch.setattr(hooks, "_tool", tool)
    if kept:
        monkeypatch.setenv("FLAX_CYCLIC_DOCS_FIGURES", str(tmp_path / "figures"))
        (tmp_path / "figures").mkdir()
    else:
        monkeypatch.delenv("FLAX_CYCLIC_DOCS_FIGURES", raising=False)
    before = digests(ROOT / "docs" / "images")
    config.plugins.on_pre_build(config=config)
    try:
        files = config.plugins.on_files(get_files(config), config=config)
        published = [files.get_file_from_path(f"images/{name}") for name in names.values()]
        assert [file.content_bytes for file in published] == [b"drawn by this build"] * 2
        folders = {Path(file.abs_src_path).parent for file in published}
        assert len(folders) == 1
        (folder,) = folders
        assert folder != ROOT / "docs" / "images"
        if kept:
            assert folder == tmp_path / "figures"
    finally:
        hooks.on_post_build(config)  # the hook's alone: the other plugins expect a whole build
    assert folder.is_dir() == kept  # a temporary folder goes once the site is built
    assert digests(ROOT / "docs" / "images") == before

"""The figures of docs/schedulers.md: the tool draws them, and the page finds them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

imread = pytest.importorskip("matplotlib.image").imread

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "docs" / "tools" / "plot_schedules.py"
PAGE = ROOT / "docs" / "schedulers.md"
IMAGES = ROOT / "docs" / "images"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (height, width) in pixels: the figure sizes in inches at 100 dpi.
EXPECTED = {
    "schedule_triangular.png": (320, 640),
    "schedule_cyclic_modes.png": (560, 640),
    "schedule_onecycle.png": (480, 640),
    "schedule_cosine.png": (320, 640),
    "schedule_warm_restarts.png": (560, 640),
}


def load_tool():
    spec = importlib.util.spec_from_file_location("plot_schedules", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    output = tmp_path_factory.mktemp("images")
    return output, load_tool().main(output)


def page_images() -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", PAGE.read_text(encoding="utf-8"))


def test_main_writes_one_png_per_figure(drawn):
    output, paths = drawn
    assert [path.name for path in paths] == list(EXPECTED)
    assert sorted(output.iterdir()) == sorted(paths)


@pytest.mark.parametrize("name", EXPECTED)
def test_each_figure_is_a_png_of_its_size(drawn, name):
    output, _ = drawn
    path = output / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[:2] == EXPECTED[name]
    pixels = image.reshape(-1, image.shape[-1])
    assert (pixels.min(axis=0) < 0.5).any()  # something drawn on the white canvas


def test_every_image_of_the_page_is_in_docs_images():
    references = page_images()
    assert references, "docs/schedulers.md shows no images"
    for reference in references:
        assert reference.startswith("images/"), reference
        path = PAGE.parent / reference
        assert path.is_file(), f"{reference} is missing: run python docs/tools/plot_schedules.py"
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_the_page_shows_every_figure_the_tool_draws():
    assert sorted(Path(reference).name for reference in page_images()) == sorted(EXPECTED)


def test_the_committed_figures_have_the_drawn_sizes():
    for name, size in EXPECTED.items():
        assert imread(IMAGES / name).shape[:2] == size, name


def test_every_image_of_every_page_exists():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for reference in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / reference).is_file(), f"{page.name}: {reference} is missing"


def test_the_range_test_figure_is_drawn(tmp_path):
    spec = importlib.util.spec_from_file_location("plot_lr_find", TOOL.with_name("plot_lr_find.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.main(tmp_path)
    assert path == tmp_path / "lr_find.png"
    assert imread(path).shape[:2] == imread(IMAGES / "lr_find.png").shape[:2] == (320, 800)

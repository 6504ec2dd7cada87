"""The figures of the docs: the tools draw them, the pages find them, and the committed copies
in docs/images still look like what the code draws."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
imread = pytest.importorskip("matplotlib.image").imread
from matplotlib import ft2font  # noqa: E402
from matplotlib.testing.compare import calculate_rms  # noqa: E402
from PIL import Image  # noqa: E402

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
    "schedule_warmup_cyclic.png": (360, 640),
    "schedule_plateau.png": (480, 640),
}

# Root-mean-square difference (0-255 scale, over the RGB values of every pixel, as matplotlib's
# own image tests measure it) allowed between a committed figure and a fresh drawing by the same
# matplotlib release. Agg draws the same pixels for the same data, so the difference is 0.0 here;
# the allowance is for data that differ in their last bits (another CPU, another XLA): scaling
# the plotted values by 1 + 1e-6 still gives 0.0, by 1 + 1e-5 at most 0.07, by 1 + 1e-4 at most
# 0.2. The smallest changes tried that a reader can see all exceed 1.2: one character of a title
# (1.4 to 3.0), the grid's alpha 0.3 -> 0.4 (1.2 to 1.5), a colour (2.8 to 4.8), a parameter of
# a curve (9 to 23).
TOLERANCE = 0.5


def load_tool():
    spec = importlib.util.spec_from_file_location("plot_schedules", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    output = tmp_path_factory.mktemp("images")
    return output, load_tool().main(output)


@pytest.fixture(scope="module")
def drawn_lr_find(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("plot_lr_find", TOOL.with_name("plot_lr_find.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path_factory.mktemp("lr_find")
    return output, module.main(output)


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


def test_the_range_test_figure_is_drawn(drawn_lr_find):
    output, path = drawn_lr_find
    assert path == output / "lr_find.png"
    assert imread(path).shape[:2] == imread(IMAGES / "lr_find.png").shape[:2] == (320, 800)


def drawn_with(path: Path) -> str:
    """The matplotlib release (major.minor) that drew a PNG, from its "Software" entry."""
    with Image.open(path) as image:
        software = image.info.get("Software", "")
    match = re.search(r"Matplotlib version\s*(\d+\.\d+)", software)
    assert match, f"{path.name} does not say which matplotlib drew it: run make figures"
    return match[1]


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", [*EXPECTED, "lr_find.png"])
def test_the_committed_figure_is_what_the_code_draws(drawn, drawn_lr_find, name):
    # The copies in docs/images are what the README and GitHub show (the site build draws its
    # own); they must be redrawn (make figures) whenever the code changes a picture.
    committed = IMAGES / name
    release = drawn_with(committed)
    installed = ".".join(matplotlib.__version__.split(".")[:2])
    if release != installed or getattr(ft2font, "__freetype_build_type__", None) != "local":
        # Text renders differently in another release (another FreeType): 3.10 and 3.11 draw
        # the same figures 37 to 48 apart, more than any change of the content.
        pytest.skip(
            f"docs/images was drawn by matplotlib {release} with its own FreeType; this is "
            f"{matplotlib.__version__} (FreeType {ft2font.__freetype_version__}): compare there, "
            "or redraw the figures with this one (make figures)"
        )
    output = drawn_lr_find[0] if name == "lr_find.png" else drawn[0]
    expected, actual = rgb(committed), rgb(output / name)
    assert actual.shape == expected.shape, (
        f"{name}: {actual.shape} drawn, {expected.shape} committed"
    )
    rms = calculate_rms(expected, actual)
    changed = int(np.any(expected != actual, axis=-1).sum())
    assert rms <= TOLERANCE, (
        f"docs/images/{name} is not what the code draws now: RMS difference {rms:.2f} > "
        f"{TOLERANCE} ({changed} pixels differ). If the change is intended, redraw the committed "
        "figures: make figures"
    )

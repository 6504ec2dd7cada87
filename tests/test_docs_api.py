"""docs/api.md, the API reference read in the repository: generated, complete and current.

``docs/tools/api_md.py`` writes it from the code; these tests fail when the committed page is not
what it writes (a new public name, a changed signature or docstring without regenerating), and
check that the generator notices such changes, lists every public name and every anchor the other
pages link to, and writes signatures as ``inspect.signature`` does, without memory addresses.
The site's side (the same anchors on the built page) is tests/test_docs_site.py's.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import flax_cyclic

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "api.md"
TOOL = ROOT / "docs" / "tools" / "api_md.py"
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
LINK = re.compile(r"api\.md#([A-Za-z0-9_.]+)")


def _load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("docs_tools_api_md", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api_md = _load_tool()


def anchors(text: str) -> list[str]:
    return ANCHOR.findall(text)


def test_the_committed_page_is_current():
    committed = PAGE.read_text(encoding="utf-8")
    generated = api_md.render()
    assert committed == generated, api_md.stale_message(PAGE, committed, generated)


def test_check_fails_on_a_stale_page_and_names_the_command(tmp_path, capsys):
    copy = tmp_path / "api.md"
    copy.write_text(api_md.render(), encoding="utf-8")  # a current page
    assert api_md.main(["--check", "--output", str(copy)]) == 0
    # A hand edit: one entry's summary line gone.
    text = copy.read_text(encoding="utf-8")
    copy.write_text(text.replace("Trains an NNX model", "Trains a model", 1), encoding="utf-8")
    assert api_md.main(["--check", "--output", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "is stale" in err
    assert api_md.COMMAND in err
    assert "+Trains an NNX model" in err  # the start of the diff shows what changes
    # Regenerating writes it back; then it is current again.
    assert api_md.main(["--output", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == text
    assert api_md.main(["--check", "--output", str(copy)]) == 0


def test_a_missing_page_is_stale(tmp_path, capsys):
    assert api_md.main(["--check", "--output", str(tmp_path / "api.md")]) == 1
    assert api_md.COMMAND in capsys.readouterr().err


def warmup_schedule(steps: int, *, peak: float = 0.1) -> float:
    """A new schedule, added to the public API by a test."""
    return peak * steps


def test_a_new_public_name_makes_the_committed_page_stale(monkeypatch, capsys):
    monkeypatch.setattr(warmup_schedule, "__module__", "flax_cyclic.schedules")
    monkeypatch.setattr(flax_cyclic, "warmup_schedule", warmup_schedule, raising=False)
    monkeypatch.setattr(flax_cyclic, "__all__", [*flax_cyclic.__all__, "warmup_schedule"])
    text = api_md.render()
    schedules = text[text.index("## Schedules") : text.index("## Schedulers")]
    assert '<a id="flax_cyclic.warmup_schedule"></a>' in schedules
    assert "warmup_schedule(steps: int, *, peak: float = 0.1) -> float" in schedules
    assert "A new schedule, added to the public API by a test." in schedules
    assert api_md.main(["--check"]) == 1
    assert api_md.COMMAND in capsys.readouterr().err


def test_a_changed_signature_makes_the_committed_page_stale(monkeypatch, capsys):
    function = flax_cyclic.linear_schedule
    signature = inspect.signature(function)
    extra = inspect.Parameter("warmup", inspect.Parameter.KEYWORD_ONLY, default=0, annotation="int")
    changed = signature.replace(parameters=[*signature.parameters.values(), extra])
    monkeypatch.setattr(function, "__signature__", changed, raising=False)
    assert "    warmup: int = 0," in api_md.render()
    assert api_md.main(["--check"]) == 1
    assert api_md.COMMAND in capsys.readouterr().err


def test_a_module_no_section_claims_is_an_error():
    entry = api_md.Entry("flax_cyclic.new.thing", object(), flax_cyclic, "flax_cyclic.new")
    with pytest.raises(ValueError, match=r"flax_cyclic\.new\.thing.*SECTIONS.*api_md\.py"):
        api_md.section_of(entry)


def test_the_page_lists_every_public_name():
    found = set(anchors(PAGE.read_text(encoding="utf-8")))
    missing = [name for name in flax_cyclic.__all__ if f"flax_cyclic.{name}" not in found]
    assert not missing, f"no entry in docs/api.md for {missing}"
    top = {id(getattr(flax_cyclic, name)) for name in flax_cyclic.__all__}
    for module in api_md.public_modules(flax_cyclic)[1:]:
        for name in getattr(module, "__all__", ()):
            if id(getattr(module, name)) not in top:
                assert any(anchor.endswith(f".{name}") for anchor in found), (module, name)
    for name in ("plot_schedule", "plot_lr_find", "schedule_values"):
        assert f"flax_cyclic.plotting.{name}" in found
    assert len(found) == len(anchors(PAGE.read_text(encoding="utf-8")))  # no anchor twice


def test_every_link_to_the_page_has_its_anchor():
    found = set(anchors(PAGE.read_text(encoding="utf-8")))
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    links = {(page.name, target) for page in pages for target in LINK.findall(page.read_text())}
    assert links, "no page links into the API reference: the pattern is wrong"
    broken = sorted((page, target) for page, target in links if target not in found)
    assert not broken, f"links to anchors docs/api.md does not have: {broken}"
    # Links inside the page itself (cross-references of the docstrings) land on anchors too.
    inside = re.findall(r"\]\(#([^)]+)\)", PAGE.read_text(encoding="utf-8"))
    assert inside
    assert set(inside) <= found


def test_the_sections_hold_what_they_say():
    text = PAGE.read_text(encoding="utf-8")
    titles = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert titles == [section.title for section in api_md.SECTIONS]

    def section(title: str) -> str:
        start = text.index(f"## {title}\n")
        end = text.find("\n## ", start + 1)
        return text[start : end if end != -1 else None]

    expected = {
        "Schedules": ["flax_cyclic.cyclic_schedule", "flax_cyclic.linear_schedule"],
        "Schedulers": ["flax_cyclic.CyclicLR", "flax_cyclic.ReduceLROnPlateau"],
        "Callbacks": ["flax_cyclic.LRSchedulerCallback", "flax_cyclic.callbacks.base.Loop"],
        "Trainer": ["flax_cyclic.Trainer", "flax_cyclic.History", "flax_cyclic.steps.Metrics"],
        "Checkpoints": ["flax_cyclic.Checkpointer", "flax_cyclic.CheckpointError"],
        "Logging": ["flax_cyclic.create_writer", "flax_cyclic.read_scalars"],
        "Plotting": ["flax_cyclic.plotting.plot_schedule"],
    }
    for title, paths in expected.items():
        for path in paths:
            assert f'<a id="{path}"></a>' in section(title), (title, path)


def test_a_class_lists_its_members_and_what_it_inherits():
    text = PAGE.read_text(encoding="utf-8")
    checkpointer = text[text.index('<a id="flax_cyclic.Checkpointer"></a>') :]
    assert '<a id="flax_cyclic.Checkpointer.should_save"></a>`Checkpointer.should_save`' in (
        checkpointer
    )
    assert "```text\nCheckpointer.should_save(" in checkpointer  # its signature, without self
    assert "(self" not in text
    assert "`LRScheduler.last_epoch: int` <sub>property, settable</sub>" in text
    triangular = text[text.index('<a id="flax_cyclic.TriangularLR"></a>') :]
    triangular = triangular[: triangular.index("\n### ")]
    assert "Bases: [`CyclicLR`](#flax_cyclic.CyclicLR)." in triangular
    assert "Inherited from [`LRScheduler`](#flax_cyclic.LRScheduler):" in triangular
    # A member of a private base is the class's own: LRSchedulerCallback gets WritingCallback's.
    assert '<a id="flax_cyclic.LRSchedulerCallback.write_scalars"></a>' in text


def sample(a, b: int = 2, /, c: str = "x", *rest, d: float = 1.0, **options) -> None:
    """A function with every kind of parameter."""


def keyword_only(a: int, *, b: int = 1):
    """A function whose bare ``*`` only the signature's text shows."""


@pytest.mark.parametrize("function", [sample, keyword_only, warmup_schedule])
def test_a_short_signature_is_written_as_inspect_signature_writes_it(function):
    # Annotations evaluated: with them as strings, ``str(signature)`` would quote them.
    signature = inspect.signature(function, eval_str=True)
    assert api_md.format_signature("f", signature) == f"f{signature}"
    assert "'" not in api_md.format_signature("f", inspect.signature(function)).split("=")[0]


def test_a_long_signature_is_one_parameter_per_line():
    text = api_md.format_signature("long_function_name_" * 4, inspect.signature(sample))
    assert text.splitlines() == [
        "long_function_name_" * 4 + "(",
        "    a,",
        "    b: int = 2,",
        "    /,",
        "    c: str = 'x',",
        "    *rest,",
        "    d: float = 1.0,",
        "    **options,",
        ") -> None",
    ]
    lines = [
        line
        for block in re.findall(r"```text\n(.*?)```", PAGE.read_text(), re.S)
        for line in block.splitlines()
    ]
    assert lines
    assert max(len(line) for line in lines) <= api_md.PAGE_WIDTH


def test_defaults_show_no_memory_address():
    sentinel = object()

    def function(a=sentinel, b=lambda x: x, c=print, d=flax_cyclic.CyclicLR):
        """Defaults whose repr carries an address, or that are better named."""

    text = api_md.format_signature("function", inspect.signature(function))
    assert "0x" not in text
    assert "a=<object object>" in text
    assert "b=test_docs_api.test_defaults_show_no_memory_address.<locals>.<lambda>" in text
    assert "c=<built-in function print>" in text
    assert "d=flax_cyclic.schedulers.CyclicLR" in text
    assert "0x" not in PAGE.read_text(encoding="utf-8")


def test_the_page_is_the_same_every_time():
    assert api_md.render() == api_md.render()


def test_the_site_page_has_one_directive_per_entry():
    entries = api_md.public_entries()
    site = api_md.site_markdown(entries)
    directives = re.findall(r"^::: (\S+)$", site, re.MULTILINE)
    assert directives == [entry.path for _, listed in api_md.grouped(entries) for entry in listed]
    assert re.findall(r"^## (.+)$", site, re.MULTILINE) == [s.title for s in api_md.SECTIONS]
    callback = site[site.index("::: flax_cyclic.LRSchedulerCallback\n") :].split("\n\n")[0]
    assert "inherited_members: [" in callback
    assert "write_scalars" in callback
    plotting = site[site.index("::: flax_cyclic.plotting.plot_schedule\n") :].split("\n\n")[0]
    assert "show_root_full_path: true" in plotting

"""Writes docs/api.md: every public name of ``flax_cyclic`` with its signature and one line.

The page is read in the repository (GitHub renders it): each entry carries an explicit anchor
(``<a id="flax_cyclic.Trainer"></a>``), so the links ``api.md#flax_cyclic.Trainer`` of the
other pages land on it. The site shows the full reference instead: ``docs/tools/mkdocs_hooks.py``
replaces the page by :func:`site_markdown`, the same sections with one mkdocstrings directive
per entry, whose headings carry the same ids.

The public names are those of ``flax_cyclic.__all__`` and of the ``__all__`` of every public
submodule (no part of its name starts with ``_``), each listed once: under the top level when it
is there, else under the module that defines it. Each goes into the section of its module
(:data:`SECTIONS`); a module no section claims is an error, so a new module is placed by hand.

Usage: ``python docs/tools/api_md.py`` rewrites docs/api.md; ``--check`` only says whether it
is current (exit status 1 and the command to run when it is not).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib
import inspect
import pathlib
import pkgutil
import re
import sys
import textwrap
import types
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NamedTuple

import flax_cyclic

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "api.md"
COMMAND = ".venv/bin/python docs/tools/api_md.py"
"""The command that regenerates docs/api.md, as the staleness messages name it."""

PACKAGE = "flax_cyclic"
WIDTH = 88
"""A signature longer than this is written one parameter per line."""
PAGE_WIDTH = 100
"""The width the page's paragraphs are wrapped to."""

DUNDERS = ("__call__", "__enter__", "__exit__", "__iter__", "__len__", "__getitem__")
"""The special methods listed with a class's public ones (those a user calls through syntax)."""


class Section(NamedTuple):
    """A section of the page: its title, its introduction and the modules whose names it holds.

    A name belongs to the section of the longest module of ``modules`` that its own module
    (where it is defined, else where it is exported) is or lies in; ``names`` claims names
    one by one, before the modules do.
    """

    title: str
    intro: str
    modules: tuple[str, ...]
    names: tuple[str, ...] = ()


SECTIONS = (
    Section(
        "Schedules",
        "Pure, jit-safe functions `step -> learning rate`, usable wherever optax takes a schedule.",
        ("flax_cyclic.schedules",),
    ),
    Section(
        "Schedulers",
        "Stateful schedulers with the braintools / PyTorch interface: `step()`, `get_last_lr()`, "
        "parameter groups and a JSON `state_dict()`.",
        ("flax_cyclic.schedulers", "flax_cyclic.plateau"),
    ),
    Section(
        "The learning-rate range test",
        "Train with a rising learning rate, read off the range to cycle over: see "
        "[Finding the learning-rate range](lr_find.md).",
        ("flax_cyclic.lr_finder",),
    ),
    Section(
        "Hyperparameters in any optax state",
        "Write a scheduler's values into the `optax.inject_hyperparams` states of a Linen "
        "`TrainState`, a plain optax state or an `nnx.Optimizer`'s: see "
        "[Your own loop](own_loop.md).",
        ("flax_cyclic._hyperparams",),
    ),
    Section(
        "Callbacks",
        "The hooks of a training loop, the LR callback and the Trainer's default callbacks: see "
        "[The LR callback and the Trainer](callbacks.md).",
        ("flax_cyclic.callbacks",),
    ),
    Section(
        "Trainer",
        "A training loop for NNX models that runs the callbacks, and its default steps.",
        ("flax_cyclic.trainer", "flax_cyclic.steps"),
    ),
    Section(
        "Weight averaging",
        "The cycle's low points put to use: see [Weight averaging at the cycle's end]"
        "(weight_averaging.md).",
        ("flax_cyclic.averages", "flax_cyclic.batch_stats"),
    ),
    Section(
        "Checkpoints",
        "Orbax checkpoints of a run, and the errors a run or a restore raises: see "
        "[Resuming a run](resume.md).",
        ("flax_cyclic.checkpoint",),
    ),
    Section(
        "Logging",
        "TensorBoard event files, written and read back: see "
        "[Learning rate in TensorBoard](tensorboard.md).",
        ("flax_cyclic.writers", "flax_cyclic.event_files"),
    ),
    Section(
        "Plotting",
        "Figures of a schedule and of a range test (matplotlib, the `plot` extra).",
        ("flax_cyclic.plotting",),
    ),
    Section("The package", "", (), names=("flax_cyclic.__version__",)),
)

HEADER = """\
<!-- Generated from the code and its docstrings by docs/tools/api_md.py: do not edit by hand.
     Regenerate: {command}
     tests/test_docs_api.py fails when this page is stale. -->

# API reference

Every public name of `flax_cyclic` with its signature and the first line of its docstring. The
names of the top level are importable from the package itself (`from flax_cyclic import
CyclicLR`); the others from the module they are listed under (`flax_cyclic.plotting`, ...). How
the pieces fit together is on the [Concepts](concepts.md) page.
"""

SITE_NOTE = (
    "Every public name of `flax_cyclic`, generated from the docstrings. The names of the top "
    "level are importable from the package itself (`from flax_cyclic import CyclicLR`); the "
    "others from the module they are listed under. How the pieces fit together is on the "
    "[Concepts](concepts.md) page."
)


# -- the public names ---------------------------------------------------------------------------


class Entry(NamedTuple):
    """A public name: its dotted path (its anchor), the object and the module exporting it.

    ``home`` is the module that places it in a section: the one defining it, when that is a
    public module of the package, else the first public submodule exporting it, else the
    private module defining it.
    """

    path: str
    obj: Any
    exporter: ModuleType
    home: str

    @property
    def name(self) -> str:
        """The name under which the exporting module exports it."""
        return self.path.rpartition(".")[2]

    @property
    def top_level(self) -> bool:
        """Whether it is a name of ``flax_cyclic`` itself."""
        return self.exporter.__name__ == PACKAGE


def public_modules(package: ModuleType) -> list[ModuleType]:
    """The package and its submodules that no ``_`` hides, in the order of their names."""
    names = [
        info.name
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [package, *(importlib.import_module(name) for name in sorted(names))]


def _key(obj: Any, module: str, name: str) -> Any:
    """What makes two exports the same name: the object for classes and functions."""
    if isinstance(obj, type) or callable(obj):
        return ("object", id(obj))
    return ("value", module, name)


def _defining_module(obj: Any) -> str | None:
    """The submodule of the package that defines a class or function, if it says so."""
    if isinstance(obj, type) or inspect.isfunction(obj):
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and module.startswith(f"{PACKAGE}."):
            return module
    return None


def _home(defining: str | None, exporting: str | None, exporter: str) -> str:
    """The module of an entry's section: the defining one if public, else a public exporter."""
    if defining and not any(part.startswith("_") for part in defining.split(".")):
        return defining
    return exporting or defining or exporter


def public_entries(package: ModuleType = flax_cyclic) -> list[Entry]:
    """Every public name once: the top level's first, then those a module defines, then the rest."""
    exports = [
        (module, name, getattr(module, name))
        for module in public_modules(package)
        for name in getattr(module, "__all__", ())
    ]
    homes: dict[Any, str] = {}
    for module, name, obj in exports:
        key = _key(obj, module.__name__, name)
        if module is not package:
            homes.setdefault(key, module.__name__)
    passes = (
        lambda module, obj: module is package,
        lambda module, obj: _defining_module(obj) in (None, module.__name__),
        lambda module, obj: True,
    )
    entries: dict[Any, Entry] = {}
    for chosen in passes:
        for module, name, obj in exports:
            key = _key(obj, module.__name__, name)
            if chosen(module, obj) and key not in entries:
                home = _home(_defining_module(obj), homes.get(key), module.__name__)
                entries[key] = Entry(f"{module.__name__}.{name}", obj, module, home)
    return list(entries.values())


def section_of(entry: Entry) -> Section:
    """The section an entry belongs to; a ``ValueError`` names a module no section claims."""
    for section in SECTIONS:
        if entry.path in section.names:
            return section
    claims = [
        (len(module), section)
        for section in SECTIONS
        for module in section.modules
        if entry.home == module or entry.home.startswith(f"{module}.")
    ]
    if not claims:
        raise ValueError(
            f"{entry.path} (from {entry.home}) is in no section of the API page: add its module "
            f"to SECTIONS in docs/tools/api_md.py, then run {COMMAND}"
        )
    return max(claims, key=lambda claim: claim[0])[1]


def _source_position(entry: Entry) -> tuple[int, int]:
    """Where an entry is defined: its line in its module, for the order within a section."""
    try:
        return (0, inspect.getsourcelines(entry.obj)[1])
    except (OSError, TypeError):
        pass
    names = list(vars(entry.exporter))
    return (1, names.index(entry.name) if entry.name in names else len(names))


def grouped(entries: Sequence[Entry]) -> list[tuple[Section, list[Entry]]]:
    """The sections with their entries: top level first, then by module and source order."""
    by_section: dict[Section, list[Entry]] = {section: [] for section in SECTIONS}
    for entry in entries:
        by_section[section_of(entry)].append(entry)
    result = []
    for section, members in by_section.items():
        order = {module: index for index, module in enumerate(section.modules)}

        def key(entry: Entry, order: dict[str, int] = order) -> tuple[Any, ...]:
            module = max((m for m in order if entry.home.startswith(m)), key=len, default="")
            return (not entry.top_level, order.get(module, 0), entry.home, _source_position(entry))

        if members:
            result.append((section, sorted(members, key=key)))
    return result


# -- signatures and first lines ------------------------------------------------------------------


class _Text:
    """An annotation or a default shown as the text it stands for (no quotes, no addresses)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Text(annotation)
    return _Text(inspect.formatannotation(annotation))


def _default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if (inspect.isfunction(value) or isinstance(value, type)) and hasattr(value, "__qualname__"):
        return _Text(f"{value.__module__}.{value.__qualname__}")
    return _Text(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)))


def _parameters(signature: inspect.Signature) -> list[str]:
    """The parameters as text, with the ``/`` and ``*`` markers that ``str(signature)`` adds."""
    texts: list[str] = []
    kinds = [parameter.kind for parameter in signature.parameters.values()]
    for index, parameter in enumerate(signature.parameters.values()):
        if (
            parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and kinds.index(inspect.Parameter.KEYWORD_ONLY) == index
            and inspect.Parameter.VAR_POSITIONAL not in kinds
        ):
            texts.append("*")
        shown = parameter.replace(
            annotation=_annotation(parameter.annotation), default=_default(parameter.default)
        )
        texts.append(str(shown))
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY and (
            index + 1 == len(kinds) or kinds[index + 1] is not inspect.Parameter.POSITIONAL_ONLY
        ):
            texts.append("/")
    return texts


def format_signature(prefix: str, signature: inspect.Signature) -> str:
    """``prefix(parameters) -> return``, one parameter per line when longer than :data:`WIDTH`."""
    parameters = _parameters(signature)
    returns = ""
    if signature.return_annotation is not inspect.Signature.empty:
        returns = f" -> {_annotation(signature.return_annotation)!r}"
    line = f"{prefix}({', '.join(parameters)}){returns}"
    if len(line) <= WIDTH or not parameters:
        return line
    body = "".join(f"    {parameter},\n" for parameter in parameters)
    return f"{prefix}(\n{body}){returns}"


def signature_of(obj: Any, *, drop_first: bool = False) -> inspect.Signature | None:
    """``inspect.signature(obj)`` without ``self`` when asked; ``None`` where there is none."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if drop_first:
        parameters = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=parameters)
    return signature


CROSS_REFERENCE = re.compile(r"\[([^\]]+)\]\[([A-Za-z0-9_.]*)\]")


def first_line(obj: Any, anchors: frozenset[str], *, doc: str | None = None) -> str:
    """The docstring's summary (its first paragraph) as one line of Markdown.

    ``\u0060\u0060code\u0060\u0060`` becomes Markdown code, and an mkdocstrings cross-reference
    ``[text][flax_cyclic.X]`` a link to the entry's anchor on this page (just the text where the
    page has no such anchor).
    """
    doc = inspect.getdoc(obj) if obj is not None else doc
    if not doc:
        return "(no docstring)"
    summary = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    summary = re.sub(r"``([^`]+)``", r"`\1`", summary)

    def link(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2) or match.group(1).strip("`")
        return f"[{text}](#{target})" if target in anchors else text

    return CROSS_REFERENCE.sub(link, summary)


# -- the entries as Markdown ---------------------------------------------------------------------


class Member(NamedTuple):
    """A public method, property or attribute of a class, and the class it is defined in."""

    name: str
    raw: Any
    owner: type


def _listed(name: str) -> bool:
    return not name.startswith("_") or name in DUNDERS


def members(cls: type, public: frozenset[type]) -> tuple[list[Member], dict[type, list[str]]]:
    """A class's members in source order, and what it inherits unchanged from public classes.

    Members of the library's private bases are listed as the class's own; a dataclass's fields
    are in its signature.
    """
    fields = (
        {field.name for field in dataclasses.fields(cls)}
        if dataclasses.is_dataclass(cls)
        else set()
    )
    own: dict[str, Member] = {}
    inherited: dict[type, list[str]] = {}
    seen: set[str] = set(fields)
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        names = [*vars(klass), *vars(klass).get("__annotations__", {})]
        for name in dict.fromkeys(names):
            if name in seen or not _listed(name):
                continue
            seen.add(name)
            if klass is cls or klass not in public:
                own[name] = Member(name, vars(klass).get(name, inspect.Parameter.empty), klass)
            else:
                inherited.setdefault(klass, []).append(name)
    return list(own.values()), inherited


def _attribute(cls: type, member: Member) -> str:
    annotation = vars(member.owner).get("__annotations__", {}).get(member.name)
    text = f"{cls.__name__}.{member.name}"
    if annotation is not None:
        text += f": {_annotation(annotation)!r}"
    if member.raw is not inspect.Parameter.empty:
        text += f" = {_default(member.raw)!r}"
    return text


def member_block(cls: type, member: Member) -> tuple[str, str, str | None, Any]:
    """A member's kind, heading, signature block (none for a value) and documented object."""
    raw = member.raw
    qualified = f"{cls.__name__}.{member.name}"
    if isinstance(raw, property):
        getter = signature_of(raw.fget) if raw.fget else None
        returns = getter.return_annotation if getter else inspect.Signature.empty
        if returns is not inspect.Signature.empty:
            qualified += f": {_annotation(returns)!r}"
        return ("property" if raw.fset is None else "property, settable"), qualified, None, raw
    if isinstance(raw, staticmethod | classmethod):
        signature = signature_of(getattr(cls, member.name)) or inspect.Signature()
        return type(raw).__name__, qualified, format_signature(qualified, signature), raw.__func__
    if inspect.isfunction(raw):
        signature = signature_of(raw, drop_first=True) or inspect.Signature()
        return "method", qualified, format_signature(qualified, signature), raw
    return "attribute", _attribute(cls, member), None, None


def _kind(obj: Any) -> str:
    if isinstance(obj, type):
        if issubclass(obj, BaseException):
            return "exception"
        if getattr(obj, "_is_protocol", False):
            return "protocol"
        return "dataclass" if dataclasses.is_dataclass(obj) else "class"
    if inspect.isfunction(obj):
        return "function"
    if isinstance(obj, types.GenericAlias | types.UnionType) or type(obj).__module__ == "typing":
        return "type alias"
    return "attribute"


def value_source(entry: Entry) -> tuple[str | None, str | None]:
    """A module-level value (a type alias) as written, ``Name = ...``, and its docstring.

    The docstring is the string literal right after the assignment, as mkdocstrings reads it.
    """
    try:
        source = inspect.getsource(entry.exporter)
    except (OSError, TypeError):
        return None, None
    body = ast.parse(source).body
    for index, node in enumerate(body):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == entry.name for t in targets):
            after = body[index + 1] if index + 1 < len(body) else None
            doc = None
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = inspect.cleandoc(str(after.value.value))
            return ast.get_source_segment(source, node), doc
    return None, None


def _base_name(base: type) -> str:
    return (
        base.__name__ if base.__module__ == "builtins" else f"{base.__module__}.{base.__qualname__}"
    )


def entry_signature(entry: Entry) -> str:
    """The code block of an entry: its constructor or signature, or its value."""
    obj = entry.obj
    shown = entry.name if entry.top_level else entry.path.removeprefix(f"{PACKAGE}.")
    kind = _kind(obj)
    if kind in ("protocol", "exception"):  # not made by calling a constructor of their own
        return f"class {entry.name}({', '.join(_base_name(base) for base in obj.__bases__)})"
    if kind in ("attribute", "type alias"):
        return value_source(entry)[0] or f"{shown} = {_default(obj)!r}"
    signature = signature_of(obj)
    if signature is None:
        return shown
    if isinstance(obj, type):  # the constructor's, without ``-> None``
        signature = signature.replace(return_annotation=inspect.Signature.empty)
    return format_signature(shown, signature)


def paragraph(text: str) -> list[str]:
    """A paragraph's lines, wrapped at spaces to the page's width (never inside a word)."""
    return textwrap.wrap(
        text, width=PAGE_WIDTH, break_long_words=False, break_on_hyphens=False
    ) or [""]


def _fence(text: str) -> list[str]:
    # Fenced as text: these are signatures to read, not code to run (tests/test_docs.py runs
    # the ``python`` blocks of every page).
    return ["```text", text, "```", ""]


def _bases(cls: type, anchors: frozenset[str], paths: dict[int, str]) -> str:
    names = []
    for base in cls.__bases__:
        path = paths.get(id(base))
        if base is object:
            continue
        label = f"`{base.__name__}`" if path else f"`{_base_name(base)}`"
        names.append(f"[{label}](#{path})" if path in anchors else label)
    return ", ".join(names)


def class_members(
    cls: type, path: str, anchors: frozenset[str], paths: dict[int, str]
) -> list[str]:
    """The Markdown of a class's members, and a line naming what it inherits from public bases."""
    public = frozenset(base for base in cls.__mro__ if id(base) in paths)
    own, inherited = members(cls, public)
    lines: list[str] = []
    for member in own:
        kind, heading, block, documented = member_block(cls, member)
        summary = first_line(documented, anchors) if documented is not None else ""
        lines += [f'#### <a id="{path}.{member.name}"></a>`{heading}` <sub>{kind}</sub>', ""]
        if block is not None:
            lines += _fence(block)
        if summary:
            lines += [*paragraph(summary), ""]
    for base, names in inherited.items():
        listed = ", ".join(f"`{name}`" for name in names)
        base_path = paths[id(base)]
        lines += [*paragraph(f"Inherited from [`{base.__name__}`](#{base_path}): {listed}."), ""]
    return lines


def entry_markdown(entry: Entry, anchors: frozenset[str], paths: dict[int, str]) -> list[str]:
    """The lines of one entry: anchor, heading, signature, first line, members for a class."""
    shown = entry.name if entry.top_level else entry.path
    kind = _kind(entry.obj)
    lines = [f'### <a id="{entry.path}"></a>`{shown}` <sub>{kind}</sub>', ""]
    if entry.name == "__version__":
        return [*lines, "The version of the installed package, a string.", ""]
    lines += _fence(entry_signature(entry))
    if kind in ("attribute", "type alias"):
        summary = first_line(None, anchors, doc=value_source(entry)[1])
    else:
        summary = first_line(entry.obj, anchors)
    lines += [*paragraph(summary), ""]
    if isinstance(entry.obj, type):
        bases = _bases(entry.obj, anchors, paths)
        if bases and kind not in ("protocol", "exception"):  # those show them as a class does
            lines += [f"Bases: {bases}.", ""]
        lines += class_members(entry.obj, entry.path, anchors, paths)
    return lines


def anchors_of(entries: Sequence[Entry]) -> frozenset[str]:
    """The anchors the page carries: every entry, and every listed member of every class."""
    paths = {id(entry.obj): entry.path for entry in entries if isinstance(entry.obj, type)}
    found = {entry.path for entry in entries}
    for entry in entries:
        if isinstance(entry.obj, type):
            public = frozenset(base for base in entry.obj.__mro__ if id(base) in paths)
            found.update(f"{entry.path}.{member.name}" for member in members(entry.obj, public)[0])
    return frozenset(found)


def render(entries: Sequence[Entry] | None = None) -> str:
    """The whole of docs/api.md for ``entries`` (by default, the package's public names)."""
    entries = public_entries() if entries is None else entries
    anchors = anchors_of(entries)
    paths = {id(entry.obj): entry.path for entry in entries if isinstance(entry.obj, type)}
    lines = [HEADER.format(command=COMMAND)]
    for section, listed in grouped(entries):
        lines += [f"## {section.title}", ""]
        if section.intro:
            lines += [*paragraph(section.intro), ""]
        for entry in listed:
            lines += entry_markdown(entry, anchors, paths)
    return "\n".join(lines).rstrip("\n") + "\n"


# -- the site's page -----------------------------------------------------------------------------


def _directive(entry: Entry, anchors: frozenset[str], paths: dict[int, str]) -> list[str]:
    """The mkdocstrings directive of an entry, with the options that give the page's anchors."""
    options = []
    if not entry.top_level:
        options.append("show_root_full_path: true")
    if isinstance(entry.obj, type):
        public = frozenset(base for base in entry.obj.__mro__ if id(base) in paths)
        own = members(entry.obj, public)[0]
        from_private = [member.name for member in own if member.owner is not entry.obj]
        if from_private:  # mkdocstrings shows only those a class defines, unless named here
            options.append(f"inherited_members: [{', '.join(from_private)}]")
        documented = [member_block(entry.obj, member)[3] for member in own]
        if not all(obj is not None and inspect.getdoc(obj) for obj in documented):
            options.append("show_if_no_docstring: true")  # mkdocstrings hides them otherwise
    lines = [f"::: {entry.path}"]
    if options:
        lines += ["    options:", *(f"      {option}" for option in options)]
    return [*lines, ""]


def site_markdown(entries: Sequence[Entry] | None = None) -> str:
    """The page the site shows for docs/api.md: the same sections, rendered by mkdocstrings."""
    entries = public_entries() if entries is None else entries
    anchors = anchors_of(entries)
    paths = {id(entry.obj): entry.path for entry in entries if isinstance(entry.obj, type)}
    lines = ["# API reference", "", SITE_NOTE, ""]
    for section, listed in grouped(entries):
        lines += [f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        for entry in listed:
            lines += _directive(entry, anchors, paths)
    return "\n".join(lines).rstrip("\n") + "\n"


# -- the command ---------------------------------------------------------------------------------


def stale_message(path: pathlib.Path, current: str, expected: str) -> str:
    """What ``--check`` prints for a stale page: the command to run, and the start of the diff."""
    diff = difflib.unified_diff(
        current.splitlines(), expected.splitlines(), "committed", "generated", lineterm=""
    )
    shown = list(diff)
    more = f"\n... ({len(shown) - 40} more lines of diff)" if len(shown) > 40 else ""
    return (
        f"{path} is stale (the public API or its docstrings changed): run `{COMMAND}` and commit "
        f"the result.\n" + "\n".join(shown[:40]) + more
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrites docs/api.md, or with ``--check`` fails (status 1) when it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that it is current")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT, help="default: docs/api.md")
    args = parser.parse_args(argv)
    expected = render()
    current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
    if args.check:
        if current == expected:
            return 0
        print(stale_message(args.output, current, expected), file=sys.stderr)
        return 1
    if current != expected:
        args.output.write_text(expected, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

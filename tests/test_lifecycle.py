"""What a user sees on standard error: the run's lifecycle lines, and a quiet TensorBoard start.

Each test runs a real script in a fresh Python process (the logging configuration is decided
once per process) and reads its standard error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from flax_cyclic import _logging

# A tiny training script: `fit(num_steps=n)` for each n given, each with a new Trainer and a
# Checkpointer in `directory`; `configure` runs before `import flax_cyclic`, `after` after it.
SCRIPT = """
import logging, sys
sys.path.insert(0, "tests")
{configure}
import flax_cyclic
from helpers import tiny_batches, tiny_setup
{after}
directory, *steps = sys.argv[1:]
for num_steps in steps:
    model, optimizer = tiny_setup(0.01)
    checkpointer = flax_cyclic.Checkpointer(directory, every_steps=2)
    trainer = flax_cyclic.Trainer(model, optimizer, checkpointer=checkpointer, progress=False)
    trainer.fit(tiny_batches(16, 4), num_steps=int(num_steps))
    checkpointer.close()
"""


def _stderr(code: str, *args: object, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _train(directory, *steps: int, configure: str = "", after: str = "") -> str:
    code = SCRIPT.format(configure=textwrap.dedent(configure), after=textwrap.dedent(after))
    return _stderr(code, directory, *steps)


def _assert_no_line_twice(stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == len(set(lines)), stderr


def _complete(directory, step: int) -> str:
    return (
        f"The run in {directory} is complete at step {step} (num_steps={step}): nothing left to "
        "train. Raise num_steps to train longer"
    )


def test_a_fresh_then_a_resumed_then_a_complete_run_say_where_they_stand(tmp_path):
    stderr = _train(tmp_path, 2)
    # Only the library's own lines: no Orbax or absl line, no line per save.
    assert stderr.splitlines() == [f"flax_cyclic: No checkpoint in {tmp_path}: starting fresh."]

    stderr = _train(tmp_path, 4, 4)  # resumes at 2, trains to 4; then finds the run complete
    assert stderr.splitlines() == [
        f"flax_cyclic: Resumed from the checkpoint at step 2 in {tmp_path} (epoch 0, 2 batches "
        "into it).",
        f"flax_cyclic: Resumed from the checkpoint at step 4 in {tmp_path} (epoch 1, 0 batches "
        "into it).",
        f"flax_cyclic: {_complete(tmp_path, 4)}, or use a new checkpoint directory to start over.",
    ]


def test_the_application_s_configuration_wins_and_nothing_is_printed_twice(tmp_path):
    stderr = _train(
        tmp_path,
        2,
        2,
        configure="""
        logging.basicConfig(level=logging.WARNING, format="app %(levelname)s %(message)s")
        """,
    )
    assert "starting fresh" not in stderr  # INFO, below the application's level
    assert "Resumed from" not in stderr
    assert f"app WARNING {_complete(tmp_path, 2)}" in stderr
    assert stderr.count(_complete(tmp_path, 2)) == 1
    _assert_no_line_twice(stderr)


def test_logging_configured_after_the_import_is_the_one_used(tmp_path):
    # The decision is made at the first message, not at import: `main` may configure logging.
    stderr = _train(
        tmp_path,
        2,
        after="""
        logging.basicConfig(level=logging.INFO, format="app %(name)s %(message)s", force=True)
        """,
    )
    assert f"app flax_cyclic No checkpoint in {tmp_path}: starting fresh." in stderr
    assert "flax_cyclic: " not in stderr  # not printed by the library's own handler as well
    assert stderr.count("starting fresh") == 1


def test_the_flax_cyclic_level_silences_the_info_lines(tmp_path):
    stderr = _train(
        tmp_path, 2, 2, after='logging.getLogger("flax_cyclic").setLevel(logging.WARNING)'
    )
    assert stderr.splitlines() == [
        f"flax_cyclic: {_complete(tmp_path, 2)}, or use a new checkpoint directory to start over."
    ]


def test_a_process_other_than_0_prints_nothing():
    code = """
import jax
from flax_cyclic._logging import logger
jax.process_index = lambda: {index}  # as on the host of process {index}
logger.info("starting fresh")
logger.warning("complete")
"""
    assert _stderr(code.format(index=1)) == ""
    assert _stderr(code.format(index=0)).splitlines() == [
        "flax_cyclic: starting fresh",
        "flax_cyclic: complete",
    ]


CREATE_WRITER = """
import sys
import flax_cyclic
writer = flax_cyclic.create_writer(sys.argv[1])
writer.write_scalars(1, {"loss": 1.0})
writer.flush()
print("written", file=sys.stderr)
"""


def test_create_writer_starts_tensorflow_quietly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    stderr = _stderr(CREATE_WRITER, tmp_path, env=env)
    assert stderr.splitlines() == [
        f"flax_cyclic: create_writer: event files in {tmp_path}, through CLU's writer "
        "(TensorFlow).",
        "written",
    ]


def test_create_writer_shows_tensorflow_s_start_up_lines_when_asked(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    stderr = _stderr(CREATE_WRITER, tmp_path, env=env)
    assert "oneDNN custom operations" in stderr  # what the quiet start hides is there
    assert stderr.splitlines()[-1] == "written"


def _basic_default() -> logging.Handler:
    """The handler a bare `logging.basicConfig()` adds (absl's, when Orbax is imported)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    return handler


@pytest.mark.parametrize(
    ("root_handlers", "root_level", "own_handlers", "configured"),
    [
        ([], logging.WARNING, [], False),  # nothing configured
        ([], logging.INFO, [], False),  # a level, but no handler would print
        ([_basic_default()], logging.WARNING, [], False),  # absl's bare basicConfig()
        ([_basic_default()], logging.INFO, [], True),  # basicConfig(level=INFO)
        ([logging.FileHandler(os.devnull, delay=True)], logging.WARNING, [], True),
        ([logging.StreamHandler(sys.stdout)], logging.WARNING, [], True),
        ([], logging.WARNING, [logging.NullHandler()], True),  # a handler on flax_cyclic
    ],
)
def test_what_counts_as_configured(
    monkeypatch, root_handlers, root_level, own_handlers, configured
):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root_handlers)
    monkeypatch.setattr(root, "level", root_level)
    base = logging.Logger("flax_cyclic")  # not the library's own: nothing is installed on it
    base.handlers = own_handlers
    assert _logging._configured(base) is configured


def test_a_step_left_without_its_metadata_brings_no_orbax_warning(tmp_path):
    # What a kill can leave: a step directory without Orbax's _CHECKPOINT_METADATA. Orbax warns
    # "Metadata file does not exist" (through absl) at every listing; the library says instead
    # that the step is damaged and moved aside.
    _train(tmp_path, 4)
    (tmp_path / "8").mkdir()
    stderr = _train(tmp_path, 6)
    assert "Metadata file does not exist" not in stderr
    assert "absl" not in stderr
    assert "Checkpoint 8 is damaged and is skipped" in stderr
    assert "Resumed from the checkpoint at step 4" in stderr
    # Orbax's other warnings still pass the filter.
    record = logging.LogRecord(
        "absl", logging.WARNING, "", 0, "Metadata file does not exist: %s", ("x/other",), None
    )
    assert _logging._orbax_noise(record)

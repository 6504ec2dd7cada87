"""flax_cyclic._event_writer against CLU's default writer (its tf.summary writer, for real)."""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import pathlib
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import wave

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from flax_cyclic import _event_writer

clu_writers = pytest.importorskip("clu.metric_writers")

ROOT = pathlib.Path(__file__).resolve().parents[1]
STORE_ALL = {pea.TENSORS: 0, pea.GRAPH: 0, pea.META_GRAPH: 0, pea.RUN_METADATA: 0}


def clu(logdir, *, asynchronous=False):
    return clu_writers.create_default_writer(str(logdir), asynchronous=asynchronous)


def own(logdir, *, asynchronous=False):
    return _event_writer.create(str(logdir), just_logging=False, asynchronous=asynchronous)


def _images():
    rng = np.random.default_rng(0)
    floats = rng.uniform(-0.2, 1.2, (2, 3, 4, 1)).astype(np.float32)
    floats[0, 0, 0, 0] = np.nan
    return {
        "uint8_gray": rng.integers(0, 256, (4, 5, 1), dtype=np.uint8),
        "uint8_rgb": rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8),
        "float32_gray": floats,  # out of [0, 1] and NaN: saturated
        "float64_rgb": rng.uniform(0, 1, (3, 4, 3)),
        "float16_rgb": rng.uniform(0, 1, (3, 4, 3)).astype(np.float16),
        "bfloat16_gray": jnp.asarray(rng.uniform(0, 1, (3, 4, 1)), jnp.bfloat16),
        "jax_rgb": jnp.asarray(rng.uniform(0, 1, (3, 4, 3)), jnp.float32),
        "int16_gray": rng.integers(-(2**15), 2**15, (3, 4, 1), dtype=np.int16),
        "int8_rgba": rng.integers(-128, 128, (3, 4, 4), dtype=np.int8),
        "uint16_la": rng.integers(0, 2**16, (3, 4, 2), dtype=np.uint16),
        "none": np.zeros((0, 2, 3, 3), np.uint8),
    }


def the_calls(writer):
    """Every kind of write, with the conversions TensorFlow makes."""
    rng = np.random.default_rng(1)
    writer.write_scalars(0, {"loss": 1.5, "count": 3, "f32": np.float32(0.25), "jax": jnp.ones(())})
    writer.write_scalars(1, {"loss": 1 / 3, "f64": np.float64(1 / 3), "jaxint": jnp.int32(7)})
    writer.write_scalars(1, {"complex": 1.5 + 2j})  # TensorFlow keeps the real part
    writer.write_scalars(np.int64(2), {"loss": float("nan"), "flag": True, "big": 2**40 + 1})
    writer.write_scalars(jnp.int32(3), {"loss": np.array(0.5), "bf16": jnp.bfloat16(0.3)})
    writer.write_images(1, _images())
    writer.write_texts(2, {"note": "**bold** text", "raw": b"bytes", "lines": np.array(["a", "b"])})
    data = {"w": rng.normal(size=1000), "const": np.full(10, 3.0), "int": np.arange(10)}
    writer.write_histograms(2, data)
    writer.write_histograms(
        3, {"w": rng.normal(size=500), "few": np.arange(5.0)}, {"w": 7, "few": 1}
    )
    writer.write_histograms(
        4, {"empty": np.array([]), "jax_hist": jnp.arange(20.0)}, {"jax_hist": 0}
    )
    writer.write_hparams(
        {"lr": 0.1, "layers": [64, 32], "opt": {"name": "adam", "b1": np.float32(0.9)}, "x": None}
    )
    shown = scalar_metadata.create_summary_metadata(display_name="shown", description="desc")
    values = {"custom": np.array(2.5), "tensor": np.arange(6, dtype=np.int32).reshape(2, 3)}
    values["bare"] = np.array(["x", "yz"])
    writer.write_summaries(4, values, {"custom": shown, "tensor": shown.SerializeToString()})
    clips = rng.uniform(-1.2, 1.2, (2, 50, 2)).astype(np.float32)
    writer.write_audios(5, {"clip": clips, "mono": jnp.zeros((1, 8, 1))}, sample_rate=8000)
    writer.write_videos(5, {"video": np.zeros((2, 3, 4, 4, 3), np.uint8)})
    writer.write_scalars(6, {"loss": 0.25})
    writer.write_scalars(np.float64(7.9), {"loss": 0.125})  # numpy numbers are cast: step 7
    # An empty name: tf.summary's default name of each kind.
    writer.write_scalars(8, {"": 1.0})
    writer.write_texts(8, {"": "no name"})
    writer.write_histograms(8, {"": np.arange(3.0)})
    writer.write_images(8, {"": np.zeros((1, 1, 1), np.uint8)})
    writer.write_audios(8, {"": np.zeros((1, 2, 1), np.float32)}, sample_rate=2)
    writer.close()


def read(logdir):
    """{tag: (SummaryMetadata or None, [(step, ndarray), ...])} as TensorBoard reads them."""
    accumulator = pea.EventAccumulator(str(logdir), size_guidance=STORE_ALL)
    accumulator.Reload()
    return {
        tag: (
            accumulator.summary_metadata.get(tag),
            [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)],
        )
        for tag in accumulator.Tags()[pea.TENSORS]
    }


def plugin(metadata):
    return metadata.plugin_data.plugin_name if metadata is not None else None


def decoded_png(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def decoded_wav(data):
    with wave.open(io.BytesIO(data)) as clip:
        return clip.getparams(), np.frombuffer(clip.readframes(clip.getnframes()), "<i2")


def assert_same_value(kind, expected, got):
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape)
    if kind == "images":
        assert list(got[:2]) == list(expected[:2])  # width, height
        for want, have in zip(expected[2:], got[2:], strict=True):
            np.testing.assert_array_equal(decoded_png(have), decoded_png(want))
    elif kind == "audio":
        for want, have in zip(expected.ravel(), got.ravel(), strict=True):
            params, samples = decoded_wav(have)
            assert params == decoded_wav(want)[0]
            np.testing.assert_array_equal(samples, decoded_wav(want)[1])
            assert have == want  # the same header and samples: the same bytes
    elif kind == "histograms":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    elif got.dtype == object:
        assert got.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(got, expected)  # NaN equals NaN here


def hparams_data(metadata):
    data = plugin_data_pb2.HParamsPluginData.FromString(metadata.plugin_data.content)
    data.session_start_info.ClearField("start_time_secs")  # when the writer was called
    return data


def absl_lines(caplog):
    return sorted(r.getMessage() for r in caplog.records if r.name == "absl" and r.levelno == 20)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_tensorboard_reads_what_clu_writes(tmp_path, caplog, asynchronous):
    caplog.set_level(logging.INFO, logger="absl")
    the_calls(clu(tmp_path / "clu", asynchronous=asynchronous))
    clu_lines = absl_lines(caplog)
    caplog.clear()
    the_calls(own(tmp_path / "own", asynchronous=asynchronous))
    assert len(clu_lines) > 10
    assert absl_lines(caplog) == clu_lines
    expected, got = read(tmp_path / "clu"), read(tmp_path / "own")

    assert {tag: plugin(md) for tag, (md, _) in got.items()} == {
        tag: plugin(md) for tag, (md, _) in expected.items()
    }
    assert {plugin(md) for md, _ in got.values()} == {
        *("scalars", "images", "text", "histograms", "hparams", "audio", None)
    }
    for tag, (metadata, events) in expected.items():
        got_metadata, got_events = got[tag]
        if plugin(metadata) == "hparams":
            assert hparams_data(got_metadata) == hparams_data(metadata)
        else:
            assert got_metadata == metadata, tag
        assert [step for step, _ in got_events] == [step for step, _ in events], tag
        for (_, want), (_, have) in zip(events, got_events, strict=True):
            assert_same_value(plugin(metadata), want, have)
    step, nan = got["loss"][1][2]
    assert step == 2
    assert math.isnan(nan)


def test_just_logging_writes_no_event_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    writer = _event_writer.create(str(tmp_path / "run"), just_logging=True, asynchronous=False)
    writer.write_scalars(3, {"b": 0.5, "a": 2})
    writer.close()
    assert not (tmp_path / "run").exists()
    assert absl_lines(caplog) == ["[3] a=2, b=0.5"]


# --- errors: the exception types of CLU's writer -------------------------------------------

ERRORS = {
    "non-scalar": (lambda w: w.write_scalars(1, {"x": np.ones(2)}), ValueError),
    "none scalar": (lambda w: w.write_scalars(1, {"x": None}), ValueError),
    "float step": (lambda w: w.write_scalars(1.5, {"x": 1.0}), TypeError),
    "string step": (lambda w: w.write_scalars("1", {"x": 1.0}), TypeError),
    "int key": (lambda w: w.write_scalars(1, {3: 1.0}), TypeError),
    "int text": (lambda w: w.write_texts(1, {"x": 3}), TypeError),
    "none text": (lambda w: w.write_texts(1, {"x": None}), ValueError),
    "rank-2 image": (lambda w: w.write_images(1, {"x": np.zeros((2, 2))}), ValueError),
    "bool image": (lambda w: w.write_images(1, {"x": np.zeros((2, 2, 1), bool)}), AttributeError),
    "list image": (lambda w: w.write_images(1, {"x": [[[0]]]}), AttributeError),
    "int64 buckets": (
        lambda w: w.write_histograms(1, {"x": np.ones(3)}, {"x": np.int64(4)}),
        TypeError,
    ),
    "NaN histogram": (lambda w: w.write_histograms(1, {"x": np.array([1.0, np.nan])}), ValueError),
    "float summary": (lambda w: w.write_summaries(1, {"x": 1.0}), AttributeError),
    "int metadata": (lambda w: w.write_summaries(1, {"x": np.ones(2)}, {"x": 3}), TypeError),
    "array hparam": (lambda w: w.write_hparams({"x": np.array(2.0)}), TypeError),
    "rank-2 audio": (
        lambda w: w.write_audios(1, {"x": np.zeros((4, 1), np.float32)}, sample_rate=4),
        ValueError,
    ),
    "float rate": (
        lambda w: w.write_audios(1, {"x": np.zeros((1, 4, 1), np.float32)}, sample_rate=4.0),
        TypeError,
    ),
}


@pytest.mark.parametrize("make", [clu, own], ids=["clu", "own"])
@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_raises_what_clu_raises(tmp_path, make, name):
    call, error = ERRORS[name]
    writer = make(tmp_path)
    with pytest.raises(error):
        call(writer)
    writer.close()


AFTER_CLOSE = {
    "write_scalars": lambda w: w.write_scalars(1, {"x": 1.0}),
    "write_scalars {}": lambda w: w.write_scalars(1, {}),
    "write_texts": lambda w: w.write_texts(1, {"x": "y"}),
    "write_images": lambda w: w.write_images(1, {"x": np.zeros((1, 1, 1), np.uint8)}),
    "write_histograms": lambda w: w.write_histograms(1, {"x": np.ones(3)}),
    "write_hparams": lambda w: w.write_hparams({"x": 1}),
    "write_summaries": lambda w: w.write_summaries(1, {"x": np.ones(2)}),
    "write_audios": lambda w: w.write_audios(
        1, {"x": np.zeros((1, 4, 1), np.float32)}, sample_rate=4
    ),
}


@pytest.mark.parametrize("make", [clu, own], ids=["clu", "own"])
def test_writing_after_close_raises_runtime_error_as_clu(tmp_path, make):
    writer = make(tmp_path)
    writer.write_scalars(1, {"x": 1.0})
    writer.close()
    for call in AFTER_CLOSE.values():
        with pytest.raises(RuntimeError):
            call(writer)
    writer.write_videos(2, {"v": np.zeros((1, 1, 1, 1, 1))})  # only logs and warns
    writer.flush()
    writer.close()


def chain(error):
    """The classes' names of an exception and its causes."""
    names = []
    while error is not None:
        names.append(type(error).__name__)
        error = error.__cause__
    return names


def next_call_error(writer):
    """The exception a good write raises, once the background thread has failed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            writer.write_scalars(2, {"good": 1.0})
        except Exception as error:
            return error
        time.sleep(0.01)
    pytest.fail("the background error was not raised")


@pytest.mark.parametrize("make", [clu, own], ids=["clu", "own"])
def test_a_background_error_is_raised_at_the_next_call(tmp_path, make):
    writer = make(tmp_path, asynchronous=True)
    writer.write_scalars(1, {"bad": np.ones(2)})  # fails in the background
    error = next_call_error(writer)
    assert chain(error) == ["AsyncError", "AsyncError", "ValueError"]
    assert "ASYNCHRONOUSLY" in str(error.__cause__)
    writer.flush()  # the error was raised once
    writer.write_scalars(3, {"bad": np.ones(2)})
    with pytest.raises(Exception) as raised:  # noqa: PT011
        writer.flush()
    assert chain(raised.value) == ["AsyncError", "ValueError"]
    writer.write_scalars(4, {"bad": np.ones(2)})
    with pytest.raises(Exception) as raised:  # noqa: PT011
        writer.close()
    assert chain(raised.value) == ["AsyncError", "ValueError"]


def test_own_background_errors_are_its_async_error(tmp_path):
    writer = own(tmp_path, asynchronous=True)
    writer.write_scalars(1, {"bad": np.ones(2)})
    with pytest.raises(_event_writer.AsyncError, match="ASYNCHRONOUSLY") as raised:
        writer.close()
    assert isinstance(raised.value.__cause__, ValueError)
    assert read(tmp_path) == {}  # the file is closed, and has no value


def test_images_without_pillow_say_how_to_install_it(tmp_path, monkeypatch):
    writer = own(tmp_path)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        writer.write_images(1, {"x": np.zeros((1, 1, 1), np.uint8)})
    writer.close()


# --- without TensorFlow ------------------------------------------------------------------

WITHOUT_TENSORFLOW = """
import sys, time
if {block}:
    sys.modules["tensorflow"] = None  # import tensorflow raises ImportError
    sys.modules["clu"] = None
start = time.perf_counter()
import flax_cyclic, numpy as np
package = time.perf_counter()
from flax_cyclic import _event_writer
writer = _event_writer.create({logdir!r}, just_logging=False, asynchronous=False)
writer.write_scalars(1, {{"loss": 0.5}})
end = time.perf_counter()
print(f"import flax_cyclic {{package - start:.3f}} s, then _event_writer + create + first "
      f"write {{end - package:.3f}} s")
writer.write_scalars(2, {{"loss": 0.25}})
writer.write_images(2, {{"image": np.zeros((2, 2, 3), np.float32)}})
writer.write_histograms(2, {{"weights": np.arange(10.0)}})
writer.write_texts(2, {{"note": "text"}})
writer.write_hparams({{"lr": 0.1}})
writer.write_audios(2, {{"clip": np.zeros((1, 4, 1), np.float32)}}, sample_rate=4)
writer.close()
assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None, "TF imported"
assert flax_cyclic.read_scalars({logdir!r}) == {{"loss": [(1, 0.5), (2, 0.25)]}}
print("ok")
"""


@pytest.mark.parametrize("block", [True, False], ids=["tensorflow-blocked", "tensorflow-installed"])
def test_it_writes_without_importing_tensorflow(tmp_path, block):
    script = textwrap.dedent(WITHOUT_TENSORFLOW).format(block=block, logdir=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "ok"
    print(f"tensorflow {'blocked' if block else 'installed'}: {done.stdout.splitlines()[0]}")


# --- a real TensorBoard ------------------------------------------------------------------


def _served_images(url: str, run: str, tag: str, sample: int) -> list[tuple[int, np.ndarray]]:
    """The images TensorBoard's server shows for a run's tag and sample: (step, pixels)."""
    query = urllib.parse.urlencode({"run": run, "tag": tag, "sample": sample})
    with urllib.request.urlopen(f"{url}/images/images?{query}", timeout=10) as response:
        entries = json.loads(response.read())
    shown = []
    for entry in entries:
        with urllib.request.urlopen(
            f"{url}/images/individualImage?{entry['query']}", timeout=10
        ) as response:
            shown.append((entry["step"], np.asarray(Image.open(io.BytesIO(response.read())))))
    return shown


def _served_hparams(url: str) -> dict[str, dict]:
    """The hparams TensorBoard's server shows, by run (a session; equal ones share a group)."""
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    query = {"experimentName": "", "colParams": [], "startIndex": 0, "sliceSize": 100}
    request = urllib.request.Request(
        f"{url}/hparams/session_groups",
        data=json.dumps({**query, "allowedStatuses": statuses}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        groups = json.loads(response.read())["sessionGroups"]
    return {session["name"]: group["hparams"] for group in groups for session in group["sessions"]}


@pytest.mark.slow
def test_a_real_tensorboard_shows_the_same_scalars_images_and_hparams(tmp_path):
    from test_writers import tensorboard_server

    images = {"gray": _images()["float32_gray"], "rgb": _images()["uint8_rgb"]}
    for name, make in (("clu", clu), ("own", own)):
        writer = make(tmp_path / name)
        for step in range(1, 21):
            writer.write_scalars(step, {"loss": 1 / step, "lr": np.float32(0.1 * step)})
        writer.write_scalars(21, {"loss": float("nan")})
        writer.write_images(3, images)
        writer.write_hparams({"lr": 0.1, "model": {"width": 32, "kind": "mlp"}, "flag": True})
        writer.close()
    with tensorboard_server(tmp_path, ready_tag="loss", run="clu") as scalars:
        deadline = time.monotonic() + 60
        while len(scalars("loss", "own")) < 21:  # the second run may load a moment later
            assert time.monotonic() < deadline, "TensorBoard did not load the second run"
            time.sleep(0.5)
        for tag in ("loss", "lr"):
            expected, got = scalars(tag, "clu"), scalars(tag, "own")
            assert len(got) == len(expected) == (21 if tag == "loss" else 20)
            assert [s for s, _ in got] == [s for s, _ in expected]
            np.testing.assert_array_equal([v for _, v in got], [v for _, v in expected])
        for tag, sample in itertools.product(images, (0, 1)):  # two images per call
            expected, got = (
                _served_images(scalars.url, run, tag, sample) for run in ("clu", "own")
            )
            assert [s for s, _ in got] == [s for s, _ in expected] == [3]
            np.testing.assert_array_equal(got[0][1], expected[0][1])
        hparams = _served_hparams(scalars.url)
        assert hparams["own"] == hparams["clu"]
        assert hparams.keys() == {"clu", "own"}
        assert hparams["own"] == {"lr": 0.1, "model.width": 32, "model.kind": "mlp", "flag": True}

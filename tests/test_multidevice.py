"""Data-parallel training on a mesh of simulated CPU devices, and resume onto fewer devices.

Each run is a subprocess (tests/workers/mesh_worker.py): the number of CPU devices is fixed when JAX
starts (``--xla_force_host_platform_device_count``).
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).parent / "workers" / "mesh_worker.py"


def _run(devices: int, workdir: pathlib.Path, steps: int, *flags: str) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(WORKER), str(devices), str(workdir), str(steps), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _params(workdir: pathlib.Path, steps: int) -> list[np.ndarray]:
    with np.load(workdir / f"params-{steps}.npz") as data:
        return [data[key] for key in sorted(data, key=lambda k: int(k.split("_")[1]))]


def _assert_close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        # The mesh sums the gradient over 8 shards in another order: float32 rounding only.
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_average_lives_on_the_mesh_and_resumes_on_another_device_count(tmp_path):
    whole = _run(8, tmp_path / "whole", 12, "--mesh", "--average")
    assert whole["average_devices"] == whole["kernel_devices"] == 8
    _run(8, tmp_path / "resumed", 8, "--mesh", "--save-every", "4", "--average")
    resumed = _run(4, tmp_path / "resumed", 12, "--mesh", "--save-every", "4", "--average")
    assert resumed["resumed_from"] == 8
    assert resumed["average_devices"] == 4
    assert resumed["compilations_after_first_step"] == 0
    # The parameters, then the averaged weights (snapshots after 2, 4, ..., 12 steps).
    _assert_close(_params(tmp_path / "resumed", 12), _params(tmp_path / "whole", 12))


@pytest.mark.slow
def test_data_parallel_on_8_devices_then_resume_on_4(tmp_path):
    single = _run(1, tmp_path / "single", 12)
    assert single["devices"] == 1

    mesh = _run(8, tmp_path / "mesh", 12, "--mesh")
    assert mesh["devices"] == 8
    assert mesh["kernel_devices"] == 8  # the parameters live on the whole mesh
    assert (
        mesh["compilations_after_first_step"] == 0
    )  # one compilation: the LR writes retrace nothing
    assert mesh["lr"] == single["lr"]
    _assert_close(_params(tmp_path / "mesh", 12), _params(tmp_path / "single", 12))

    # Saved on 8 devices at steps 4 and 8, resumed on 4 devices, finished at 12.
    first = _run(8, tmp_path / "resumed", 8, "--mesh", "--save-every", "4")
    assert first["last_epoch"] == 8
    resumed = _run(4, tmp_path / "resumed", 12, "--mesh", "--save-every", "4")
    assert resumed["resumed_from"] == 8
    assert resumed["kernel_devices"] == 4
    assert resumed["compilations_after_first_step"] == 0
    assert resumed["last_epoch"] == 12
    _assert_close(_params(tmp_path / "resumed", 12), _params(tmp_path / "mesh", 12))


DISTRIBUTED = pathlib.Path(__file__).parent / "workers" / "distributed_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_job(workdir: pathlib.Path, steps: int, *extra: str, processes: int = 2) -> list:
    workdir.mkdir(parents=True, exist_ok=True)
    port = str(_free_port())
    command = [str(DISTRIBUTED), str(processes), port, str(workdir), str(steps), "4", *extra]
    return [
        subprocess.Popen(
            [sys.executable, command[0], str(i), *command[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]


def _finish_job(procs: list) -> list[dict]:
    """Waits for every process of one job; kills them all if any fails or hangs."""
    try:
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def _distributed(workdir: pathlib.Path, steps: int, processes: int = 2) -> list[dict]:
    """Runs every process of one job to the end."""
    return _finish_job(_start_job(workdir, steps, processes=processes))


@pytest.mark.slow
def test_two_processes_checkpoint_stop_restart_and_finish(tmp_path):
    uninterrupted = _distributed(tmp_path / "uninterrupted", 12)
    assert [r["process"] for r in uninterrupted] == [0, 1]
    assert all(r["devices"] == 4 and r["local_devices"] == 2 for r in uninterrupted)
    # The scheduler state is identical on every process.
    assert len({r["scheduler_state"] for r in uninterrupted}) == 1

    stopped = _distributed(tmp_path / "run", 8)  # saves at 4, 6 (epoch end) and 8, then stops
    assert all(r["last_epoch"] == 8 for r in stopped)
    resumed = _distributed(tmp_path / "run", 12)
    assert all(r["resumed_from"] == 8 for r in resumed)
    assert {r["scheduler_state"] for r in resumed} == {uninterrupted[0]["scheduler_state"]}
    # Finished equal to the uninterrupted job (the same collectives in the same order).
    for a, b in zip(
        _params(tmp_path / "run", 12), _params(tmp_path / "uninterrupted", 12), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    # Only process 0 wrote events: one event file per run, named after its process id.
    writers = {str(r["pid"]) for r in stopped + resumed if r["process"] == 0}
    # (a resumed run also leaves a restart marker file, events.out.tfevents.<time>, not counted)
    events = sorted((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*.v2"))
    assert len(events) == 2
    # events.out.tfevents.<time>.<host>.<pid>.<n>.v2
    assert {re.search(r"\.(\d+)\.\d+\.v2$", e.name)[1] for e in events} == writers


@pytest.mark.slow
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    procs = _start_job(tmp_path / "run", 40, "0.25")
    marker = tmp_path / "run" / "process-1.step"
    deadline = time.monotonic() + 180
    while not (marker.exists() and marker.read_text() and int(marker.read_text()) >= 3):
        assert time.monotonic() < deadline, "the job did not reach step 3"
        assert all(proc.poll() is None for proc in procs), procs[0].communicate()[1][-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # process 1 only
    stopped = _finish_job(procs)
    # Both processes stopped at the one step they agreed on, saved it, and ended normally.
    assert all(r["preempted"] for r in stopped)
    step = stopped[0]["last_epoch"]
    assert 3 < step < 40
    assert {r["last_epoch"] for r in stopped} == {step}
    assert {r["train_end_at"] for r in stopped} == {step}
    assert all(step in r["saved_steps"] for r in stopped)
    # Resumed, the job finishes equal to an uninterrupted one.
    resumed = _distributed(tmp_path / "run", 12 if step < 12 else step + 4)
    total = 12 if step < 12 else step + 4
    assert all(r["resumed_from"] == step for r in resumed)
    _distributed(tmp_path / "uninterrupted", total)
    for a, b in zip(
        _params(tmp_path / "run", total), _params(tmp_path / "uninterrupted", total), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_batch_that_does_not_divide_over_the_data_axis_is_a_clear_error():
    script = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
import jax, numpy as np, optax
from flax import nnx
from flax_cyclic import Trainer
model = nnx.Linear(8, 3, rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
batch = (np.ones((16, 8), np.float32), np.zeros(16, np.int32))
try:
    Trainer(model, optimizer, mesh=mesh, progress=False).fit([batch], num_steps=1)
except ValueError as error:
    print(error)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("Trainer: the batch leaf [0] is of shape (16, 8), but each")
    assert "a multiple of 3" in done.stdout

"""Data-parallel training on a mesh of simulated CPU devices, and resume onto fewer devices.

Each run is a subprocess (tests/mesh_worker.py): the number of CPU devices is fixed when JAX
starts (``--xla_force_host_platform_device_count``).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("mesh_worker.py")


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

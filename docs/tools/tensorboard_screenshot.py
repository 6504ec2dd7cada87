"""Makes docs/images/tensorboard_learning_rate.png from a real TensorBoard in headless Chromium.

    python docs/tools/tensorboard_screenshot.py

Trains a small model with a triangular2 CyclicLR and the LR callback writing to a fresh log
directory, starts `tensorboard` on a free local port, and has Debian's `chromium` take a
screenshot of the learning-rate chart. Needs the `tensorboard` extra and `chromium`
(apt-get install chromium).
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import jax
import numpy as np
import optax
from flax import nnx

from flax_cyclic import CyclicLR, LRSchedulerCallback, Trainer, create_writer

OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "images" / "tensorboard_learning_rate.png"


def train(logdir: str) -> None:
    """800 steps of a triangular2 CyclicLR, logged to ``logdir``."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(50, 32, 8)).astype(np.float32)
    train_data = [(x, (x.sum(1) > 0).astype(np.int32)) for x in xs]
    model = nnx.Sequential(
        nnx.Linear(8, 32, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(32, 2, rngs=nnx.Rngs(1))
    )
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    scheduler = CyclicLR(base_lr=0.001, max_lr=0.01, step_size_up=100, mode="triangular2")
    writer = create_writer(logdir)
    callbacks = [LRSchedulerCallback(scheduler, writer=writer)]
    Trainer(model, optimizer, callbacks=callbacks, writer=writer, progress=False).fit(
        train_data, num_steps=800
    )
    writer.close()


def main() -> int:
    """Trains, serves, screenshots; returns the exit status."""
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as root:
        logdir = f"{root}/logs"
        train(logdir)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "tensorboard.main", "--logdir", logdir),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5)
                    break
                except OSError:
                    time.sleep(0.5)
            url = (
                f"{base}/?darkMode=false#scalars&tagFilter=%5Elearning_rate%24"
                "&_ignoreYOutliers=false&_smoothingWeight=0"
            )
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={root}/chromium",
                    "--window-size=1200,800",
                    "--virtual-time-budget=20000",
                    f"--screenshot={OUTPUT}",
                    url,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=180,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a TensorBoard writer costs a process: CLU's (TensorFlow) against TensorBoard's own.

Each round starts a fresh Python process per writer, in turn, and times in it (1) ``import
flax_cyclic`` (JAX, Flax, optax, Orbax: the same for both), (2) ``create_writer(logdir,
backend=...)`` and its first ``write_scalars`` + ``flush``, which import the writer's libraries
(CLU and TensorFlow, or TensorBoard's event writer) and open the event file, and (3) 1,000 more
scalars written and flushed. The table shows the median over the rounds.

    python benchmarks/writer_import.py [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile

BACKENDS = {"clu": "CLU's writer (TensorFlow)", "tensorboard": "TensorBoard's writer"}

# Run in a fresh process: prints the three times as JSON.
TIMED = """
import json, sys, time
start = time.perf_counter()
import flax_cyclic
imported = time.perf_counter()
writer = flax_cyclic.create_writer(sys.argv[1], backend=sys.argv[2], asynchronous=False)
writer.write_scalars(0, {"learning_rate": 0.1})
writer.flush()
first = time.perf_counter()
for step in range(1, 1001):
    writer.write_scalars(step, {"learning_rate": 0.1 / step})
writer.flush()
done = time.perf_counter()
writer.close()
loaded = sorted(name for name in ("tensorflow", "clu") if sys.modules.get(name))
print(json.dumps([imported - start, first - imported, done - first, loaded]))
"""


def measure(rounds: int = 5) -> list[str]:
    """Runs the rounds; returns the Markdown table."""
    times: dict[str, list[list[float]]] = {backend: [] for backend in BACKENDS}
    loaded: dict[str, list[str]] = {}
    for _ in range(rounds):
        for backend in BACKENDS:
            with tempfile.TemporaryDirectory() as logdir:
                done = subprocess.run(
                    [sys.executable, "-c", TIMED, logdir, backend],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            *seconds, loaded[backend] = json.loads(done.stdout.splitlines()[-1])
            times[backend].append(seconds)
    lines = [
        "| writer | `import flax_cyclic` (s) | `create_writer` + first write (s) "
        "| 1,000 more scalars (s) | imported |",
        "|---|---:|---:|---:|---|",
    ]
    for backend, label in BACKENDS.items():
        medians = [statistics.median(column) for column in zip(*times[backend], strict=True)]
        shown = ", ".join(loaded[backend]) or "neither TensorFlow nor CLU"
        lines.append(
            f"| {label} | {medians[0]:.2f} | {medians[1]:.2f} | {medians[2]:.3f} | {shown} |"
        )
    return lines


def section(lines: list[str], machine: str) -> str:
    """The section of docs/benchmarks.md: what is measured, how, and the table."""
    about = " ".join(__doc__.split("\n\n")[1].split())
    return (
        "## A TensorBoard writer: CLU's and TensorBoard's\n\n"
        f"`create_writer(logdir, backend='clu' | 'tensorboard')`. {about}\n\n"
        f"Measured on {machine} with `python benchmarks/writer_import.py` (also part of "
        "`make bench`).\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    print("\n".join(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))

"""Benchmarks, printed as ratios of candidates timed side by side in one process.

1. Host cost of a scheduler step: ``step()`` + ``get_last_lr()`` of every scheduler vs PyTorch's.
2. Train-step throughput with the LR callback vs the in-graph optax schedule and a constant LR.
3. How long the loop blocks per checkpoint save, async vs sync.
4. Several train steps per dispatch: against hand-written loops, and how a dispatch runs its
   steps by default (``dispatch``, ``dispatch_modes``).
5. What a TensorBoard writer costs a process: CLU's and TensorBoard's own (``writer_import``).

Run with `make bench` (or `python benchmarks/run.py [--output docs/benchmarks.md]`). Candidates
are interleaved over several rounds and the best round is kept (noise on a shared machine only
ever adds time). Ratios, not absolute times, are the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import timeit
import warnings
from collections.abc import Callable

import jax

import flax_cyclic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import callback_overhead
import checkpoint_blocking
import dispatch
import dispatch_modes
import writer_import

LR = 1e-3
GROUP_LRS = [1e-4, 1e-3, 1e-3, 1e-2]
CYCLE = dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000)

# case -> (flax_cyclic scheduler, PyTorch scheduler of an optimizer); same configuration.
CASES: dict[str, tuple[Callable[[], object], Callable[[object], object]]] = {
    "CyclicLR triangular, 1 group": (
        lambda: flax_cyclic.CyclicLR(**CYCLE),
        lambda o: _torch().optim.lr_scheduler.CyclicLR(o, **CYCLE, cycle_momentum=False),
    ),
    "CyclicLR triangular2, 1 group": (
        lambda: flax_cyclic.CyclicLR(**CYCLE, mode="triangular2"),
        lambda o: _torch().optim.lr_scheduler.CyclicLR(
            o, **CYCLE, mode="triangular2", cycle_momentum=False
        ),
    ),
    "CyclicLR exp_range, 1 group": (
        lambda: flax_cyclic.CyclicLR(**CYCLE, mode="exp_range", gamma=0.99994),
        lambda o: _torch().optim.lr_scheduler.CyclicLR(
            o, **CYCLE, mode="exp_range", gamma=0.99994, cycle_momentum=False
        ),
    ),
    "CyclicLR triangular, 4 groups + momentum": (
        lambda: flax_cyclic.CyclicLR(
            GROUP_LRS, [10 * lr for lr in GROUP_LRS], step_size_up=2000, cycle_momentum=True
        ),
        lambda o: _torch().optim.lr_scheduler.CyclicLR(
            o, GROUP_LRS, [10 * lr for lr in GROUP_LRS], step_size_up=2000
        ),
    ),
    "OneCycleLR cos, 1 group + momentum": (
        lambda: flax_cyclic.OneCycleLR(max_lr=0.1, total_steps=10**9),
        lambda o: _torch().optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10**9),
    ),
    "CosineAnnealingLR, 1 group": (
        lambda: flax_cyclic.CosineAnnealingLR(base_lr=LR, T_max=5000),
        lambda o: _torch().optim.lr_scheduler.CosineAnnealingLR(o, T_max=5000),
    ),
    "CosineAnnealingWarmRestarts T_mult=2, 1 group": (
        lambda: flax_cyclic.CosineAnnealingWarmRestarts(base_lr=LR, T_0=100, T_mult=2),
        lambda o: _torch().optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2),
    ),
}


def _torch():
    import torch

    return torch


def ours(make: Callable[[], object]) -> Callable[[], object]:
    scheduler = make()

    def call():
        scheduler.step()
        return scheduler.get_last_lr()

    return call


def pytorch(make_ours: Callable[[], object], make: Callable[[object], object]) -> Callable | None:
    try:
        torch = _torch()
    except ImportError:
        return None
    groups = make_ours().num_groups
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    lrs = GROUP_LRS if groups > 1 else [LR]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)], lr=LR, momentum=0.9
    )
    scheduler = make(optimizer)

    def call():
        scheduler.step()
        return scheduler.get_last_lr()

    return call


def jnp_on_host(make: Callable[[], object]) -> Callable[[], object]:
    # What evaluating the formula with jax.numpy on every host step costs (braintools does
    # this): a device dispatch per step, even for a compiled schedule.
    scheduler = make()
    schedules = [scheduler.as_schedule(group) for group in range(scheduler.num_groups)]
    step = 0

    def call():
        nonlocal step
        step += 1
        return [float(schedule(step)) for schedule in schedules]

    return call


# The models of callback_overhead that the text quotes.
CNN = "MNIST CNN, batch 128"
MLP = "tiny MLP, batch 64"
EVEN = 0.03
"""Ratios within this of 1 count as even where the text draws a conclusion from them."""


def _scheduler_name(case: str) -> str:
    """``"OneCycleLR cos, 1 group"`` -> ``"`OneCycleLR` (cos, 1 group)"``."""
    name, _, detail = case.partition(" ")
    return f"`{name}` ({detail})" if detail else f"`{name}`"


def scheduler_text(rows: list[tuple[str, dict]], cnn: dict[str, float]) -> str:
    """The sentences under the scheduler table, all from the measured numbers.

    Args:
        rows: ``(case, result)`` per case, ``result`` as from :func:`best_microseconds`, with a
            ``"PyTorch"`` entry where PyTorch is installed.
        cnn: The MNIST CNN's numbers from ``callback_overhead.measure``.
    """
    worst_case, worst = max(
        ((case, result["flax_cyclic"][0]) for case, result in rows), key=lambda row: row[1]
    )
    constant = cnn["functional jit, constant LR"]
    step_us = 1e6 / constant
    times = float(f"{step_us / worst:.2g}")  # two significant digits
    sentences = [
        f"The most a scheduler costs on the host is {worst:.2f} µs per step, for "
        f"{_scheduler_name(worst_case)}; a train step of the MNIST CNN below takes "
        f"{step_us / 1e3:.0f} ms on this machine ({constant:.1f} steps/s with a constant "
        f"learning rate), some {times:,.0f} times as long."
    ]
    if not all("PyTorch" in result for _, result in rows):
        sentences.append("PyTorch is not installed here, so there is no comparison with it.")
        return " ".join(sentences)
    ratios = [(case, result["PyTorch"][0] / result["flax_cyclic"][0]) for case, result in rows]
    slower = [(case, ratio) for case, ratio in ratios if ratio < 1]
    if not slower:
        low, high = min(r for _, r in ratios), max(r for _, r in ratios)
        sentences.append(
            f"None is slower than PyTorch's: PyTorch takes {low:.1f} to {high:.1f} times as long."
        )
    else:
        named = [
            f"{_scheduler_name(case)}, at {1 / ratio:.1f} times PyTorch's time"
            for case, ratio in slower
        ]
        if len(slower) == 1:
            sentences.append(f"The only one slower than PyTorch's is {named[0]}.")
        else:
            sentences.append(
                f"{len(slower)} of the {len(rows)} are slower than PyTorch's: "
                + "; ".join(named)
                + "."
            )
        if any(case.startswith("OneCycleLR") for case, _ in slower):
            sentences.append(
                "`OneCycleLR` evaluates its phase and its cosine twice per step (learning rate "
                "and momentum) through the formula code it shares with its jitted schedule."
            )
    return " ".join(sentences)


def callback_text(result: callback_overhead.Result) -> str:
    """The sentences under the train-loop tables, all from the measured numbers."""

    def ratio(model: str, variant: str) -> str:
        return f"{result.models[model][f'{variant} / reference']:.2f}"

    trainer, nnx_jit, cached = (
        "Trainer + LR callback",
        "nnx.jit loop + LR callback",
        "nnx.cached_partial loop + LR callback",
    )
    sentences = [
        f"The `Trainer` with the LR callback runs at {ratio(MLP, trainer)} (tiny MLP) and "
        f"{ratio(CNN, trainer)} (MNIST CNN) times the steps/s of the reference, the "
        f"functional `jax.jit` loop with the same optimizer and an in-graph schedule; a "
        f"hand-written loop with the callback around an `nnx.jit` step at {ratio(MLP, nnx_jit)} "
        f"and {ratio(CNN, nnx_jit)}, and around `nnx.cached_partial` at {ratio(MLP, cached)} and "
        f"{ratio(CNN, cached)}.",
        f"On the tiny MLP, the reference pays for `optax.inject_hyperparams` computing the "
        f"learning rate inside its step: the same functional loop without it "
        f"(`optax.sgd(schedule)`) runs at {ratio(MLP, 'functional jit, in-graph schedule')} "
        f"times the reference, with a constant learning rate at "
        f"{ratio(MLP, 'functional jit, constant LR')}. The Trainer injects too, but its values "
        "come from the host and pass through its compiled step unchanged, which returns none "
        "of them.",
    ]
    for model, per_donation in result.buffers.items():
        donated, kept = per_donation[True], per_donation[False]
        if donated["aliased"] >= donated["state"]:
            sentences.append(
                f"{model}: with donation the step writes its {donated['state']:,} bytes of "
                f"parameters and optimizer state into its own arguments, so no second copy is "
                f"alive across a step; without it, a step needs {kept['peak']:,} bytes of "
                f"buffers at once instead of {donated['peak']:,}."
            )
        else:
            sentences.append(
                f"{model}: only {donated['aliased']:,} of {donated['state']:,} bytes of state "
                "are written in place: a second copy of the rest is alive across a step."
            )
    return " ".join(sentences)


def best_microseconds(candidates: dict[str, Callable], number: int, rounds: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm up (compilation, caches)
    for _ in range(rounds):
        for name, fn in candidates.items():  # interleaved: drift hits every candidate alike
            times[name].append(timeit.timeit(fn, number=number) / number * 1e6)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=10_000, help="calls per timing round")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--output", help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # PyTorch warns about step() before optimizer.step()

    rows = []
    for case, (make_ours, make_torch) in CASES.items():
        candidates = {"flax_cyclic": ours(make_ours), "jnp on host": jnp_on_host(make_ours)}
        torch_fn = pytorch(make_ours, make_torch)
        if torch_fn is not None:
            candidates["PyTorch"] = torch_fn
        jnp_number = max(1, args.number // 50)
        result = best_microseconds(
            {k: v for k, v in candidates.items() if k != "jnp on host"}, args.number, args.rounds
        )
        result.update(best_microseconds({"jnp on host": candidates["jnp on host"]}, jnp_number, 3))
        rows.append((case, result))

    header = (
        "| case | flax_cyclic µs/step | PyTorch µs/step | PyTorch / flax_cyclic "
        "| jnp on host µs/step |"
    )
    lines = [header, "|---|---:|---:|---:|---:|"]
    for case, result in rows:
        mine = result["flax_cyclic"][0]
        theirs = result.get("PyTorch", (float("nan"),))[0]
        lines.append(
            f"| {case} | {mine:.2f} | {theirs:.2f} | {theirs / mine:.1f}x "
            f"| {result['jnp on host'][0]:.1f} |"
        )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, jax {jax.__version__}"
    )
    try:
        import torch

        machine += f", torch {torch.__version__}"
    except ImportError:
        machine += ", torch not installed (no PyTorch column)"
    table = "\n".join(lines)
    print(table)
    print(f"\nmachine: {machine}")
    print("cost = scheduler.step() + get_last_lr(); best of the interleaved rounds\n")
    callback = callback_overhead.measure()
    compilations = callback.compilations
    callback_table = "\n".join(callback.lines)
    print(callback_table)
    print(f"\ncompilations during the timed rounds: {compilations}\n")
    checkpoint_table = "\n".join(checkpoint_blocking.measure())
    print(checkpoint_table)
    dispatched = dispatch.measure()
    dispatch_table = "\n".join(dispatched.lines)
    print(dispatch_table)
    print(dispatch.text(dispatched))
    sync_lines, sync_costs = dispatch.measure_sync()
    sync_table = "\n".join(sync_lines)
    print(sync_table)
    modes = dispatch_modes.section(dispatch_modes.measure(), machine)
    print(modes)
    writers = writer_import.section(writer_import.measure(), machine)
    print(writers)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(
                "# Benchmarks\n\n"
                "Reproduce with `make bench` (`python benchmarks/run.py --output "
                "docs/benchmarks.md`). Every figure is a ratio of candidates timed side by side "
                "in one process, interleaved over many rounds; absolute times depend on the "
                f"machine.\n\nMachine: {machine}.\n\n"
                "## Host cost of a scheduler step\n\n"
                "`scheduler.step()` followed by `get_last_lr()` for each scheduler, next to "
                "the same scheduler of `torch.optim.lr_scheduler` with the same configuration "
                "(whose `step()` also writes the learning rate, and the momentum where it is "
                "cycled, into its optimizer) and to evaluating the same formula through "
                "`jax.numpy` on every step, as braintools does. Best of the rounds (noise only "
                "adds time).\n\n"
                f"{table}\n\n"
                f"{scheduler_text(rows, callback.models[CNN])}\n\n"
                "## Train-loop throughput against a functional `jax.jit` loop\n\n"
                + callback_overhead.__doc__.split("\n", 2)[2].replace("\n", " ").strip()
                + " Steps/s are medians over the rounds; a ratio is the median of the "
                "per-round ratios (the variants of a round run back to back under the same "
                "load).\n\n"
                f"{callback_table}\n\n"
                f"{callback_text(callback)}\n\n"
                f"XLA compilations during the timed rounds (all variants): {compilations}.\n\n"
                "## Checkpoint saves: async vs sync\n\n"
                + checkpoint_blocking.__doc__.split("\n", 2)[2].replace("\n", " ").strip()
                + " Medians over alternating saves.\n\n"
                f"{checkpoint_table}\n\n"
                "## Several train steps per dispatch\n\n"
                + dispatch.__doc__.split("\n", 2)[2].replace("\n", " ").strip()
                + "\n\n"
                f"{dispatch_table}\n\n"
                f"{dispatch.text(dispatched)}\n\n"
                "## A hook that reaches the model at every step\n\n"
                + " ".join(dispatch.measure_sync.__doc__.split("\n\n")[1].split())
                + " The same runs as above (a hook reading `loop.model` at every step's end, "
                "next to the same Trainer without it).\n\n"
                f"{sync_table}\n\n"
                f"{dispatch.sync_text(sync_costs)}\n\n"
                f"{modes}\n"
                f"{writers}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

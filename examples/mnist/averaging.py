"""Weight averaging and snapshot ensembles on Fashion-MNIST, against the usual baselines.

For each seed and model (the CNN of ``train.py``, and an MLP with BatchNorm) it trains three
runs of the same budget (4 epochs, 1,872 steps of 128, SGD with momentum 0.9) with
``flax_cyclic.Trainer``:

- ``constant``: the learning rate 0.1, the best of the grid in README.md's results table, with
  (a control, which does not change the run) SWA's textbook case: the average of the weights
  every 78 steps of the second half at that constant rate (12 snapshots);
- ``onecycle``: ``OneCycleLR`` peaking at 0.1 over the run (momentum cycled 0.85 to 0.9);
- ``restarts``: ``CosineAnnealingWarmRestarts`` from 0.1 to 0 in 6 cycles of 312 steps (the
  last ends at the run's last update), with ``WeightAveraging`` (SWA of the cycle ends after
  the first epoch: 5 snapshots; and after half the run: 3) and ``SnapshotEnsemble`` (the 5
  newest cycle ends).

It measures the test accuracy on the 10,000 test images of each run's final model, of each
average (its BatchNorm statistics recomputed with ``update_batch_stats``; the MLP's also
without), of the ensembles of the newest 3 and 5 snapshots, and of each snapshot alone. Every
number goes to ``OUT/results.json`` as soon as it is measured (a run found there is not
trained again) and the script prints two markdown tables: every measure by seed, with mean
and sample standard deviation, and the snapshots alone::

    python examples/mnist/averaging.py --out /tmp/averaging --seeds 0,1,2 --models cnn,mlp
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import input_pipeline
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import train
from configs import default
from flax import nnx

import flax_cyclic

PEAK_LR = 0.1  # the best constant learning rate of README.md's grid; the peak of the others
CYCLE_STEPS = 312  # 6 cycles of 2/3 of an epoch in the 1,872 steps: a cycle end is the last step
SWA_STARTS = {"swa5": 468, "swa3": 936}  # after one epoch (5 cycle ends), after half (3)
ENSEMBLES = (3, 5)
TAIL_START, TAIL_EVERY = 936, 78  # the constant run's SWA: 12 snapshots in the second half
MODELS = ("cnn", "mlp")
RUNS = ("constant", "onecycle", "restarts")


class MLP(nnx.Module):
    """784 -> 512 -> BatchNorm -> ReLU -> 10 on the flattened image."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.linear1 = nnx.Linear(28 * 28, 512, rngs=rngs)
        self.norm = nnx.BatchNorm(512, rngs=rngs)
        self.linear2 = nnx.Linear(512, input_pipeline.NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of images ``x`` of shape ``(batch, 28, 28, 1)``."""
        x = x.reshape(x.shape[0], -1)
        return self.linear2(nnx.relu(self.norm(self.linear1(x))))


def run_config(seed: int, run: str) -> ml_collections.ConfigDict:
    """The example's default configuration for ``run`` (4 epochs, batch 128, momentum 0.9)."""
    config = default.get_config()
    config.seed = seed
    config.progress = False
    config.schedule = "constant" if run == "restarts" else run
    config.learning_rate = PEAK_LR
    config.max_lr = PEAK_LR
    return config


def create_model(name: str, config: ml_collections.ConfigDict) -> tuple[Any, nnx.Optimizer]:
    """The CNN of ``train.py`` or the MLP, and SGD with an injected learning rate."""
    if name == "cnn":
        return train.create_model_and_optimizer(config)
    model = MLP(rngs=nnx.Rngs(config.seed))
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=config.learning_rate, momentum=config.momentum
    )
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def create_callbacks(
    run: str, config: ml_collections.ConfigDict, total_steps: int, snapshots: pathlib.Path
) -> tuple[list[flax_cyclic.Callback], dict[str, Any]]:
    """The run's callbacks (the LR callback first) and, by name, those measured afterwards."""
    if run == "constant":  # SWA's textbook case, a control: it does not change the run
        tail = flax_cyclic.WeightAveraging(
            every_steps=TAIL_EVERY, start_step=TAIL_START, evaluate=False, state_key="swa_tail"
        )
        return [tail], {"swa_tail": tail}
    if run == "onecycle":
        return [flax_cyclic.LRSchedulerCallback(train.create_scheduler(config, total_steps))], {}
    scheduler = flax_cyclic.CosineAnnealingWarmRestarts(
        base_lr=PEAK_LR, T_0=CYCLE_STEPS, eta_min=0.0
    )
    measured: dict[str, Any] = {
        name: flax_cyclic.WeightAveraging(start_step=start, evaluate=False, state_key=name)
        for name, start in SWA_STARTS.items()
    }
    measured["ensemble"] = flax_cyclic.SnapshotEnsemble(snapshots, max_snapshots=max(ENSEMBLES))
    return [flax_cyclic.LRSchedulerCallback(scheduler), *measured.values()], measured


@nnx.jit
def _probabilities(model: nnx.Module, images: jax.Array) -> jax.Array:
    return jax.nn.softmax(model(images), axis=-1)


def accuracy(models: Sequence[nnx.Module], batches: Iterable[dict[str, Any]]) -> float:
    """Test accuracy of the mean softmax probability of ``models`` (one model: its own)."""
    models = [nnx.clone(model) for model in models]
    for model in models:
        model.eval()
    correct, count = 0, 0
    for batch in batches:
        images = jnp.asarray(batch["image"])
        mean = np.mean([np.asarray(_probabilities(m, images)) for m in models], axis=0)
        correct += int((mean.argmax(-1) == batch["label"]).sum())
        count += len(batch["label"])
    return correct / count


def has_batch_norm(model: nnx.Module) -> bool:
    """Whether ``model`` has an ``nnx.BatchNorm`` layer."""
    return any(isinstance(module, nnx.BatchNorm) for _, module in nnx.iter_modules(model))


def with_batch_stats(model: nnx.Module, train_batches: Iterable[Any]) -> nnx.Module:
    """A copy of ``model`` with its BatchNorm statistics recomputed on one train epoch."""
    model = nnx.clone(model)
    flax_cyclic.update_batch_stats(model, train_batches)
    return model


def measure_averages(
    model: nnx.Module, measured: dict[str, Any], train_batches: Any, test: list
) -> dict[str, Any]:
    """The averages' and the ensemble's test accuracies, and what they were made of."""
    norm = has_batch_norm(model)
    results: dict[str, Any] = {}
    for name, averaging in measured.items():
        if not isinstance(averaging, flax_cyclic.WeightAveraging):
            continue
        average = averaging.averaged_model()
        results[f"{name}_snapshots"] = averaging.snapshots
        results[name] = accuracy([with_batch_stats(average, train_batches)], test)
        if norm:
            results[f"{name}_model_bn"] = accuracy([average], test)
    ensemble = measured.get("ensemble")
    if ensemble is None:
        return results
    results["ensemble_steps"] = ensemble.steps
    for size in ENSEMBLES:
        results[f"ens{size}"] = ensemble.evaluate(test, model, last=size)["accuracy"]
        if norm:
            members = ensemble.members(model, last=size)
            results[f"ens{size}_model_bn"] = results[f"ens{size}"]
            results[f"ens{size}"] = accuracy(
                [with_batch_stats(member, train_batches) for member in members], test
            )
    return results


def train_run(model_name: str, run: str, seed: int, workdir: pathlib.Path) -> dict[str, Any]:
    """Trains one run and returns its test accuracies, step count and time."""
    config = run_config(seed, run)
    train_data, test, total_steps = train.load_data(config)
    test = list(test)
    model, optimizer = create_model(model_name, config)
    shutil.rmtree(workdir, ignore_errors=True)
    callbacks, measured = create_callbacks(run, config, total_steps, workdir / "snapshots")
    trainer = flax_cyclic.Trainer(model, optimizer, callbacks=callbacks, progress=False)
    start = time.perf_counter()
    trainer.fit(train_data, num_steps=total_steps)
    results: dict[str, Any] = {
        "steps": trainer.step,
        "train_seconds": round(time.perf_counter() - start, 1),
        "final": accuracy([trainer.model], test),
    }
    if has_batch_norm(trainer.model):
        results["final_bn"] = accuracy([with_batch_stats(trainer.model, train_data(0))], test)
    if measured:
        results |= measure_averages(trainer.model, measured, train_data(0), test)
    return results


def measure_snapshots(model_name: str, seed: int, workdir: pathlib.Path) -> list[float]:
    """The test accuracy of each snapshot kept on disk by a ``restarts`` run, oldest first.

    Each snapshot's BatchNorm statistics (if any) are recomputed on one train epoch.
    """
    config = run_config(seed, "restarts")
    train_data, test, _ = train.load_data(config)
    template, _ = create_model(model_name, config)
    ensemble = flax_cyclic.SnapshotEnsemble(workdir / "snapshots", max_snapshots=max(ENSEMBLES))
    test = list(test)
    return [
        accuracy([with_batch_stats(member, train_data(0))], test)
        for member in ensemble.members(template)
    ]


# -- the table ----------------------------------------------------------------------------------

#: The table's rows, for each model: (run, measure, label); ``*_model_bn``: the MLP's only.
ROWS = [
    ("constant", "final", "constant 0.1 (best of the grid): final model"),
    ("constant", "final_bn", "constant 0.1: final model, BatchNorm statistics recomputed"),
    ("constant", "swa_tail", "constant 0.1: SWA every 78 steps from step 936 (12)"),
    ("constant", "swa_tail_model_bn", "constant 0.1: that SWA, the final model's BatchNorm stats"),
    ("onecycle", "final", "OneCycleLR to 0.1: final model"),
    ("onecycle", "final_bn", "OneCycleLR: final model, BatchNorm statistics recomputed"),
    ("restarts", "final", "restarts: final model (= the last snapshot)"),
    ("restarts", "final_bn", "restarts: final model, BatchNorm statistics recomputed"),
    ("restarts", "swa5", "restarts: SWA of 5 cycle ends (from step 468)"),
    ("restarts", "swa5_model_bn", "restarts: SWA of 5, the final model's BatchNorm stats"),
    ("restarts", "swa3", "restarts: SWA of 3 cycle ends (from step 936)"),
    ("restarts", "swa3_model_bn", "restarts: SWA of 3, the final model's BatchNorm stats"),
    ("restarts", "ens3", "restarts: snapshot ensemble, newest 3"),
    ("restarts", "ens3_model_bn", "restarts: ensemble of 3, the final model's BatchNorm stats"),
    ("restarts", "ens5", "restarts: snapshot ensemble, newest 5"),
    ("restarts", "ens5_model_bn", "restarts: ensemble of 5, the final model's BatchNorm stats"),
]


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(results: dict[str, Any], seeds: list[int]) -> str:
    """The markdown table: a row per model and measure, a column per seed, mean ± sample sd.

    The last column is the mean gain over the final model of the same run, in points.
    """
    head = " | ".join(f"seed {seed}" for seed in seeds)
    lines = [
        f"| model | configuration / measure | {head} | mean ± sd | vs final of the run |",
        "|---|---|" + "---:|" * (len(seeds) + 2),
    ]
    for model in MODELS:
        for run, measure, label in ROWS:
            runs = [results.get(f"{model}/{run}/seed{seed}") for seed in seeds]
            if any(r is None or measure not in r for r in runs):
                continue
            values = [r[measure] for r in runs]
            gains = [100 * (r[measure] - r["final"]) for r in runs]
            gain = "" if measure == "final" else f"{statistics.mean(gains):+.2f}"
            cells = " | ".join(f"{v:.4f}" for v in values)
            lines.append(f"| {model.upper()} | {label} | {cells} | {_mean_sd(values)} | {gain} |")
    return "\n".join(lines)


def snapshot_table(results: dict[str, Any], seeds: list[int]) -> str:
    """Each snapshot of the ``restarts`` runs alone: mean test accuracy over the seeds."""
    lines = []
    for model in MODELS:
        runs = [results.get(f"{model}/restarts/seed{seed}") for seed in seeds]
        if any(r is None or "snapshot_accuracies" not in r for r in runs):
            continue
        if not lines:
            steps = runs[0]["ensemble_steps"]
            lines += [
                "| model | " + " | ".join(f"after update {step}" for step in steps) + " |",
                "|---|" + "---:|" * len(steps),
            ]
        columns = zip(*(r["snapshot_accuracies"] for r in runs), strict=True)
        cells = " | ".join(f"{statistics.mean(column):.4f}" for column in columns)
        lines.append(f"| {model.upper()} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Trains what ``OUT/results.json`` lacks, then prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="results and snapshots")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--models", default=",".join(MODELS), help="cnn, mlp or cnn,mlp")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    models = [name for name in args.models.split(",") if name]
    if unknown := set(models) - set(MODELS):
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {MODELS}.")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for seed in seeds:
        for model in models:
            for run in RUNS:
                key = f"{model}/{run}/seed{seed}"
                if key not in results:
                    results[key] = train_run(model, run, seed, args.out / key)
                    path.write_text(json.dumps(results, indent=1, sort_keys=True))
                if run == "restarts" and "snapshot_accuracies" not in results[key]:
                    accuracies = measure_snapshots(model, seed, args.out / key)
                    results[key]["snapshot_accuracies"] = accuracies
                    path.write_text(json.dumps(results, indent=1, sort_keys=True))
                print(key, json.dumps(results[key]), flush=True)
    print(table(results, seeds))
    print()
    print(snapshot_table(results, seeds))


if __name__ == "__main__":
    main()

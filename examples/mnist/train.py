"""MNIST / Fashion-MNIST with a cyclical learning rate: the model, the steps, the run.

``train_and_evaluate(config, workdir)`` trains a small CNN with ``flax_cyclic.Trainer``: the
scheduler chosen by the config drives SGD's injected learning rate (and momentum) through an
``LRSchedulerCallback``, Orbax checkpoints go to ``workdir/checkpoints`` (running again
resumes), and CLU writes TensorBoard events to ``workdir/tensorboard``. ``find_lr(config,
workdir)`` runs the LR range test on the same model and data instead.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import input_pipeline
import jax
import ml_collections
import optax
from absl import logging
from flax import nnx

import flax_cyclic


class CNN(nnx.Module):
    """The CNN of Flax's MNIST example: two conv + pool blocks and two dense layers."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.linear1 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
        self.linear2 = nnx.Linear(256, input_pipeline.NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of images ``x`` of shape ``(batch, 28, 28, 1)``."""
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), window_shape=(2, 2), strides=(2, 2))
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.linear2(nnx.relu(self.linear1(x)))


# The train and eval steps are the Trainer's defaults (softmax cross-entropy, accuracy) on
# batches {'image': (b, 28, 28, 1) float32, 'label': (b,) int32}.
train_step = flax_cyclic.steps.classification_train_step
eval_step = flax_cyclic.steps.classification_eval_step

SCHEDULES = ("cyclic", "onecycle", "constant")


def _optional(value: int) -> int | None:
    return None if value < 0 else value


def create_model_and_optimizer(config: ml_collections.ConfigDict) -> tuple[CNN, nnx.Optimizer]:
    """The CNN and SGD with an injected learning rate and momentum (the callback sets them)."""
    model = CNN(rngs=nnx.Rngs(config.seed))
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=config.learning_rate, momentum=config.momentum
    )
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def create_scheduler(
    config: ml_collections.ConfigDict, total_steps: int
) -> flax_cyclic.LRScheduler | None:
    """The scheduler named by ``config.schedule``; ``None`` for a constant learning rate."""
    if config.schedule == "cyclic":
        return flax_cyclic.CyclicLR(
            base_lr=config.base_lr,
            max_lr=config.max_lr,
            step_size_up=config.step_size_up,
            step_size_down=_optional(config.step_size_down),
            mode=config.mode,
            gamma=config.gamma,
        )
    if config.schedule == "onecycle":
        return flax_cyclic.OneCycleLR(
            max_lr=config.max_lr,
            total_steps=total_steps,
            base_momentum=0.85,
            max_momentum=config.momentum,
        )
    if config.schedule == "constant":
        return None
    raise ValueError(
        f"config.schedule must be one of {SCHEDULES}, got schedule={config.schedule!r}."
    )


def load_data(config: ml_collections.ConfigDict) -> tuple[Any, list, int]:
    """Train batches (``epoch -> batches``), test batches and the number of train steps."""
    directory = input_pipeline.locate(config.dataset, config.data_dir or None)
    train = input_pipeline.load_split(directory, "train")
    test = input_pipeline.load_split(directory, "test")
    train_data = input_pipeline.train_batches(
        train, config.batch_size, config.seed, config.train_subset
    )
    steps_per_epoch = len(train_data(0))
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} is larger than the {len(train)} train "
            "examples (train_subset): there is not one full batch."
        )
    total = config.num_train_steps
    if total < 0:
        total = config.num_epochs * steps_per_epoch
    logging.info(
        "%s from %s: %d train examples used, %d test; %d steps of %d.",
        config.dataset,
        directory,
        steps_per_epoch * config.batch_size,
        len(test),
        total,
        config.batch_size,
    )
    return train_data, input_pipeline.eval_batches(test, config.eval_batch_size), total


def _process_rows(batches: Any) -> Any:
    """This process's rows of every global batch: its part in a multi-process run."""
    count, index = jax.process_count(), jax.process_index()
    if count == 1:
        return batches

    def rows(batch: dict[str, Any]) -> dict[str, Any]:
        size = len(batch["label"])
        if size % count:
            raise ValueError(
                f"A batch of {size} examples cannot be split over {count} processes; use batch "
                "sizes divisible by the number of processes."
            )
        part = slice(index * size // count, (index + 1) * size // count)
        return {key: value[part] for key, value in batch.items()}

    if callable(batches):  # epoch -> grain dataset
        return lambda epoch: batches(epoch).map(rows)
    return [rows(batch) for batch in batches]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains, evaluates and returns the final test metrics; resumes from ``workdir``.

    Args:
        config: The hyperparameters (see ``configs/default.py``).
        workdir: Where checkpoints (``checkpoints/``) and TensorBoard events
            (``tensorboard/``) go; running again with the same workdir resumes.

    Returns:
        ``{'test_accuracy', 'test_loss', 'avg_test_accuracy', 'avg_snapshots', 'steps',
        'resumed_from', 'workdir', 'lr_from'}``; ``lr_from`` is what ``apply_lr_from`` took
        (``None`` without ``config.lr_from``). With ``config.weight_averaging``,
        ``avg_test_accuracy`` is the test accuracy of the average of the weights at the cycle
        ends so far (``None`` before the first) and ``avg_snapshots`` their number; without,
        both are ``None``.
    """
    workdir = pathlib.Path(workdir).absolute()
    config, taken = apply_lr_from(config)
    train_data, test_data, total_steps = load_data(config)
    model, optimizer = create_model_and_optimizer(config)
    logdir = workdir / "tensorboard"
    # CLU's writer, as the Flax examples use (flax_cyclic[clu]); backend="tensorboard" writes
    # the same event files without TensorFlow.
    writer = flax_cyclic.create_writer(os.fspath(logdir), backend="clu")
    checkpointer = flax_cyclic.Checkpointer(
        workdir / "checkpoints", every_steps=config.checkpoint_every_steps
    )
    if checkpointer.latest_step() is None:  # a fresh run: record its configuration once
        writer.write_hparams(dict(config.items()))
    callbacks, averaging = create_callbacks(config, total_steps, writer)
    # Data-parallel over every device of every process (one device: an ordinary run).
    mesh = jax.make_mesh((jax.device_count(),), ("data",)) if jax.device_count() > 1 else None
    train_data, test_data = _process_rows(train_data), _process_rows(test_data)
    trainer = flax_cyclic.Trainer(
        model,
        optimizer,
        train_step=train_step,
        eval_step=eval_step,
        callbacks=callbacks,
        checkpointer=checkpointer,
        writer=writer,
        log_every_steps=config.log_every_steps,
        progress=config.progress and jax.process_index() == 0,
        mesh=mesh,
    )
    history = trainer.fit(
        train_data,
        num_steps=total_steps,
        eval_data=test_data,
        eval_every_steps=_optional(config.eval_every_steps),
    )
    final = history.eval[-1] if history.eval else trainer.evaluate(test_data)
    writer.flush()
    checkpointer.close()
    return {
        "test_accuracy": final["accuracy"],
        "test_loss": final["loss"],
        # The average's (evaluated beside the model once a snapshot is in); None without one.
        "avg_test_accuracy": final.get("avg/accuracy"),
        "avg_snapshots": None if averaging is None else averaging.snapshots,
        "steps": trainer.step,
        "resumed_from": history.resumed_from,
        "workdir": os.fspath(workdir),
        "lr_from": taken,
    }


def create_callbacks(
    config: ml_collections.ConfigDict, total_steps: int, writer: Any
) -> tuple[list[flax_cyclic.Callback], flax_cyclic.WeightAveraging | None]:
    """The LR callback of the config's scheduler and, with ``config.weight_averaging``, SWA.

    Returns:
        The callbacks (the LR callback first: the average reads its cycles) and the
        ``WeightAveraging`` callback (``None`` when ``config.weight_averaging`` is off).

    Raises:
        ValueError: For ``config.weight_averaging`` with a schedule without cycles.
    """
    callbacks: list[flax_cyclic.Callback] = []
    scheduler = create_scheduler(config, total_steps)
    if scheduler is not None:
        callbacks.append(
            flax_cyclic.LRSchedulerCallback(
                scheduler, writer=writer, log_every_steps=config.log_every_steps
            )
        )
    if not config.weight_averaging:
        return callbacks, None
    if config.schedule != "cyclic":
        raise ValueError(
            "config.weight_averaging averages the weights at each cycle's end, and "
            f"schedule={config.schedule!r} has no cycles; use --config.schedule=cyclic."
        )
    averaging = flax_cyclic.WeightAveraging()
    return [*callbacks, averaging], averaging


def find_lr(config: ml_collections.ConfigDict, workdir: str) -> flax_cyclic.LRFinderResult:
    """Runs the LR range test on the config's model and data.

    Writes the plot to ``workdir/lr_find.png`` and the result to ``workdir/lr_find.json``
    (what ``--config.lr_from`` reads).
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    train_data, _, _ = load_data(config)
    model, optimizer = create_model_and_optimizer(config)
    result = flax_cyclic.lr_find(
        model,
        optimizer,
        train_data(0),
        train_step=train_step,
        start_lr=config.lr_find_start,
        end_lr=config.lr_find_end,
        num_steps=config.lr_find_steps,
    )
    result.plot(workdir / "lr_find.png", title=f"LR range test: CNN on {config.dataset}")
    result.save(workdir / "lr_find.json")
    return result


def describe_lr_find(result: flax_cyclic.LRFinderResult, workdir: str) -> str:
    """What ``find_lr`` found, for the terminal: every suggestion and the flags to use."""
    workdir = pathlib.Path(workdir).absolute()
    lines = [f"LR range test: {len(result.lrs)} steps, stopped: {result.stop_reason}."]
    for name, lr in result.suggestions.items():
        lines.append(f"  {name:>10}: " + ("none" if lr is None else f"{lr:.4g}"))
    try:
        base_lr, max_lr = result.recommended
    except ValueError as error:
        lines.append(f"No recommendation: {error}")
    else:
        lines += [
            f"Suggested: --config.base_lr={base_lr:.3g} --config.max_lr={max_lr:.3g} "
            f"(OneCycleLR: --config.max_lr={result.onecycle_max_lr:.3g})",
            f"Or train with them: --config.lr_from={workdir / 'lr_find.json'}",
        ]
    lines += [f"Plot: {workdir / 'lr_find.png'}", f"Result: {workdir / 'lr_find.json'}"]
    return "\n".join(lines)


def apply_lr_from(
    config: ml_collections.ConfigDict,
) -> tuple[ml_collections.ConfigDict, dict[str, Any] | None]:
    """The config with the learning rates of the range test in ``config.lr_from``, if set.

    ``schedule='cyclic'`` takes ``base_lr`` and ``max_lr`` from the recommended pair,
    ``'onecycle'`` takes ``max_lr`` (``onecycle_max_lr``, the same). The given config is not
    changed.

    Returns:
        The config to train with, and what was taken: ``{'path', 'base_lr', 'max_lr'}``
        (``'onecycle'``: no ``'base_lr'``); ``None`` when ``config.lr_from`` is empty.

    Raises:
        FileNotFoundError: If there is no file at ``config.lr_from``.
        ValueError: For ``schedule='constant'``, a file that is not a saved range test, or a
            range test whose loss never fell.
    """
    if not config.lr_from:
        return config, None
    where = f"config.lr_from={config.lr_from!r}"
    if config.schedule == "constant":
        raise ValueError(
            f"{where} sets base_lr and max_lr, which schedule='constant' does not use. Use "
            "--config.schedule=cyclic or onecycle, or drop lr_from and set "
            "--config.learning_rate (e.g. the valley or minimum/10 of the range test)."
        )
    path = pathlib.Path(config.lr_from).absolute()
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: there is no file {path}. Run the LR range test first: "
            "--config.find_lr=True writes WORKDIR/lr_find.json."
        )
    try:
        result = flax_cyclic.LRFinderResult.load(path)
        base_lr, max_lr = result.recommended
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
    # OneCycleLR has no base_lr: it starts at max_lr / 25.
    taken = (
        {"max_lr": result.onecycle_max_lr}
        if config.schedule == "onecycle"
        else {"base_lr": base_lr, "max_lr": max_lr}
    )
    config = config.copy_and_resolve_references()
    config.update(taken)
    logging.info("Learning rates from %s: %s.", path, describe_taken(taken))
    return config, {"path": os.fspath(path), **taken}


def describe_taken(taken: dict[str, Any]) -> str:
    """``'base_lr=0.0137, max_lr=0.0548'``: the learning rates ``apply_lr_from`` took."""
    return ", ".join(f"{name}={value:.4g}" for name, value in taken.items() if name != "path")

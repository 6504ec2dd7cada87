"""Trains a CNN on MNIST or Fashion-MNIST with a cyclical learning rate.

This file is intentionally kept short: the work is in train.py, the hyperparameters in a
config file, e.g.

    python examples/mnist/main.py --workdir=/tmp/mnist \
        --config=examples/mnist/configs/default.py --config.num_epochs=1

Running it again with the same workdir resumes from the newest checkpoint.
--config.find_lr=True runs the LR range test instead (it writes WORKDIR/lr_find.json), and
--config.lr_from=WORKDIR/lr_find.json trains with the learning rates it recommends.
"""

import jax
import train
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for the checkpoints and the TensorBoard logs.")
# Multi-process training (jax.distributed): every process runs this same command with its own
# --process_id; see README.md. Left at their defaults, the run is a single process.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, e.g. 127.0.0.1:9876.")
flags.DEFINE_integer("num_processes", 1, "The number of processes of the job.")
flags.DEFINE_integer("process_id", 0, "This process's index, from 0.")
flags.DEFINE_integer(
    "heartbeat_timeout_seconds",
    100,
    "After how long without a heartbeat the job gives up on a dead peer and every process exits.",
)
flags.DEFINE_integer("num_cpu_devices", 0, "Simulated CPU devices per process (0: the default).")
config_flags.DEFINE_config_file(
    "config", None, "File path to the training hyperparameter configuration.", lock_config=True
)


def main(argv):
    """Trains and evaluates, or runs the LR range test with --config.find_lr=True."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    if FLAGS.num_cpu_devices:
        jax.config.update("jax_num_cpu_devices", FLAGS.num_cpu_devices)
    if FLAGS.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
            heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds,
        )
    logging.info("JAX devices: %r", jax.devices())
    config = FLAGS.config
    if config.find_lr and jax.process_count() > 1:
        raise app.UsageError("Run the LR range test (--config.find_lr=True) in one process.")
    if config.find_lr:
        result = train.find_lr(config, FLAGS.workdir)
        print(train.describe_lr_find(result, FLAGS.workdir))
        return
    results = train.train_and_evaluate(config, FLAGS.workdir)
    if jax.process_index() != 0:
        return
    if results["lr_from"] is not None:
        taken = results["lr_from"]
        print(f"Learning rates from {taken['path']}: {train.describe_taken(taken)}.")
    if results["resumed_from"] is not None:
        print(f"Resumed from the checkpoint at step {results['resumed_from']}.")
    print(
        f"Test accuracy after {results['steps']} steps: {results['test_accuracy']:.4f} "
        f"(loss {results['test_loss']:.4f})."
    )
    if results["avg_snapshots"] is not None:
        print(describe_average(results))
    print(f"Checkpoints: {results['workdir']}/checkpoints")
    print(f"TensorBoard logs: {results['workdir']}/tensorboard")
    print(f"View them: tensorboard --logdir {results['workdir']}/tensorboard")


def describe_average(results):
    """The line on the weight average (``--config.weight_averaging=True``) for the summary."""
    count = results["avg_snapshots"]
    if results["avg_test_accuracy"] is None:
        return f"Weight average: {count} cycle ends averaged, not evaluated yet."
    return (
        f"Test accuracy of the weight average of {count} cycle end"
        f"{'' if count == 1 else 's'}: {results['avg_test_accuracy']:.4f}."
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)

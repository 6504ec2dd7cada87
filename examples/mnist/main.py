"""Trains a CNN on MNIST or Fashion-MNIST with a cyclical learning rate.

This file is intentionally kept short: the work is in train.py, the hyperparameters in a
config file, e.g.

    python examples/mnist/main.py --workdir=/tmp/mnist \
        --config=examples/mnist/configs/default.py --config.num_epochs=1

Running it again with the same workdir resumes from the newest checkpoint.
"""

import jax
import train
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for the checkpoints and the TensorBoard logs.")
config_flags.DEFINE_config_file(
    "config", None, "File path to the training hyperparameter configuration.", lock_config=True
)


def main(argv):
    """Trains and evaluates, or runs the LR range test with --config.find_lr=True."""
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    logging.info("JAX devices: %r", jax.devices())
    config = FLAGS.config
    if config.find_lr:
        result = train.find_lr(config, FLAGS.workdir)
        base_lr, max_lr = result.recommended
        print(f"LR range test: {len(result.lrs)} steps, stopped: {result.stop_reason}.")
        for name, lr in result.suggestions.items():
            print(f"  {name:>10}: {lr:.4g}")
        print(f"Suggested: --config.base_lr={base_lr:.3g} --config.max_lr={max_lr:.3g}")
        print(f"Plot: {FLAGS.workdir}/lr_find.png")
        return
    results = train.train_and_evaluate(config, FLAGS.workdir)
    if results["resumed_from"] is not None:
        print(f"Resumed from the checkpoint at step {results['resumed_from']}.")
    print(
        f"Test accuracy after {results['steps']} steps: {results['test_accuracy']:.4f} "
        f"(loss {results['test_loss']:.4f})."
    )
    print(f"Checkpoints: {results['workdir']}/checkpoints")
    print(f"TensorBoard logs: {results['workdir']}/tensorboard")
    print(f"View them: tensorboard --logdir {results['workdir']}/tensorboard")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)

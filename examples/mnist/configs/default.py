"""Default hyperparameters: a CNN on Fashion-MNIST with a triangular cyclical learning rate.

Every field can be overridden on the command line, e.g. ``--config.num_epochs=1``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The default configuration."""
    config = ml_collections.ConfigDict()
    # Data: 'mnist' or 'fashion_mnist'; data_dir is searched first (see input_pipeline.py).
    config.dataset = "fashion_mnist"
    config.data_dir = ""
    config.batch_size = 128
    config.eval_batch_size = 1000  # divides the 10,000 test examples: exact means
    config.train_subset = -1  # use only the first N train examples; -1: all
    config.seed = 0
    # Length: num_train_steps, or num_epochs when it is -1.
    config.num_epochs = 4
    config.num_train_steps = -1
    # The schedule: 'cyclic' (CyclicLR), 'onecycle' (OneCycleLR) or 'constant'.
    config.schedule = "cyclic"
    config.learning_rate = 0.05  # the constant learning rate (schedule='constant')
    config.base_lr = 0.01
    config.max_lr = 0.1
    config.step_size_up = 468  # an epoch of 468 steps: two cycles in four epochs
    config.step_size_down = -1  # -1: as step_size_up
    config.mode = "triangular"  # or 'triangular2', 'exp_range'
    config.gamma = 0.9995  # exp_range's amplitude factor per step
    config.momentum = 0.9  # SGD momentum (OneCycleLR cycles it between 0.85 and this)
    # SWA: average the weights at each cycle's end (schedule 'cyclic') and report the average's
    # test accuracy beside the model's. Of the default two cycles of 936 steps only the first
    # ends inside the run (the 937th update); shorter cycles give more (see README.md).
    config.weight_averaging = False
    # Checkpoints, logs and evaluation.
    config.checkpoint_every_steps = 200
    config.log_every_steps = 50
    config.eval_every_steps = -1  # -1: at the end of every epoch only
    config.progress = True  # the progress bar on the terminal
    # --config.find_lr=True runs the LR range test instead of training; it writes
    # workdir/lr_find.png and workdir/lr_find.json.
    config.find_lr = False
    config.lr_find_start = 1e-4
    config.lr_find_end = 10.0
    config.lr_find_steps = 200
    # A path to an lr_find.json: train with its recommended base_lr and max_lr (schedule
    # 'cyclic') or its max_lr (schedule 'onecycle'), in place of the two above. '': off.
    config.lr_from = ""
    return config

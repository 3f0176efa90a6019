"""The experiment runner: config, training loop, checkpoints, evaluation and command line, for any `Task`.

It names no experiment: each entry module (`experiments.dsprites`, ...) builds a `task.Task` and hands it to
`cli.run`. Nothing here imports an experiment module.
"""

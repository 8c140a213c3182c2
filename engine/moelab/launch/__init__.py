"""Launchers: Slurm batch jobs (script, submit, status, cancel, log) and torchrun data parallelism.

Nothing here imports the trainer: the trainer calls `distributed`, the CLI calls the Slurm modules.
"""

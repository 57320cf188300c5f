"""gifee: Google's infrastructure for everyone else."""

from gifee import grpcenv as _grpcenv

_grpcenv.configure()

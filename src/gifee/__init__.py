"""gifee: Google's infrastructure for everyone else."""

from gifee import compiled as _compiled
from gifee import grpcenv as _grpcenv

_compiled.choose()
_grpcenv.configure()

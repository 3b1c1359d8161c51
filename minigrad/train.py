"""The former home of the training loop, now :mod:`minigrad.training`; kept so
that ``from minigrad.train import main`` still works."""
from .training import *  # noqa: F401,F403
from .training import __all__  # noqa: F401

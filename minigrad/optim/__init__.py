"""Optimizers and learning-rate schedules (``torch.optim``'s names).

* :class:`Optimizer`: parameter groups, ``zero_grad``, ``state_dict``
* :class:`SGD`: stochastic gradient descent with momentum / Nesterov / weight decay
* :mod:`minigrad.optim.lr_scheduler`: StepLR, MultiStepLR, ReduceLROnPlateau, ...
"""
from . import lr_scheduler
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "lr_scheduler"]

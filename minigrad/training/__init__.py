"""Training and evaluating the CIFAR-10 networks of the ResNet paper; the
package behind ``examples/train_cifar_resnet.py``, ``evaluate.py`` and
``degradation.py``.  One concern per module:

==============  ==============================================================
``cli``         the command line (every number checked) and ``main``
``recipe``      the paper's recipe: model, SGD, lr schedule, augmentation
``data``        finding CIFAR-10 (or the synthetic fallback), subset, val split
``loop``        ``train()``: the epochs and steps, exact resume
``interrupt``   Ctrl-C / SIGTERM: finish the step, checkpoint, stop
``ranks``       under ``mpiexec``: batch shares, rank 0's folder, all ranks' metrics
``device``      batches to the GPU from pinned memory, metrics back once per interval
``checkpoint``  saving and checking the run's checkpoint
``runfolder``   the run folder: one run at a time (a lock), never overwritten silently
``metrics``     metrics.csv, iterations.csv, curves.png
``evaluation``  top-k error, flip, 10 crops, VGG dense evaluation, Fig. 7's stds
==============  ==============================================================
"""
from .checkpoint import (CHECKPOINT, args_from_checkpoint, load_checkpoint,
                         model_from_checkpoint, save_checkpoint)
from .cli import build_parser, format_summary, main
from .data import BANNER_SYNTHETIC, DataBundle, find_cifar, load_data
from .errors import (CheckpointError, ConfigError, RunFolderError, StoppedOnAllRanks,
                     TrainingInterrupted)
from .evaluation import (evaluate, evaluate_checkpoint, layer_response_stds, predict_logits,
                         ten_crop_views, topk_error)
from .interrupt import StopFlag
from .loop import train
from .metrics import plot_curves, read_metrics_csv, write_iterations_csv, write_metrics_csv
from .recipe import build_model, default_warmup, lr_factor_fn, plan
from .runfolder import RunFolder

__all__ = ["CHECKPOINT", "args_from_checkpoint", "load_checkpoint", "model_from_checkpoint",
           "save_checkpoint", "build_parser", "format_summary", "main", "BANNER_SYNTHETIC",
           "DataBundle", "find_cifar", "load_data", "CheckpointError", "ConfigError",
           "RunFolderError", "StoppedOnAllRanks", "TrainingInterrupted", "evaluate",
           "evaluate_checkpoint", "layer_response_stds", "predict_logits", "ten_crop_views",
           "topk_error", "StopFlag", "train", "plot_curves", "read_metrics_csv",
           "write_iterations_csv", "write_metrics_csv", "build_model", "default_warmup",
           "lr_factor_fn", "plan", "RunFolder"]

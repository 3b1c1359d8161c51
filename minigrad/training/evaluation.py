"""Measuring a model: top-k error on the single view (as the ResNet paper does
on CIFAR), with its mirror image, on 10 crops, or VGG's dense evaluation; and
the response statistics of ResNet Fig. 7."""
from __future__ import annotations

import numpy as np

from .. import backend
from .device import model_device
from .errors import ConfigError

__all__ = ["topk_error", "ten_crop_views", "predict_logits", "evaluate", "score_logits",
           "evaluate_checkpoint", "layer_response_stds"]


def topk_error(logits, labels, k=1) -> float:
    """Fraction of rows whose true label is not among the ``k`` highest scores."""
    logits, labels = np.asarray(backend.to_numpy(logits)), np.asarray(labels)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(1.0 - (topk == labels[:, None]).any(axis=1).mean())


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ten_crop_views(x, padding=4):
    """The 10 views of a batch (N, C, H, W) used by ``--ten-crop``: pad by
    ``padding`` pixels (zeros = the mean after mean subtraction), take the 4
    corner crops and the centre crop of the original size (the centre crop
    is the original image), and the horizontal flip of each."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    offsets = [(0, 0), (0, 2 * padding), (2 * padding, 0), (2 * padding, 2 * padding),
               (padding, padding)]
    crops = [xp[:, :, oy:oy + h, ox:ox + w] for oy, ox in offsets]
    return crops + [v[..., ::-1] for v in crops]


def _forward(model, x, device):
    from ..tensor import Tensor
    data = backend.to_device(x, device) if device != "cpu" else x
    return backend.to_numpy(model(Tensor(data)).data)


def predict_logits(model, images, batch_size=500, transform=None, device="cpu",
                   scale=1.0 / 255, views=None):
    """Model outputs for uint8 ``images`` in evaluation mode without a graph.

    ``views(x) -> list of batches`` (flips, crops): the soft-max posteriors of
    the views are averaged and returned as log-probabilities; without views
    the raw logits are returned."""
    from ..tensor import no_grad
    was_training = model.training
    model.eval()
    outs = []
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].astype(np.float32) * np.float32(scale)
                if transform is not None:
                    x = transform(x, None)
                if views is None:
                    outs.append(_forward(model, x, device))
                else:
                    probs = [_softmax(_forward(model, np.ascontiguousarray(v), device)
                                      .astype(np.float64)) for v in views(x)]
                    outs.append(np.log(np.mean(probs, axis=0) + 1e-12))
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def evaluate(model, images, labels, batch_size=500, transform=None, device="cpu",
             views=None) -> dict:
    """``{"loss", "top1_err", "top5_err", "n"}`` of a model on uint8 images."""
    logits = predict_logits(model, images, batch_size, transform, device, views=views)
    return score_logits(logits, labels)


def score_logits(logits, labels) -> dict:
    """``{"loss", "top1_err", "top5_err", "n"}`` of the outputs for ``labels``."""
    labels = np.asarray(labels)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    return {"loss": loss, "top1_err": topk_error(logits, labels, 1),
            "top5_err": topk_error(logits, labels, 5), "n": int(len(labels))}


def _dense_logits(model, args, images, tf, batch_size, dense_scale, device):
    """VGG dense evaluation: log of the flip-averaged posteriors of the fully
    convolutional net on whole (optionally rescaled) images."""
    from ..data import transforms as T
    from ..models import VGG, dense_predict, to_fully_convolutional
    if not isinstance(model, VGG):
        raise ConfigError(f"--dense is VGG dense evaluation; {args.model} is not a VGG")
    dense_net = to_fully_convolutional(model)
    probs = []
    for start in range(0, len(images), batch_size):
        x = tf(images[start:start + batch_size].astype(np.float32) / 255, None)
        if dense_scale and dense_scale != x.shape[-1]:
            x = T.resize_bilinear(x, dense_scale, dense_scale)
        xd = backend.to_device(x, device) if device != "cpu" else x
        probs.append(backend.to_numpy(dense_predict(dense_net, xd, flip=True).data))
    return np.log(np.concatenate(probs) + 1e-12)


def evaluate_checkpoint(path, split="test", flip=False, ten_crop=False, dense=False,
                        dense_scale=None, data_dir=None, batch_size=250, device="cpu",
                        log=print) -> dict:
    """Top-1 / top-5 error of a saved run on its test (or val, or train) images.

    * ``flip``: average the soft-max posteriors of each image and its mirror;
    * ``ten_crop``: average over the 10 views of :func:`ten_crop_views`;
    * ``dense``: VGG dense evaluation (:func:`minigrad.models.dense_predict`)
      of the images rescaled to ``dense_scale`` pixels (default: their size),
      with flip averaging as in the VGG paper.
    """
    from ..data import transforms as T
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .data import load_data
    if sum(map(bool, (flip, ten_crop, dense))) > 1:
        raise ConfigError("choose one of --flip, --ten-crop, --dense")
    ckpt = load_checkpoint(path)
    model, args = model_from_checkpoint(ckpt, device)
    if data_dir:
        args.data_dir = data_dir
    args.no_download = True
    data = load_data(args, log)
    if split == "val" and data.val is None:
        raise ConfigError("this run has no validation split (--val-split was not used)")
    images, labels = {"val": data.val, "train": data.train}.get(split, data.test)
    tf = T.SubtractMean(np.asarray(ckpt["mean_image"], dtype=np.float32))
    if dense:
        logits = _dense_logits(model, args, images, tf, batch_size, dense_scale, device)
        method = f"dense (scale {dense_scale or images.shape[-1]}, with flips)"
    else:
        views, method = None, "single view"
        if flip:
            views, method = (lambda x: [x, x[..., ::-1]]), "image + flip"
        elif ten_crop:
            views = ten_crop_views
            method = "10 crops (4 corners + centre of the 4-padded image, and their flips)"
        logits = predict_logits(model, images, batch_size, tf, device, views=views)
    labels = np.asarray(labels)
    return {"model": args.model, "dataset": data.name, "split": split, "n": int(len(labels)),
            "method": method, "epochs": len(ckpt["history"]),
            "top1_err": topk_error(logits, labels, 1), "top5_err": topk_error(logits, labels, 5),
            "synthetic": data.synthetic}


def _response_layers(model, which):
    """(name, module) of the batch norms whose outputs Fig. 7 measures."""
    if which == "all":
        targets = [("bn1", model.bn1)]
        for name, m in model.named_modules():
            if name.startswith("layer") and name.rsplit(".", 1)[-1] in ("bn1", "bn2") \
                    and name.count(".") == 2:
                targets.append((name, m))
        return targets
    if which == "last_bn":
        named = {id(m): n for n, m in model.named_modules()}
        return [(named[id(b.last_bn)], b.last_bn) for b in model.blocks()]
    raise ConfigError(f"which must be 'last_bn' or 'all', got {which!r}")


def layer_response_stds(model, images, which="last_bn"):
    """Standard deviation of layer responses on one batch, in evaluation mode
    (ResNet Fig. 7), measured with forward hooks.

    ``which="last_bn"``: the output of each block's last BN (the residual
    branch F(x) after BN, before the addition; ``block.last_bn``);
    ``"all"``: every BN that follows a 3×3 conv (the stem's and both of each
    block's), the paper's "outputs of each 3×3 layer, after BN and before
    other nonlinearity".  The std is over all elements of the (N, C, H, W)
    response.  The batch goes to the model's device.  Returns a list of
    ``(name, std)`` in layer order.
    """
    from ..tensor import Tensor, no_grad
    if not hasattr(model, "blocks"):
        raise ConfigError(f"{type(model).__name__} has no residual/plain blocks to measure")
    targets = _response_layers(model, which)
    stds = {}
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: stds.__setitem__(name, float(np.std(
            backend.to_numpy(out.data), dtype=np.float64)))) for name, m in targets]
    batch = np.ascontiguousarray(backend.to_numpy(images), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(Tensor(backend.to_device(batch, model_device(model))))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [(name, stds[name]) for name, _ in targets]

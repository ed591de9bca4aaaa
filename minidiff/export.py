"""Export to ONNX: the shipped U-Net and classifier as files any ONNX runtime can run, in a browser too.

The book's Fashion-MNIST demo (chapter 7) runs these files in the reader's page with ONNX Runtime Web; the
sampling loop around them is a few lines of JavaScript. Both graphs take any batch size (1 to 1024)::

    import minidiff as md
    model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"))
    # x (B, 1, 28, 28), t (B,), y (B,) -> eps (B, 1, 28, 28)
    md.export.export_denoiser(model, "unet.onnx")
    # x (B, 1, 28, 28) -> logits (B, 10)
    md.export.export_classifier(md.load_classifier(), "classifier.onnx")

They need the ``onnx`` extra: ``pip install 'minidiff[onnx]'`` (``onnx`` and ``onnxscript``, which
``torch.onnx.export`` uses, and ``onnxruntime`` to check the result).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ._io import atomic_write
from .runtime import model_device

__all__ = ["export_denoiser", "export_classifier"]

MAX_BATCH = 1024


def export_denoiser(model: torch.nn.Module, path, *, sample_shape=(1, 28, 28)) -> Path:
    """Write a class-conditional denoiser (a :class:`minidiff.UNet` with ``num_classes``) to ``path`` (.onnx).

    ``sample_shape`` is one image's ``(C, H, W)`` (``config["sample_shape"]`` of :func:`minidiff.load_model`);
    the graph is traced at that size. Inputs ``x`` float32 ``(B, C, H, W)``, ``t`` int64 ``(B,)`` (0-based steps) and ``y`` int64 ``(B,)`` (labels;
    ``num_classes`` means "no label", as in classifier-free guidance); output ``eps``, shaped like ``x``.
    """
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(model, torch.nn.Module) or not isinstance(num_classes, int):
        raise TypeError("model must be a class-conditional denoiser (a torch.nn.Module with an integer "
                        f"num_classes), got {type(model).__name__} with num_classes={num_classes!r}")
    if (not isinstance(sample_shape, (tuple, list)) or len(sample_shape) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sample_shape)):
        raise ValueError(f"sample_shape must be three positive integers (C, H, W), got {sample_shape!r}")
    shape = tuple(sample_shape)
    device = model_device(model)
    example = (torch.zeros(2, *shape, device=device),                         # x (2, C, H, W)
               torch.tensor([0, 999], device=device),                          # t (2,)
               torch.tensor([0, num_classes], device=device))                  # y (2,)
    return _export(model, example, ("x", "t", "y"), "eps", path)


def export_classifier(classifier: torch.nn.Module, path) -> Path:
    """Write an image classifier (:class:`minidiff.Classifier`) to ``path`` (.onnx): ``x`` (B, 1, 28, 28) -> ``logits``."""
    if not isinstance(classifier, torch.nn.Module):
        raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
    example = (torch.zeros(2, 1, 28, 28, device=model_device(classifier)),)
    return _export(classifier, example, ("x",), "logits", path)


def _export(module, example, input_names, output_name, path) -> Path:
    """Trace ``module`` on ``example`` with a dynamic batch axis and write the ONNX file atomically."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs both)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"exporting to ONNX needs onnx and onnxscript ({e}): pip install 'minidiff[onnx]'") from e
    if not isinstance(path, (str, Path)) or not str(path).endswith(".onnx"):
        raise ValueError(f"path must be a file name ending in .onnx, got {path!r}")
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    was_training = module.training
    module.eval()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(module, example, input_names=list(input_names),
                                        output_names=[output_name],
                                        dynamic_shapes=tuple({0: batch} for _ in example),
                                        dynamo=True, optimize=True)
        data = program.model_proto.SerializeToString()
    finally:
        module.train(was_training)
    return atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its passes, warns about optional torchvision ops and about its own deprecations: none
    of it is the caller's concern (an export that fails still raises)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)

"""What a loaded model runs with: which ONNX variant and which image decoder. Pure functions of the
settings, the version's manifest and the provider list, so they are tested without a GPU.

* variant (``TUNESERVE_VARIANT``): ``auto`` (default) serves fp16 on the CUDA provider when the
  version has a validated fp16 variant (one built and gated by ``trainer/variants.py``, which records
  its top-1 agreement with fp32), fp32 otherwise. An explicit ``fp16``/``int8`` is served when the
  version has it; fp16 never on the CPU provider, which has no fast fp16 kernels (onnxruntime wraps
  every operator in casts there).
* decoder (``TUNESERVE_DECODER``): ``pil`` decodes on the CPU with Pillow (``service/preprocess.py``);
  ``gpu`` decodes with nvImageCodec and preprocesses with the ONNX graph on the model's provider
  (``service/gpu_pipeline.py``; on a host without CUDA, nvImageCodec's CPU backend runs the same code,
  which is how the tests check it); ``auto`` (default) is ``gpu`` when the CUDA provider serves and
  nvImageCodec is installed (the ``gpu`` extra), ``pil`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from models.manifest import Variant

CUDA = "CUDAExecutionProvider"
VARIANTS = ("auto", "fp32", "fp16", "int8")
DECODERS = ("auto", "pil", "gpu")
INSTALL_HINT = "pip install 'tuneserve[gpu]' (nvidia-nvimgcodec-cu13 and nvidia-nvjpeg)"


class DecoderUnavailable(RuntimeError):
    """TUNESERVE_DECODER=gpu on a host where nvImageCodec cannot run."""


def choose_variant(setting: str, variants: Mapping[str, Variant], providers: Sequence[str]) -> str:
    """The variant to serve; ``providers`` is the session's provider list, most preferred first."""
    if setting not in VARIANTS:
        raise ValueError(f"unknown variant {setting!r}; choose one of {', '.join(VARIANTS)}")
    on_cuda = bool(providers) and providers[0] == CUDA
    if setting == "auto":
        fp16 = variants.get("fp16")
        return "fp16" if on_cuda and fp16 is not None and fp16.top1_agreement is not None else "fp32"
    if setting == "fp16" and not on_cuda:
        return "fp32"
    return setting if setting in variants else "fp32"


def choose_decoder(setting: str, provider: str, library: bool, reason: str = "") -> str:
    """``pil`` or ``gpu``. ``library``: nvImageCodec imports here (``reason`` says why not).

    Raises :class:`DecoderUnavailable` when ``gpu`` is asked for and cannot run, naming the fix."""
    if setting not in DECODERS:
        raise ValueError(f"unknown decoder {setting!r}; choose one of {', '.join(DECODERS)}")
    if setting == "pil":
        return "pil"
    if setting == "gpu":
        if not library:
            raise DecoderUnavailable(
                f"TUNESERVE_DECODER=gpu but nvImageCodec is not usable here ({reason or 'not installed'}): "
                f"{INSTALL_HINT}, or set TUNESERVE_DECODER=pil (or auto)"
            )
        return "gpu"
    return "gpu" if provider == CUDA and library else "pil"

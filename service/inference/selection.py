"""What a loaded model runs with: which ONNX variant and which image decoder. Pure functions of the
settings, the version's manifest and the provider list, so they are tested without a GPU.

* variant (``TUNESERVE_VARIANT``): ``auto`` (default) serves fp16 on the CUDA provider and int8 on
  the CPU provider when the version has that variant and it passed its accuracy gate (built and gated
  by ``trainer/publish/variants.py``, which records its top-1 agreement with fp32 on val and test photos in
  the manifest), fp32 otherwise, with the reason (``GET /v1/models/{name}`` shows it). An explicit
  ``fp16``/``int8`` is served when the version has it; fp16 never on the CPU provider, which has no
  fast fp16 kernels (onnxruntime wraps every operator in casts there).
* decoder (``TUNESERVE_DECODER``): ``pil`` decodes on the CPU with Pillow (``service/inference/preprocess.py``);
  ``gpu`` decodes with nvImageCodec and preprocesses with the ONNX graph on the model's provider
  (``service/inference/gpu_pipeline.py``; on a host without CUDA, nvImageCodec's CPU backend runs the same code,
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
    return variant_and_reason(setting, variants, providers)[0]


def variant_and_reason(setting: str, variants: Mapping[str, Variant],
                       providers: Sequence[str]) -> tuple[str, str]:
    """(variant to serve, why): the why names the gate the variant passed, or why fp32 is served."""
    if setting not in VARIANTS:
        raise ValueError(f"unknown variant {setting!r}; choose one of {', '.join(VARIANTS)}")
    on_cuda = bool(providers) and providers[0] == CUDA
    if setting == "auto":
        kind = "fp16" if on_cuda else "int8"
        where = "CUDA" if on_cuda else "CPU"
        built = variants.get(kind)
        if built is None:
            return "fp32", (f"auto on {where}: the version has no {kind} variant (not built, or it failed its "
                            "accuracy gate when it was built: TUNESERVE_BUILD_VARIANTS)")
        if built.top1_agreement is None:
            return "fp32", f"auto on {where}: the version's {kind} variant has no recorded accuracy gate"
        splits = (built.gate or {}).get("splits") or {"val": {"top1_agreement": built.top1_agreement}}
        checked = ", ".join(f"{name} {s.get('top1_agreement', 0.0):.4f}" for name, s in splits.items())
        return kind, f"auto on {where}: {kind} passed its gate (top-1 agreement with fp32: {checked})"
    if setting == "fp16" and not on_cuda:
        return "fp32", "TUNESERVE_VARIANT=fp16 but not on CUDA (no fast fp16 kernels on CPU)"
    if setting in variants or setting == "fp32":
        return setting, f"TUNESERVE_VARIANT={setting}"
    return "fp32", f"TUNESERVE_VARIANT={setting} but the version has no {setting} variant"


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

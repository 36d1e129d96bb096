"""PyTorch's fused transformer fast path, switched off where forward-mode AD runs.

# NOTE [fused fast path]
# In eval mode, without autograd recording, nn.TransformerEncoderLayer / nn.TransformerEncoder /
# nn.MultiheadAttention (batch_first=True) call fused kernels (aten::_transformer_encoder_layer_fwd,
# aten::_native_multi_head_attention) that have no forward-mode derivative. The lens's JVPs
# (lens/recorder.py) and empirical_ntk(implementation="ntk_vp") run exactly there (probes are
# evaluated in eval mode under no_grad, NOTE [probes in eval mode]). We do not fall back to a
# reverse-mode product (k backward passes per JVP instead of one forward); we disable the fast
# path with torch.backends.mha.set_fastpath_enabled(False) for the duration of the call, so the
# modules take their general path (ordinary ops, all with forward-mode derivatives), which
# computes the same function (the fused kernels are an optimisation of it). The lens's plain
# forward passes run under the same switch, so f, f̃ and f_lin all come from one code path
# (the fused and general paths round differently in float32). The switch is process-global in
# PyTorch (not thread-local): a model evaluated in another thread during a lens step also takes
# the general path, which is slower but equal. The general path calls
# F.scaled_dot_product_attention, whose fused CPU/GPU kernels (flash, memory-efficient) have no
# forward-mode derivative either: within the same block only its MATH backend (ordinary matmul and
# softmax ops) is enabled, through torch.nn.attention.sdpa_kernel. Outside these calls the user's
# settings are restored. (Reverse mode, which the structured and Jacobian paths use, works on every
# path: the switch costs them speed only, and equal results come from one path everywhere.)
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from telescope.errors import UnsupportedModelError


@contextlib.contextmanager
def no_fused_fastpath() -> Iterator[None]:
    """Within the block, transformer modules take their general path and scaled-dot-product attention
    its MATH backend (NOTE [fused fast path])."""
    with contextlib.ExitStack() as stack:
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled") and mha.get_fastpath_enabled():
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, True)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:                                                 # pragma: no cover - older torch
            pass
        else:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def forward_ad_failure(model: torch.nn.Module, replay, caller: str, exc: BaseException) -> Exception:
    """An UnsupportedModelError naming the innermost module whose forward raised ``exc`` (a missing
    forward-mode derivative), found by ``replay()`` (a zero-argument callable that repeats the failing
    call) under module hooks; ``exc`` itself when it is not a forward-AD failure."""
    text = str(exc)
    if not isinstance(exc, NotImplementedError) or ("forward AD" not in text and "forward mode AD" not in text):
        return exc
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[torch.nn.Module] = []
    culprit: list[torch.nn.Module] = []

    def pre(module, _args):
        stack.append(module)

    def post(module, _args, _out):
        if stack and stack[-1] is module:
            stack.pop()

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    try:
        replay()
    except NotImplementedError:
        culprit = stack[-1:]
    except Exception:  # noqa: BLE001 - only the module stack matters here; the original error is reported
        culprit = stack[-1:]
    finally:
        for h in handles:
            h.remove()
    op = (text.split("forward AD with ", 1)[1].split()[0] if "forward AD with " in text
          else "a custom autograd.Function without jvp" if "autograd.Function" in text else "an operation")
    where = (f"module {names.get(id(culprit[0]), '?') or '(root)'!r} ({type(culprit[0]).__name__})" if culprit
             else "the model")
    return UnsupportedModelError(
        f"{caller}: {where} calls {op}, which has no forward-mode derivative in PyTorch {torch.__version__}; "
        "the lens's JVPs need one. Use a module built from ordinary ops (nn.Linear, softmax, ...) or a "
        "reference implementation of that layer (PyTorch's fused transformer fast path is already switched "
        "off, NOTE [fused fast path] in telescope/kernels/fastpath.py)")

"""The server's safety checker policy, applied to every request of every dialect before it
is checked and queued: "off" refuses requests asking for the checker, "request" runs it
when asked, "always" runs it on every image (a client cannot turn it off)."""

from __future__ import annotations

from ..engine.params import GenerationParams
from ..errors import BadInput
from .options import SafetyPolicy

__all__ = ["apply_safety_policy"]


def apply_safety_policy(params: GenerationParams, policy: SafetyPolicy) -> GenerationParams:
    if policy == "always" and not params.safety_check:
        return params.model_copy(update={"safety_check": True})
    if policy == "off" and params.safety_check:
        raise BadInput("safety_check", "this server's policy turns the safety checker off (safety_checker = 'off'); "
                                       "leave it out")
    return params

"""Swapping submodules of a network without touching the network: the eager model stays the
fallback (a compile that fails, a regrouping that is not wanted) while a copy runs instead.

Torch-free at import (it only walks ``named_children``): the stages import it cheaply.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def replace_modules(module: torch.nn.Module, match: Callable[[torch.nn.Module], bool],
                    make: Callable[[torch.nn.Module], Any]) -> Any:
    """A copy of ``module`` in which every submodule ``match`` accepts is ``make(submodule)``
    (not searched further). Only the modules on the way to a replacement are copied, shallowly
    (each gets its own child table), so every parameter and buffer is shared and ``module`` is
    left as it was; with nothing to replace, ``module`` itself comes back."""
    if match(module):
        return make(module)
    children = dict(module.named_children())
    made = {name: replace_modules(child, match, make) for name, child in children.items()}
    if all(made[name] is child for name, child in children.items()):
        return module
    clone = copy.copy(module)
    clone._modules = {**module._modules, **made}
    return clone


__all__ = ["replace_modules"]

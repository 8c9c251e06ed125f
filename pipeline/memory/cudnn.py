"""cuDNN settings for one piece of work, the process's own restored after it.

torch's ``torch.backends.cudnn.flags`` sets every flag at once (its defaults turn cuDNN off) and
its arguments change between releases; this sets only the ones named.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# Deferred imports: torch — the stages and models that import this load before torch does


@contextmanager
def cudnn_setting(**values: bool) -> Iterator[None]:
    """``with cudnn_setting(deterministic=True):`` — the named ``torch.backends.cudnn`` flags for the
    block, each put back after it, so other stages' convolutions keep theirs."""
    import torch

    cudnn = torch.backends.cudnn
    saved = {name: getattr(cudnn, name) for name in values}
    for name, value in values.items():
        setattr(cudnn, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(cudnn, name, value)

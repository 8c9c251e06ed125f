"""Frame arrays on disk: ``frames.npy`` of (T, H, W, 3) uint8, read and written in slices.

Plain reads and writes instead of memory maps: every page a memmap touches counts in the
process's RSS (and the host peak the runner reports), which defeats streaming a 1080p
segment through a stage with bounded host memory.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np


class FrameFile:
    """Reads frame ranges of a (T, H, W, 3) uint8 ``.npy`` with plain reads (no mapping)."""

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r")  # parses the header only; no frame is touched
        if header.dtype != np.uint8 or header.ndim != 4 or header.shape[-1] != 3:
            raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {header.shape} {header.dtype}")
        self.path, self.offset, self.shape = path, header.offset, header.shape
        self.count = int(header.shape[0])
        self.frame_bytes = int(np.prod(header.shape[1:]))

    def read(self, start: int, stop: int) -> np.ndarray:
        data = np.fromfile(self.path, dtype=np.uint8, count=(stop - start) * self.frame_bytes,
                           offset=self.offset + start * self.frame_bytes)
        return data.reshape((stop - start, *self.shape[1:]))


def write_frames_header(f: BinaryIO, shape: tuple[int, ...]) -> None:
    """Start a uint8 ``.npy`` of ``shape``; the caller appends the frames' bytes in order."""
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape})


class SaveInBackground:
    """``np.save`` of ``array`` to ``path``, flushed to disk (fsync), on a thread, while the stage
    goes on (the draft decodes its audio meanwhile). Leaving the ``with`` block joins the writer
    and re-raises its error, so a stage returns (and its cache entry becomes complete) only once
    its files are whole; the stage's own error wins over the writer's."""

    def __init__(self, path: Path, array: np.ndarray) -> None:
        self.path, self.array = path, array
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name=f"save {path.name}", daemon=True)

    def _write(self) -> None:
        try:
            with open(self.path, "wb") as f:
                np.save(f, self.array)
                f.flush()
                os.fsync(f.fileno())  # the cache's fsync at commit then finds nothing left to write
        except BaseException as exc:  # noqa: BLE001 - handed to the stage's thread in __exit__
            self.error = exc

    def __enter__(self) -> SaveInBackground:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._thread.join()
        if self.error is not None and kind is None:
            raise self.error

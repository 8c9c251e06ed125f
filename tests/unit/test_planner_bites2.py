"""What the planner tells a user about GGUF files, notes and suggested sizes (issue 24: the
planner survivors of the 21:21 device run).

A GGUF named or stored in an IQ*/TQ* format is a quantized file (mapped, not loaded into RAM);
an absent file is planned at the size its preset entry records and in the format its name
carries (``-F16``, ``.Q4_0``, no format at all); the notes the TUI shows under a plan are the
sentences written for them; the upscaler counts the frames in flight; a refusal suggests the
first 5% step that fits.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.memory.planner import Budgets, GiB, PlanError, plan_ladder
from pipeline.models.gguf_writer import write_random_gguf
from pipeline.models.registry import ModelFile, Preset, get_preset
from pipeline.project.storyboard import Project

GGUF = Preset(name="sulphur2-ltx23", family="ltx2", description="22B Q3_K_M, as published")
HUGE = Budgets(vram=10_000 * GiB, host=10_000 * GiB)
MAPPED = "weights paged from the memory-mapped file (disk-speed when RAM is short)"
LOWMEM = "pins one block at a time (slower copies, half the host RAM)"
TILES = "frames split into tiles: slower"


def ladder(stage: str, b: Budgets, preset: Preset = GGUF, project: Project | None = None) -> list:
    return plan_ladder(stage, preset, project or Project(), "cuda", budgets=b, frames=121)


def with_transformer(entry: ModelFile) -> Preset:
    """sulphur2-ltx23 with its transformer GGUF entry replaced."""
    real = get_preset("sulphur2-ltx23")
    return replace(real, files=tuple(entry if f.role == "transformer_gguf" else f for f in real.files))


@pytest.fixture
def no_pulled_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SULPHUR_LTX_GGUF", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


@pytest.mark.parametrize("fmt", ["IQ4_XS", "TQ1_0"])
def test_an_iq_or_tq_gguf_runs_from_the_mapped_file_on_a_host_too_small_for_its_weights(fmt: str) -> None:
    """IQ*/TQ* are GGML block formats like Q*: the file is mapped, so 10 GB of RAM suffice."""
    preset = replace(GGUF, extra={"memory": {"transformer": {"fmt": fmt, "file_bytes": 11 * GiB}}})
    plans = ladder("refine", Budgets.from_gb(8, 10), preset)
    assert plans and all(MAPPED in p.notes for p in plans), [p.describe() for p in plans]
    assert all(f"weights {fmt}" in p.describe() for p in plans)


@pytest.mark.parametrize(("name", "shown"), [
    ("ltx-2.3-dev.Q4_0.gguf", "weights Q4_0 (per the preset; file absent)"),   # dot-separated format
    ("ltx-2.3-dev-F16.gguf", "weights float16 (per the preset; file absent)"),  # GGML's float name
])
def test_an_absent_gguf_is_planned_in_the_format_its_name_carries(no_pulled_copy: Path, name: str,
                                                                  shown: str) -> None:
    entry = ModelFile("transformer_gguf", "transformer", path=str(no_pulled_copy / name))  # no filename
    assert shown in ladder("draft", HUGE, with_transformer(entry))[0].describe()


def test_an_absent_gguf_named_without_a_format_is_planned_at_its_recorded_size(no_pulled_copy: Path) -> None:
    """``transformer.gguf`` (no format in the name, no dash) of 9 GiB and of 14 GiB: the resident
    plan's VRAM differs by exactly the 5 GiB the entries record."""
    def first_vram(size: int) -> int:
        entry = ModelFile("transformer_gguf", "t", path=str(no_pulled_copy / "transformer.gguf"), size=size)
        return ladder("refine", HUGE, with_transformer(entry))[0].vram_bytes

    assert first_vram(14 * GiB) - first_vram(9 * GiB) == 5 * GiB


@pytest.mark.parametrize("kept", ["timestamp", "size"])
def test_a_replaced_gguf_is_read_again_when_only_its_timestamp_or_only_its_size_is_unchanged(
        no_pulled_copy: Path, kept: str) -> None:
    """``cp -p`` / ``rsync -t`` keep the modification time (the new file's size still tells);
    17 blocks of Q4_0 and 9 of Q8_0 make files of the same size (its new timestamp tells)."""
    path = no_pulled_copy / "sulphur_dev-Q3_K_M.gguf"
    write_random_gguf(path, "ltxv", [("blk.0.w", (17, 32), "Q4_0"), ("norm", (64,), "F32")])
    preset = with_transformer(replace(get_preset("sulphur2-ltx23").file("transformer_gguf"), path=str(path)))
    assert "weights Q4_0 (read from the GGUF)" in ladder("refine", HUGE, preset)[0].describe()
    st = path.stat()
    write_random_gguf(path, "ltxv", [("blk.0.w", (9 if kept == "size" else 64, 32), "Q8_0"),
                                     ("norm", (64,), "F32")])
    mtime = st.st_mtime_ns if kept == "timestamp" else st.st_mtime_ns + 10**9
    os.utime(path, ns=(st.st_atime_ns, mtime))
    now = path.stat()
    assert (now.st_mtime_ns == st.st_mtime_ns) != (now.st_size == st.st_size)
    assert "weights Q8_0 (read from the GGUF)" in ladder("refine", HUGE, preset)[0].describe()


def test_the_notes_a_user_reads_are_the_sentences_written_for_them() -> None:
    lowmem = [p for p in ladder("refine", Budgets.from_gb(8, 24)) if "+lowmem" in p.name]
    assert lowmem and all(LOWMEM in p.notes for p in lowmem)
    mapped = ladder("refine", Budgets.from_gb(8, 10))
    assert mapped and all(MAPPED in p.notes for p in mapped)
    tiles = ladder("upscale", Budgets.from_gb(1, 16))
    assert tiles and all(p.notes == (TILES,) for p in tiles)


def test_a_streamer_holding_one_block_still_has_its_lean_twin_to_fall_back_to() -> None:
    """The lean twin (no block kept on the GPU) is left out only when the streamer keeps none."""
    seen = 0
    for tenth_gb in range(40, 240):
        try:
            plans = ladder("refine", Budgets(vram=tenth_gb * GiB // 10, host=128 * GiB))
        except PlanError:
            continue
        names = [p.name for p in plans]
        for i, p in enumerate(plans):
            if p.name.startswith("stream") and not p.name.startswith("stream-lean") \
                    and p.options["resident_blocks"] == 1:
                seen += 1
                lean = p.name.replace("stream", "stream-lean", 1)
                assert lean in names[i + 1:], names
    assert seen


def test_each_upscale_batch_counts_its_frames_in_flight_on_the_card() -> None:
    """Going from 4 to 8 frames a batch adds 4 frames' working set and 4 × two batches of uint8
    frames in flight (the 1024×576 input and the 2048×1152 output each)."""
    project = Project(refine_size=(1024, 576), output_size=(2048, 1152))
    by = {p.name: p for p in ladder("upscale", HUGE, project=project)}
    per_frame = 0.55 * GiB
    in_flight = 2 * (1024 * 576 * 3 + 2048 * 1152 * 3)
    extra = by["batch8"].vram_bytes - by["batch4"].vram_bytes
    assert extra == pytest.approx(4 * per_frame + 4 * in_flight, abs=16)


def test_a_refusal_suggests_the_first_five_percent_step_when_it_fits() -> None:
    """Refine at 1024×576 on a card that holds exactly what 960×544 (the first 5% step, sides
    floored to multiples of 32) needs: that is the size suggested, not a smaller one."""
    step = (int(1024 * 0.95) // 32 * 32, int(576 * 0.95) // 32 * 32)
    assert step == (960, 544)
    with pytest.raises(PlanError) as small:
        ladder("refine", Budgets(vram=GiB // 4, host=10_000 * GiB), project=Project(refine_size=step))
    b = Budgets(vram=small.value.need, host=10_000 * GiB)
    assert ladder("refine", b, project=Project(refine_size=step))
    with pytest.raises(PlanError) as refused:
        ladder("refine", b, project=Project(refine_size=(1024, 576)))
    assert re.search(r"such as \[960, 544\]", str(refused.value)), str(refused.value)

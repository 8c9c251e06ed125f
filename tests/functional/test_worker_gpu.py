"""The worker on a CUDA machine: VRAM samples while a job runs, and the OOM ladder through the worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.wire import protocol
from pipeline.worker.client import WorkerClient
from tests.functional.conftest import stop_worker_or_kill, tiny_storyboard

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

STORYBOARD = tiny_storyboard([dict(id="one", prompt="a red lighthouse at dawn", frames=17)],
                             title="worker gpu test", fps=8, seed=5, preset="tiny", output_size=[192, 128],
                             draft_size=[96, 64], enhance=False)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_vram_samples_and_oom_fallback_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.memory.planner import plan_ladder
    from pipeline.models.registry import get_preset
    from pipeline.project.storyboard import load
    from pipeline.telemetry.gpu import GpuMonitor

    story = tmp_path / "story.toml"
    story.write_text(STORYBOARD)
    ladder = plan_ladder("draft", get_preset("tiny"), load(story).project)
    monkeypatch.setenv("SULPHUR_FAULT_OOM", "draft:1")
    # Slow the draft a little so a 1 s sampler sees it running, wherever the card is fast.
    monkeypatch.setenv("SULPHUR_FAULT_SLOW", "draft:2.5")
    client = WorkerClient.connect(tmp_path, idle_timeout=300)
    try:
        stream = client.events()
        next(stream)
        job = client.submit(story)
        events = []
        for event in stream:
            if event.job_id == job:
                events.append(event)
            if event.job_id == job and isinstance(event, protocol.JobFinished | protocol.ErrorEvent):
                break
        stream.close()
    finally:
        client.close()
        stop_worker_or_kill(tmp_path)
    assert isinstance(events[-1], protocol.JobFinished), events[-1]
    if len(ladder) > 1:
        (fallback,) = [e for e in events if isinstance(e, protocol.PlanFallback)]
        assert (fallback.stage, fallback.failed_plan, fallback.next_plan) == (
            "draft", ladder[0].describe(), ladder[1].describe())
    if GpuMonitor().available:
        samples = [e for e in events if isinstance(e, protocol.VramSample)]
        assert samples, "no VramSample while the job ran"
        assert all(s.total > 0 and 0 < s.used <= s.total and s.name for s in samples)
        assert any(s.torch_reserved >= s.torch_allocated > 0 for s in samples)

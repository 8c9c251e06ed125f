"""``--engine ray`` on the CPU with the tiny preset: the example storyboard through a local
Ray cluster started here (a draft actor and a finish actor), against the single-process
render of the same storyboard.

One Ray render serves every check: while it runs, the finish actor is killed in the
middle of segment 1's upscale (slowed by the runner's test fault), so the same film also
proves that a crashed actor costs only the stage it was running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.project import storyboard as S
from pipeline.wire import protocol

ray = pytest.importorskip("ray")

from pipeline.render.engines.ray_engine import NAMESPACE, plan_layout, shared_card_warning  # noqa: E402  (after the skip)
from tests.functional.conftest import cache_keys, checkout_env, decode_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "storyboards" / "example.toml"


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE, folder / "example.toml")
    return folder / "example.toml"


def _count(events: list, cls: type) -> Counter:
    return Counter((e.segment, e.stage) for e in events if isinstance(e, cls) and e.segment)


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pipeline.render.engines.ray_engine import render_ray
    from pipeline.render.runner import render

    ids = [s.id for s in S.load(EXAMPLE).segments]
    local_events: list = []
    local_sb = _project(tmp_path_factory.mktemp("local"))
    local_final = render(local_sb, emit=local_events.append)

    ray_sb = _project(tmp_path_factory.mktemp("ray"))
    events: list = []
    killed: list[str] = []

    def emit(event: protocol.Event) -> None:
        events.append(event)
        # Kill the finish actor once, while segment 1's (slowed) upscale runs on it.
        if (isinstance(event, protocol.StageStarted) and event.stage == "upscale" and event.segment == ids[0]
                and not killed):
            name = event.actor.split("@")[0]
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
            killed.append(name)

    again: list = []
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        ray_final = render_ray(ray_sb, emit=emit, actor_env={"finish": {"SULPHUR_FAULT_SLOW": "upscale:4"}})
        # Unchanged: every stage a cache hit; and the finisher count from the environment, as
        # `sulphur render --engine ray` and the worker take it: 0, the draft actor finishes too.
        os.environ["SULPHUR_RAY_FINISHERS"] = "0"
        try:
            render_ray(ray_sb, emit=again.append)
        finally:
            del os.environ["SULPHUR_RAY_FINISHERS"]
    finally:
        ray.shutdown()
    return {"ids": ids, "local": local_final, "local_events": local_events, "ray": ray_final,
            "events": events, "killed": killed, "again": again}


@pytest.mark.slow
def test_ray_film_equals_the_local_film_frame_for_frame(renders: dict) -> None:
    assert renders["ray"].name == "final.mp4" and renders["ray"].is_file()
    finished = [e for e in renders["events"] if isinstance(e, protocol.JobFinished)]
    assert len(finished) == 1 and Path(finished[0].path) == renders["ray"]
    ray_frames, local_frames = decode_frames(renders["ray"]), decode_frames(renders["local"])
    assert ray_frames.shape == local_frames.shape
    assert np.array_equal(ray_frames, local_frames)
    # Same stage cache keys as the local path, so either engine resumes the other's render.
    assert cache_keys(renders["ray"].parents[2]) == cache_keys(renders["local"].parents[2])
    # ... and recorded as the storyboard's, so `sulphur cache --prune` keeps what the film needs.
    from pipeline.render.usage import report

    for project in (renders["ray"].parents[2], renders["local"].parents[2]):
        assert report(project).unreferenced == [] and report(project).per_storyboard["example.toml"] > 0


@pytest.mark.slow
def test_drafting_of_the_next_segment_overlaps_finishing_of_the_previous(renders: dict) -> None:
    events, ids = renders["events"], renders["ids"]
    order = {(type(e), e.segment, e.stage): i for i, e in enumerate(events)
             if isinstance(e, protocol.StageStarted | protocol.StageFinished) and e.segment}
    for prev, nxt in zip(ids, ids[1:], strict=False):
        assert order[(protocol.StageStarted, nxt, "draft")] < order[(protocol.StageFinished, prev, "upscale")]
    # Drafts on one actor, everything after them on another: which actor ran what is in the events.
    workers: dict[str, set[str]] = {}
    for e in events:
        if isinstance(e, protocol.StageStarted) and e.segment:
            assert e.actor, e
            workers.setdefault(e.stage, set()).add(e.actor.split("@")[0])
    assert all(w.endswith("-draft-0") for w in workers["draft"] | workers["enhance"])
    assert all("-finish-" in w for st in ("refine", "upscale", "encode") for w in workers[st])


@pytest.mark.slow
def test_a_killed_finish_actor_costs_only_the_stage_it_was_running(renders: dict) -> None:
    events, ids = renders["events"], renders["ids"]
    assert len(renders["killed"]) == 1
    started, finished = _count(events, protocol.StageStarted), _count(events, protocol.StageFinished)
    cached = _count(events, protocol.StageCached)
    first = ids[0]
    assert started[(first, "upscale")] == 2, "the killed upscale ran again"
    # Every stage of every segment finished exactly once: nothing else was redone.
    for seg in ids:
        for stage in ("draft", "refine", "upscale", "encode"):
            assert finished[(seg, stage)] == 1, (seg, stage)
            if (seg, stage) != (first, "upscale"):
                assert started[(seg, stage)] == 1, (seg, stage)
    # The retried task found its refine in the cache.
    assert cached[(first, "refine")] == 1
    assert sum(cached.values()) == 1


@pytest.mark.slow
def test_an_unchanged_storyboard_runs_no_stage_on_ray_either(renders: dict) -> None:
    again = renders["again"]
    assert not [e for e in again if isinstance(e, protocol.StageStarted) and e.segment]
    cached = _count(again, protocol.StageCached)
    for seg in renders["ids"]:
        for stage in ("draft", "refine", "upscale", "encode"):
            assert cached[(seg, stage)] == 1, (seg, stage)
    finished = [e for e in again if isinstance(e, protocol.JobFinished)]
    assert len(finished) == 1 and Path(finished[0].path) == renders["ray"]


def test_plan_layout_packs_actors_by_the_storyboards_vram_budget() -> None:
    # CPU: one draft actor, the other CPUs finish.
    assert plan_layout(gpus=0, cpus=3, card_gb=0, budget_gb=None, segments=3).finishers == 2
    assert plan_layout(gpus=0, cpus=1, card_gb=0, budget_gb=None, segments=3).finishers == 0
    # One 80 GB card, a 24 GB budget per actor: 0.3 each, one finisher beside the drafter
    # (each finisher loads its own models), as many as fit when asked for more.
    one = plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=24, segments=4)
    assert (one.draft_gpus, one.finish_gpus, one.finishers, one.finish_share_gb) == (0.3, 0.3, 1, None)
    assert plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=24, segments=4, finishers=3).finishers == 2
    # No budget: halves of a single card, each planning within its half; whole cards on more.
    half = plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=None, segments=4)
    assert (half.draft_gpus, half.finishers, half.draft_share_gb, half.finish_share_gb) == (0.5, 1, 40.0, 40.0)
    four = plan_layout(gpus=4, cpus=64, card_gb=80, budget_gb=None, segments=2)
    assert (four.draft_gpus, four.finish_gpus, four.finishers, four.finish_share_gb) == (1.0, 1.0, 2, None)
    # A budget over half the card: no room for a finisher, the draft actor finishes too.
    assert plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=60, segments=4).finishers == 0


def test_plan_layout_gives_the_draft_a_card_of_its_own_when_there_are_two() -> None:
    # Measured on 2×H200 (8 GB budget, 141 GB cards): 0.06-GPU requests all landed on GPU 0,
    # the second card idle. The drafter now takes a whole card; finishers fill the others
    # with 1/k-card requests so Ray cannot stack them on the drafter's card.
    two = plan_layout(gpus=2, cpus=32, card_gb=141, budget_gb=8, segments=4)
    assert (two.draft_gpus, two.finishers, two.finish_gpus) == (1.0, 1, 1.0)
    asked = plan_layout(gpus=2, cpus=32, card_gb=141, budget_gb=8, segments=4, finishers=4)
    assert (asked.draft_gpus, asked.finishers, asked.finish_gpus) == (1.0, 4, 0.25)
    assert asked.finish_gpus * asked.finishers <= 1.0  # every finisher fits the one spare card
    three = plan_layout(gpus=3, cpus=32, card_gb=80, budget_gb=None, segments=4)
    assert (three.draft_gpus, three.finishers, three.finish_gpus, three.finish_share_gb) == (1.0, 2, 1.0, None)
    packed = plan_layout(gpus=3, cpus=32, card_gb=80, budget_gb=20, segments=6, finishers=6)
    assert (packed.finishers, packed.finish_gpus) == (6, 0.33)  # three per spare card
    assert packed.finish_gpus * 3 <= 1.0 < packed.finish_gpus * 4
    # Without a budget a card holds one actor: two asked for on one spare card get one.
    halves = plan_layout(gpus=2, cpus=32, card_gb=80, budget_gb=None, segments=4, finishers=2)
    assert (halves.finishers, halves.finish_gpus, halves.finish_share_gb) == (1, 1.0, None)


def test_plan_layout_splits_the_host_ram_between_actors() -> None:
    # A 32 GB host; the drafter needs 12 GB, a finisher 13 GB: one finisher beside it.
    lean = plan_layout(gpus=1, cpus=16, card_gb=24, budget_gb=8, segments=4, host_gb=32, host_need_gb=(12, 13))
    assert lean.finishers == 1
    assert lean.draft_ram_gb + lean.finish_ram_gb <= 32 and lean.finish_ram_gb >= 13 and lean.draft_ram_gb >= 12
    # Not even one fits beside the drafter: it finishes too and plans with the RAM as a local
    # render does (no share), even with a spare card.
    alone = plan_layout(gpus=2, cpus=16, card_gb=24, budget_gb=8, segments=4, host_gb=32, host_need_gb=(20, 13))
    assert (alone.finishers, alone.finish_gpus, alone.draft_ram_gb, alone.finish_ram_gb) == (0, 0.0, None, None)
    # Plenty of RAM: a finisher gets twice its need, the draft actor (text encoder kept) the rest.
    roomy = plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=24, segments=4, host_gb=256, host_need_gb=(12, 13),
                        finishers=2)
    assert (roomy.finishers, roomy.finish_ram_gb) == (2, 26.0)
    assert roomy.draft_ram_gb == pytest.approx(256 - 52, abs=0.2)


def test_one_card_too_small_to_share_keeps_one_actor_with_all_of_it() -> None:
    import pipeline.models.ltx2_random  # noqa: F401  (registers the full-size random preset)
    from pipeline.render.engines.ray_engine import halving_slows

    sb = S.load(EXAMPLE)
    # Half of a consumer card puts the 19B stack on a leaner (slower) plan; half of an 80 GB one does not.
    assert halving_slows(sb, "ltx2-19b-random", 12) and halving_slows(sb, "ltx2-19b-random", 24)
    assert not halving_slows(sb, "ltx2-19b-random", 80)
    assert not halving_slows(sb, "tiny", 8)  # a few MB: sharing costs nothing
    # No finisher: the draft actor asks for the whole card and plans within all of it.
    alone = plan_layout(gpus=1, cpus=16, card_gb=12, budget_gb=None, segments=4, finishers=0)
    assert (alone.draft_gpus, alone.finishers, alone.draft_share_gb) == (1.0, 0, None)


def test_an_actor_plans_within_its_shares(tmp_path: Path) -> None:
    """What the layout hands an actor (its VRAM and RAM shares) is what its renderer plans with;
    a storyboard's own VRAM budget stays, its RAM budget is the one split between actors."""
    import threading

    from pipeline.render.engines.ray_engine import _renderer

    story = _project(tmp_path)
    r = _renderer(str(story), None, "job", 40.0, 12.5, lambda e: None, threading.Event())
    assert (r.job.project.vram_budget_gb, r.job.project.ram_budget_gb) == (40.0, 12.5)
    story.write_text(story.read_text().replace("[project]", "[project]\nvram_budget_gb = 8\nram_budget_gb = 64", 1))
    r = _renderer(str(story), None, "job", 40.0, 20.0, lambda e: None, threading.Event())
    assert (r.job.project.vram_budget_gb, r.job.project.ram_budget_gb) == (8.0, 20.0)
    r = _renderer(str(story), None, "job", None, None, lambda e: None, threading.Event())
    assert (r.job.project.vram_budget_gb, r.job.project.ram_budget_gb) == (8.0, 64.0)


def test_each_actor_decides_compiling_the_upscaler_on_the_frames_it_upscales(tmp_path: Path) -> None:
    """Compiling the upscaler pays per process, from enough frames (esrgan_compile_pays). A local
    render counts every frame it upscales (preflight); a Ray actor was handed none, so a Ray
    render never compiled. Now the draft actor finishing alone counts them all, as a local
    render does, and each of two finishers its share: 57 frames, too few to earn a compile."""
    import threading

    from pipeline.memory.loaded import LoadedModels
    from pipeline.memory.plan import StagePlan
    from pipeline.memory.planner import esrgan_compile_pays
    from pipeline.render.engines.ray_engine import _renderer, upscale_shares
    from pipeline.render.job import Overrides, RenderJob
    from pipeline.render.runner import Renderer

    story = tmp_path / "s.toml"
    story.write_text('[project]\npreset = "tiny"\n'
                     + "".join(f'[[segment]]\nid = "{s}"\nprompt = "x"\nframes = 57\n' for s in "ab"))
    local = Renderer.create(RenderJob.resolve(S.load(story), Overrides()), emit=lambda e: None,
                            cancel=threading.Event(), job_id="local", models=LoadedModels())
    local.preflight(["a", "b"])
    assert local.upscale_frames == 114
    cuda = StagePlan(name="cuda", device="cuda")  # the decision as a GPU makes it; this runs on the CPU

    def compiles(frames: int) -> bool:
        actor = _renderer(str(story), None, "job", None, None, lambda e: None, threading.Event(), frames)
        return esrgan_compile_pays(actor.upscale_frames, cuda)

    assert upscale_shares(local.upscale_frames, 0) == (114, 0)  # the draft actor finishes alone
    assert compiles(114)
    assert upscale_shares(local.upscale_frames, 1) == (0, 114)
    assert upscale_shares(local.upscale_frames, 2) == (0, 57) and not compiles(57)
    assert upscale_shares(115, 2) == (0, 58)  # an odd frame rounds the share up, never down
    # takes: the draft actor is one of the pool, so three takes of 57 frames on it and two
    # helpers are one take each; four are two on the busiest actor, and eight pay for a compile
    assert upscale_shares(3 * 57, 2, take_frames=57) == (57, 57) and not compiles(57)
    assert upscale_shares(4 * 57, 2, take_frames=57) == (114, 114)
    share = upscale_shares(8 * 57, 2, take_frames=57)
    assert share == (171, 171) and compiles(171)


def test_the_host_need_comes_from_the_memory_planner() -> None:
    import pipeline.models.ltx2_random  # noqa: F401  (registers the full-size random preset)
    from pipeline.memory.planner import Budgets, plan_ladder
    from pipeline.models.registry import get_preset
    from pipeline.render.engines.ray_engine import actor_host_need_gb

    sb = S.load(EXAMPLE)
    assert actor_host_need_gb(sb, "tiny", 8) is None
    draft, finish = actor_host_need_gb(sb, "ltx2-19b-random", 8)
    refine = plan_ladder("refine", get_preset("ltx2-19b-random"), sb.project, "cuda",
                         budgets=Budgets.from_gb(8, 1 << 20))
    # Leaner than the fastest refine plan, never leaner than the leanest one that streams from RAM.
    assert min(p.host_bytes for p in refine) / 2**30 <= finish <= refine[0].host_bytes / 2**30
    assert 4 < draft < 64


def test_ray_is_imported_only_when_asked_for() -> None:
    code = ("import sys, pipeline.cli.main, pipeline.render.runner, pipeline.render.engines, pipeline.cli.headless; "
            "pipeline.cli.main._parser().parse_args(['render', 'x.toml', '--engine', 'ray']); "
            "print('ray' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=checkout_env())
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_takes_render_seeds_in_parallel_and_the_chain_continues_from_the_pick(renders: dict,
                                                                             tmp_path: Path) -> None:
    from pipeline.render.engines.ray_engine import render_takes
    from pipeline.render.runner import render
    from pipeline.render.takes import pick_take, seeds_for

    # The rendered Ray project, copied: its cache already holds the chain and segment 2's own seed.
    folder = tmp_path / "takes"
    shutil.copytree(renders["ray"].parents[2], folder, ignore=shutil.ignore_patterns("renders"))
    story = folder / "example.toml"
    ids = renders["ids"]
    seg = ids[1]
    seeds = seeds_for(story, seg, 2)
    assert seeds[0] == S.load(story).segments[1].seed  # take 1 is what a render makes
    events: list = []
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        takes = render_takes(story, seg, seeds, emit=events.append)
    finally:
        ray.shutdown()
    assert sorted(takes) == seeds and all(p.is_file() for p in takes.values())
    ran = _count(events, protocol.StageFinished)
    assert ran[(seg, "draft")] == 1 and ran[(seg, "encode")] == 1, "only the new seed's take ran"
    assert not ran[(ids[0], "draft")], "the chain before the segment came from the cache"
    same = decode_frames(takes[seeds[0]])
    assert np.array_equal(same, decode_frames(renders["ray"].parent / "segments" / f"{seg}.mp4"))
    assert not np.array_equal(same, decode_frames(takes[seeds[1]]))
    for clip in takes.values():  # the picker's still: the take's last frame, beside it
        with Image.open(clip.with_suffix(".png")) as still:
            assert np.array_equal(np.asarray(still.convert("RGB")), decode_frames(clip)[-1])

    pick_take(story, seg, seeds[1])
    picked = S.load(story).segments[1]
    assert picked.seed == seeds[1] and picked.enhance_lock
    after: list = []
    render(story, segments=[ids[2]], emit=after.append)
    ran = _count(after, protocol.StageFinished)
    assert not ran[(seg, "draft")], "the picked take's draft is a cache hit"
    assert ran[(ids[2], "draft")] == 1, "the next segment is redrafted from the picked take"
    drafts = {e.segment: e.cache_key for e in after if isinstance(e, protocol.StageCached | protocol.StageFinished)
              and e.stage == "draft"}
    cache = folder / ".sulphur" / "cache" / "draft"
    anchor = np.load(cache / drafts[ids[2]][:2] / drafts[ids[2]] / "anchor.npy")
    last = np.load(cache / drafts[seg][:2] / drafts[seg] / "frames.npy")[-1]
    assert np.array_equal(anchor, last)


@pytest.mark.slow
def test_the_finisher_count_comes_from_the_environment_when_not_given(renders: dict) -> None:
    layout = [e.message for e in renders["again"] if isinstance(e, protocol.Log) and e.message.startswith("ray:")]
    assert len(layout) == 1 and "+ 0 finish actor(s)" in layout[0], layout


def test_actors_sharing_one_card_are_told_the_local_engine_is_faster() -> None:
    """Ray on one GPU measured 0.78× the local engine (bench/results, run 20): the user hears it once."""
    one = plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=8, segments=3)
    assert one.finishers >= 1
    assert "--engine local" in (shared_card_warning(1, one) or "")
    alone = plan_layout(gpus=1, cpus=16, card_gb=80, budget_gb=8, segments=3, finishers=0)
    assert shared_card_warning(1, alone) is None, "one actor with the whole card: nothing shared"
    assert shared_card_warning(1, one, "take") is None, "takes have no local engine to suggest"
    assert shared_card_warning(2, plan_layout(gpus=2, cpus=16, card_gb=80, budget_gb=8, segments=3)) is None
    assert shared_card_warning(0, plan_layout(gpus=0, cpus=3, card_gb=0, budget_gb=None, segments=3)) is None

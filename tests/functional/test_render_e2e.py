"""End to end on the CPU with the tiny preset: the example storyboard → final.mp4.

One project is rendered once per module (the expensive part); the tests then check the
film, chaining, the cache after edits, and broken input against it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.project import storyboard as S
from pipeline.wire import protocol
from tests.functional.conftest import cache_entries, checkout_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _sulphur(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, check=False, env=checkout_env())


def _events(stdout: str) -> list[protocol.Event]:
    return [protocol.decode_event(line) for line in stdout.splitlines() if line.strip()]


def _ran(events: list[protocol.Event]) -> Counter:
    """(segment, stage) pairs that actually ran (not served from the cache)."""
    return Counter((e.segment, e.stage) for e in events
                   if isinstance(e, protocol.StageFinished) and e.segment)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("demo")
    result = _sulphur("demo", "--out", str(folder), "--json", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"folder": folder, "events": _events(result.stdout), "stderr": result.stderr,
            "storyboard": folder / "example.toml"}


def test_demo_produces_a_1080p_h264_film_with_synced_audio(demo: dict) -> None:
    final = demo["folder"] / "renders" / "example" / "final.mp4"
    assert final.is_file()
    finished = [e for e in demo["events"] if isinstance(e, protocol.JobFinished)]
    assert finished and Path(finished[-1].path) == final
    sb = S.load(demo["storyboard"])
    seg_frames = [e.frames for e in demo["events"] if isinstance(e, protocol.SegmentDone)]
    assert len(seg_frames) == len(sb.segments)
    chained_seams = sum(1 for i, s in enumerate(sb.segments) if i > 0 and s.anchor.kind == "previous")
    with av.open(str(final)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (1920, 1080)
        assert v.average_rate == sb.project.fps
        assert a.codec_context.name == "aac"
        n_video = sum(1 for _ in c.decode(video=0))
    with av.open(str(final)) as c:
        audio_seconds = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].codec_context.sample_rate
    assert n_video == sum(seg_frames) - chained_seams
    assert abs(audio_seconds - n_video / sb.project.fps) <= 1 / sb.project.fps
    for seg in sb.segments:
        assert (demo["folder"] / "renders" / "example" / "segments" / f"{seg.id}.mp4").is_file()
    if shutil.which("ffmpeg"):
        check = subprocess.run(["ffmpeg", "-v", "error", "-i", str(final), "-f", "null", "-"],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0 and check.stderr == ""


def test_film_is_the_segments_video_copied_not_encoded_again(demo: dict) -> None:
    """final.mp4's pictures are the segment MP4s' pictures (stream copy), each chained
    segment's anchor frame left out, every segment starting on a keyframe."""
    render_dir = demo["folder"] / "renders" / "example"
    manifest = json.loads((render_dir / "film.json").read_text())
    assert manifest["video"] == "copied" and manifest["reencode_reason"] is None
    assert not [e for e in demo["events"] if isinstance(e, protocol.Log) and "re-encoded" in e.message]
    with av.open(str(render_dir / "final.mp4")) as film_file:
        film = film_file.decode(video=0)
        for entry in manifest["segments"]:
            with av.open(str(render_dir / "segments" / f"{entry['id']}.mp4")) as seg_file:
                seg_frames = seg_file.decode(video=0)
                if entry["skip_first"]:
                    next(seg_frames)
                for i, want in enumerate(seg_frames):
                    got = next(film)
                    assert got.key_frame == (i == 0), (entry["id"], i)
                    assert np.array_equal(got.to_ndarray(format="yuv420p"), want.to_ndarray(format="yuv420p"))
        assert next(film, None) is None


def test_every_stage_of_every_segment_ran_once_and_reported(demo: dict) -> None:
    sb = S.load(demo["storyboard"])
    ran = _ran(demo["events"])
    for seg in sb.segments:
        for stage in protocol.STAGES:
            assert ran[(seg.id, stage)] == 1, (seg.id, stage)
    starts = [e for e in demo["events"] if isinstance(e, protocol.StageStarted) and e.segment]
    assert all(e.plan for e in starts)
    flicker = [e for e in demo["events"] if isinstance(e, protocol.FlickerReport)]
    assert {(e.segment, e.stage) for e in flicker} >= {(s.id, "draft") for s in sb.segments}


def test_enhanced_prompts_are_cached_in_the_storyboard_keeping_comments(demo: dict) -> None:
    text = demo["storyboard"].read_text()
    sb = S.load(demo["storyboard"])
    enhanced = {e.segment: e.enhanced_prompt for e in demo["events"] if isinstance(e, protocol.PromptEnhanced)}
    for seg in sb.segments:
        entry = cache_entries(demo["folder"], "enhance")
        metas = [json.loads((p / "meta.json").read_text())["meta"] for p in entry.values()]
        assert metas, "the enhancer ran"
        if seg.id in enhanced:
            assert seg.enhanced_prompt == enhanced[seg.id]
        else:  # the tiny LLM's random text was rejected: the storyboard must not cache it
            assert seg.enhanced_prompt == ""
    assert any(m["fallback"] is False for m in metas) == bool(enhanced)
    assert enhanced, "the grammar-constrained tiny enhancer writes prose-shaped text that is cached"
    # Shots that start from a frame (a chained shot, an image) get Lightricks' I2V prompt.
    starts_from_frame = sum(seg.anchor.kind in ("image", "video") or (seg.anchor.kind == "previous" and i > 0)
                            for i, seg in enumerate(sb.segments))
    assert starts_from_frame and sum(m["image_to_video"] for m in metas) == starts_from_frame
    original = (ROOT / "storyboards" / "example.toml").read_text()
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert all(c in text for c in comments)


def test_each_anchor_is_the_previous_segments_last_draft_frame(demo: dict) -> None:
    drafts = cache_entries(demo["folder"], "draft")
    by_seg: dict[str, Path] = {}
    for e in demo["events"]:
        if isinstance(e, protocol.StageFinished) and e.stage == "draft":
            by_seg[e.segment] = drafts[e.cache_key]
    ids = [s.id for s in S.load(demo["storyboard"]).segments]
    assert not (by_seg[ids[0]] / "anchor.npy").exists()  # the first shot is text-to-video
    for prev, nxt in zip(ids, ids[1:], strict=False):
        last = np.load(by_seg[prev] / "frames.npy")[-1]
        anchor = np.load(by_seg[nxt] / "anchor.npy")
        assert anchor.dtype == last.dtype and anchor.shape == last.shape
        assert hashlib.sha256(anchor.tobytes()).digest() == hashlib.sha256(last.tobytes()).digest()


def test_editing_segment_two_reruns_exactly_segments_two_to_n(demo: dict, tmp_path: Path) -> None:
    folder = demo["folder"]
    again = _sulphur("render", str(demo["storyboard"]), "--json", cwd=folder)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not _ran(_events(again.stdout)), "an unchanged re-render must run no stage"

    sb = S.load(demo["storyboard"])
    second = sb.segments[1]
    S.save(S.with_segment(sb, second.id, prompt=second.prompt + " at night", enhance_lock=True,
                          enhanced_prompt=second.prompt + " at night, moonlight on the water"))
    edited = _sulphur("render", str(demo["storyboard"]), "--json", cwd=folder)
    assert edited.returncode == 0, edited.stderr[-2000:]
    ran = _ran(_events(edited.stdout))
    ids = [s.id for s in sb.segments]
    assert {seg for seg, _ in ran} == set(ids[1:])
    for seg in ids[1:]:
        for stage in ("draft", "refine", "upscale", "encode"):
            assert ran[(seg, stage)] == 1


def test_render_one_segment_only_touches_that_segment(demo: dict) -> None:
    folder = demo["folder"]
    sb = S.load(demo["storyboard"])
    last = sb.segments[-1]
    S.save(S.with_segment(sb, last.id, seed=(last.seed or 0) + 99))
    result = _sulphur("render", str(demo["storyboard"]), "--segment", last.id, "--json", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {seg for seg, _ in _ran(_events(result.stdout))} == {last.id}


def test_a_shot_taken_from_the_cache_keeps_when_it_was_rendered(demo: dict) -> None:
    """Every stage a cache hit: the shot's MP4 and manifest line were re-dated "now", so the
    editor's "rendered" column said a shot nobody rendered had just been."""
    import json

    sb = S.load(demo["storyboard"])
    first = sb.segments[0].id
    mp4 = demo["folder"] / "renders" / "example" / "segments" / f"{first}.mp4"
    manifest = demo["folder"] / "renders" / "example" / "manifest.json"
    dated, recorded = mp4.stat().st_mtime_ns, json.loads(manifest.read_text())["segments"][first]["rendered_at"]
    result = _sulphur("render", str(demo["storyboard"]), "--segment", first, "--json", cwd=demo["folder"])
    assert result.returncode == 0 and not _ran(_events(result.stdout)), result.stderr[-2000:]
    assert mp4.stat().st_mtime_ns == dated
    assert json.loads(manifest.read_text())["segments"][first]["rendered_at"] == recorded


def test_a_render_of_the_first_shot_says_why_no_film_is_assembled(demo: dict) -> None:
    """``--segment`` of the first shot after a full render said "segment beam is not rendered yet"
    of a shot rendered and current: the render drafts no shot after it, so it cannot look them up."""
    sb = S.load(demo["storyboard"])
    first, second = sb.segments[0].id, sb.segments[1].id
    result = _sulphur("render", str(demo["storyboard"]), "--segment", first, "--json", cwd=demo["folder"])
    assert result.returncode == 0, result.stderr[-2000:]
    logs = [e.message for e in _events(result.stdout) if isinstance(e, protocol.Log)]
    assert f"final film not assembled: this render stopped before shot {second}; render every shot (or --from " \
           f"{second}) to assemble it" in logs, logs
    assert not any("is not rendered yet" in m for m in logs), logs


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda t: t.replace('fps = 24', 'fps = 24 24'), "TOML syntax error"),
    (lambda t: t.replace('audio = true', 'audio = true\ncolour = "red"'), "project.colour: unknown key"),
    (lambda t: t.replace('frames = 17', 'frames = "17"', 1), "segment[0].frames: expected an integer"),
])
def test_broken_storyboard_is_one_line_with_position_and_untouched(tmp_path: Path, edit, fragment: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(edit((ROOT / "storyboards" / "example.toml").read_text()))
    before = path.read_bytes()
    result = _sulphur("render", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert lines[0].startswith(f"error: {path}:") and lines[0].split(":")[2].isdigit()
    assert path.read_bytes() == before
    assert not (tmp_path / "renders").exists()


def test_film_manifest_locates_every_segment(demo: dict) -> None:
    manifest = json.loads((demo["folder"] / "renders" / "example" / "film.json").read_text())
    ids = [s.id for s in S.load(demo["storyboard"]).segments]
    assert [m["id"] for m in manifest["segments"]] == ids
    assert manifest["segments"][0]["offset"] == 0
    rendered = json.loads((demo["folder"] / "renders" / "example" / "manifest.json").read_text())["segments"]
    sb = S.load(demo["storyboard"])
    assert {i: rendered[i]["digest"] for i in ids} == {i: S.segment_digest(sb, i) for i in ids}


def test_keeping_part_of_a_shot_reuses_its_frames_and_the_next_continues_from_the_cut(demo: dict,
                                                                                      tmp_path: Path) -> None:
    """`keep = 9` on the first shot: the film takes its first 9 frames and the second shot starts
    from frame 9 — without drafting, refining or upscaling the first shot again."""
    folder = tmp_path / "project"
    shutil.copytree(demo["folder"], folder)
    story = folder / "example.toml"
    assert _sulphur("render", str(story), "--json", cwd=folder).returncode == 0  # the copy, up to date
    sb = S.load(story)
    ids = [s.id for s in sb.segments]
    S.save(S.with_segment(sb, ids[0], keep=9))
    cut = _sulphur("render", str(story), "--json", cwd=folder)
    assert cut.returncode == 0, cut.stderr[-2000:]
    events = _events(cut.stdout)
    ran = _ran(events)
    assert [st for st in ("draft", "refine", "upscale", "encode") if ran[(ids[0], st)]] == ["encode"]
    for seg in ids[1:]:  # a new anchor: everything after the cut again
        for stage in ("draft", "refine", "upscale", "encode"):
            assert ran[(seg, stage)] == 1, (seg, stage)

    drafts = cache_entries(folder, "draft")
    by_seg = {e.segment: drafts[e.cache_key] for e in events
              if isinstance(e, protocol.StageFinished | protocol.StageCached) and e.stage == "draft"}
    anchor = np.load(by_seg[ids[1]] / "anchor.npy")
    assert np.array_equal(anchor, np.load(by_seg[ids[0]] / "frames.npy")[8])  # frame 9 of the first shot

    film = json.loads((folder / "renders" / "example" / "film.json").read_text())
    assert film["video"] == "copied" and film["segments"][0]["frames"] == 9
    total = 9 + sum(s["frames"] - 1 for s in film["segments"][1:])
    with av.open(str(folder / "renders" / "example" / "final.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == total == film["frames"]
    with av.open(str(folder / "renders" / "example" / "segments" / f"{ids[0]}.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_keeping_more_frames_than_a_shot_has_is_refused_before_any_stage(demo: dict, tmp_path: Path) -> None:
    story = tmp_path / "example.toml"
    shutil.copyfile(demo["storyboard"], story)
    sb = S.load(story)
    S.save(S.with_segment(sb, sb.segments[0].id, keep=500))
    result = _sulphur("render", str(story), "--json", cwd=tmp_path)
    assert result.returncode == 2  # a storyboard refusal, as for one that does not load
    line = f"keep = 500 is more than the 17 frames segment {sb.segments[0].id} has"
    assert f"{story}:" in result.stderr and f"segment[0].keep: {line}" in result.stderr, result.stderr
    assert not _ran(_events(result.stdout))

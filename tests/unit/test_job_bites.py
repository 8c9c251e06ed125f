"""Job resolution and the stages' cache keys, as a user meets them (issue 24's "keys" mutants).

``RenderJob.resolve`` is where a request's flags meet the storyboard: the selection, the
overrides, every preset looked up, and the refusals (a shot key a family cannot honour, a size a
strict preset cannot take) in the storyboard's one-line ``file:line:col: key: message`` form.
The second half pins what the stages' keys hold where the completeness test of
``test_cache_keys.py`` (one tiny job, every field perturbed) cannot see it: the branches taken
by other presets and shots (greedy or prompt-less models, vision projectors, chained shots).
All in memory or on small TOML strings; nothing is rendered.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.models.registry import ModelFile, get_preset
from pipeline.project import storyboard as S
from pipeline.project.audio_track import AudioTrack
from pipeline.project.storyboard import Anchor, Project, Segment, Storyboard
from pipeline.render.errors import RenderError
from pipeline.render.job import Overrides, RenderJob
from pipeline.stages.base import SegmentJob

THREE = """\
[project]
preset = "tiny"
fps = 8
{project}
[[segment]]
id = "a"
prompt = "a red fox in the snow"
frames = 17

[[segment]]
id = "b"
prompt = "the fox sleeps"
frames = 17
{b}
[[segment]]
id = "c"
prompt = "the fox wakes"
frames = 17
"""


def _board(tmp_path: Path, project: str = "", b: str = "") -> Path:
    path = tmp_path / "story.toml"
    path.write_text(THREE.format(project=project, b=b))
    return path


def _line_of(path: Path, start: str) -> int:
    return next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.startswith(start))


def _refusal(sb: Storyboard, overrides: Overrides | None = None) -> RenderError:
    with pytest.raises(RenderError) as err:
        RenderJob.resolve(sb, overrides)
    assert "\n" not in err.value.message and str(err.value) == err.value.message
    return err.value


# ------------------------------------------------------------------ selection and overrides


def test_the_overrides_reach_the_project_and_leave_the_storyboard_as_read(tmp_path: Path) -> None:
    sb = S.load(_board(tmp_path))
    job = RenderJob.resolve(sb, Overrides(preset="ltx23-distilled", vram_budget_gb=6.5, ram_budget_gb=12.0))
    assert (job.project.preset, job.project.vram_budget_gb, job.project.ram_budget_gb) == ("ltx23-distilled", 6.5, 12.0)
    assert job.preset.name == "ltx23-distilled" and set(job.presets) == {"ltx23-distilled"}
    assert sb.project.preset == "tiny" and sb.project.vram_budget_gb != 6.5  # the file's settings stay
    assert RenderJob.resolve(sb, Overrides()).project == sb.project  # no flag: the storyboard's own


def test_the_selection_is_in_storyboard_order_and_its_jobs_are_those_shots(tmp_path: Path) -> None:
    sb = S.load(_board(tmp_path))
    assert RenderJob.resolve(sb).selected == ["a", "b", "c"]
    picked = RenderJob.resolve(sb, segments=["c", "a"])
    assert picked.selected == ["a", "c"]
    assert [(j.index, j.segment.id) for j in picked.segment_jobs(picked.selected)] == [(0, "a"), (2, "c")]
    assert RenderJob.resolve(sb, from_segment="b").selected == ["b", "c"]
    assert RenderJob.resolve(sb, segments=["b"], from_segment="a").selected == ["b"]  # both named: ids win


def test_an_unknown_preset_is_refused_naming_it_and_the_shot_that_asks(tmp_path: Path) -> None:
    """Where it was asked for, in the storyboard's one-line form: the flag, or the file's
    line and column of ``project.preset`` / ``segment[i].preset`` (they named no place)."""
    known = "unknown model preset 'nope' (known: "
    err = _refusal(S.load(_board(tmp_path)), Overrides(preset="nope"))
    assert (err.kind, err.segment) == ("unknown_preset", "") and err.message.startswith("--preset: " + known)
    asked = 'preset = "nope"'
    path = _board(tmp_path, b=asked + "\n")
    err = _refusal(S.load(path))
    where = f"{path}:{_line_of(path, asked)}:1: segment[1].preset: "
    assert (err.kind, err.segment) == ("unknown_preset", "b") and err.message.startswith(where + known)
    assert "tiny-wan-ti2v" in err.message
    path.write_text(path.read_text().replace(asked, "").replace('preset = "tiny"', asked))
    err = _refusal(S.load(path))
    where = f"{path}:{_line_of(path, asked)}:1: project.preset: "
    assert (err.kind, err.segment) == ("unknown_preset", "") and err.message.startswith(where + known)


# ------------------------------------------------------------------ shot keys a family cannot honour


def test_a_retake_on_a_later_wan_shot_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _board(tmp_path, b='preset = "tiny-wan-ti2v"\nretake = [5, 8]\n')
    err = _refusal(S.load(path))
    assert (err.kind, err.segment) == ("unsupported_key", "b")
    assert err.message == (f"{path}:{_line_of(path, 'retake')}:1: segment[1].retake: preset tiny-wan-ti2v (wan) "
                           "cannot honour retake; use an LTX-2 preset for this shot")


@pytest.mark.parametrize("swap", ["deleted", "fifo"])
def test_a_storyboard_gone_since_it_was_read_is_still_refused_in_one_line(tmp_path: Path, swap: str) -> None:
    """Deleted, or swapped for a FIFO no writer opens (the refusal must not wait on it)."""
    path = _board(tmp_path, b='preset = "tiny-wan-ti2v"\nretake = [5, 8]\n')
    sb = S.load(path)
    path.unlink()
    if swap == "fifo":
        os.mkfifo(path)
    assert _refusal(sb).message == (f"{path}: segment[1].retake: preset tiny-wan-ti2v (wan) cannot honour retake; "
                                    "use an LTX-2 preset for this shot")


# ------------------------------------------------------------------ shots a preset cannot render as written


def test_a_keep_past_a_later_shots_end_is_refused_at_its_line(tmp_path: Path) -> None:
    """Refused as the job resolves (before the shots ahead of it render), at the key."""
    path = _board(tmp_path, b="keep = 18\n")
    err = _refusal(S.load(path))
    assert (err.kind, err.segment) == ("bad_keep", "b")
    assert err.message == (f"{path}:{_line_of(path, 'keep')}:1: segment[1].keep: keep = 18 is more than the "
                           "17 frames segment b has")
    RenderJob.resolve(S.load(_board(tmp_path, b="keep = 17\n")))  # all of them is fine
    # a shot after the ones a render drafts does not hold it up (F6 on shot a)
    assert RenderJob.resolve(S.load(_board(tmp_path, b="keep = 18\n")), segments=["a"]).selected == ["a"]


@pytest.mark.parametrize(("b", "at"), [('preset = "tiny-svd"\nanchor = "none"\n', "anchor"), ("", "[[segment]]")],
                         ids=["anchor-none", "first-shot"])
def test_a_shot_with_no_picture_for_an_image_only_model_is_refused_at_its_line(
        tmp_path: Path, b: str, at: str) -> None:
    """SVD generates only from a picture: a shot anchored to nothing (or the first shot, with no
    shot before it) failed its draft after the shots before it had rendered."""
    path = _board(tmp_path, b=b)
    if not b:  # the whole storyboard on SVD: the first shot has nothing to start from
        path.write_text(path.read_text().replace('preset = "tiny"', 'preset = "tiny-svd"'))
    err = _refusal(S.load(path))
    index, seg = (1, "b") if b else (0, "a")
    assert (err.kind, err.segment) == ("needs_anchor", seg)
    line = _line_of(path, at) if b else _line_of(path, "[[segment]]")
    assert err.message.startswith(f"{path}:{line}:1: segment[{index}].anchor: preset tiny-svd generates only "
                                  "from a picture"), err.message
    RenderJob.resolve(S.load(_board(tmp_path, b='preset = "tiny-svd"\n')))  # anchored to the shot before


# ------------------------------------------------------------------ sizes a strict preset cannot take

LTX25 = 'preset = "ltx25-distilled"\n'  # on shot b: the project's tiny preset (not strict) comes first


def _size_message(path: Path, key: str, size: str) -> str:
    w, h = get_preset("ltx25-distilled").draft_size
    return (f"{path}:{_line_of(path, key)}:1: project.{key}: {size} is not valid for preset ltx25-distilled: "
            f"width and height must be multiples of 64 (its default is {w}x{h})")


@pytest.mark.parametrize(("key", "size", "shown"), [("draft_size", "[512, 288]", "512x288"),
                                                     ("draft_size", "[500, 300]", "500x300"),
                                                     ("refine_size", "[1000, 576]", "1000x576")])
def test_a_size_a_strict_shot_cannot_take_is_refused_at_its_line(tmp_path: Path, key: str, size: str,
                                                                  shown: str) -> None:
    path = _board(tmp_path, project=f"{key} = {size}\n", b=LTX25)
    sb = S.load(path)
    err = _refusal(sb)
    assert (err.kind, err.message) == ("invalid_size", _size_message(path, key, shown))
    path.unlink()  # read again for the position: gone, the message still names the file and the key
    assert _refusal(sb).message.startswith(f"{path}: project.{key}: {shown} is not valid")


@pytest.mark.parametrize("project", ["", "draft_size = [640, 384]\n", "refine_size = [1280, 768]\n",
                                     "draft_size = [640, 384]\nrefine_size = [1280, 768]\n"])
def test_sizes_a_strict_shot_can_take_are_accepted_unchanged(tmp_path: Path, project: str) -> None:
    job = RenderJob.resolve(S.load(_board(tmp_path, project=project, b=LTX25)))
    assert set(job.presets) == {"tiny", "ltx25-distilled"}
    assert job.project == S.load(_board(tmp_path, project=project, b=LTX25)).project


def test_a_preset_that_rounds_sizes_takes_what_a_strict_one_refuses(tmp_path: Path) -> None:
    job = RenderJob.resolve(S.load(_board(tmp_path, project="draft_size = [500, 300]\n")))
    assert job.segment_job(0).draft_size == get_preset("tiny").round_size((500, 300))


# ------------------------------------------------------------------ what the stages' keys hold


def _job(tmp_path: Path, preset: str = "tiny", **changes: object) -> SegmentJob:
    """Shot b of two (chained), as the runner resolves it, with the given fields changed."""
    segs = (Segment(id="a", prompt="a red fox"), Segment(id="b", prompt="the fox sleeps"))
    board = Storyboard(path=tmp_path / "board.toml", project=Project(fps=8), segments=segs)
    p = get_preset(preset)
    job = SegmentJob(storyboard=board, segment=segs[1], index=1, preset=p, frames=17, seed=5, fps=8,
                     draft_size=p.draft_size, refine_size=p.refine_size, output_size=(448, 256), steps=p.steps,
                     refine_sigmas=p.refine_sigmas, lora_strength=0.7, audio=True, prompt="the fox sleeps")
    return dataclasses.replace(job, **changes)


def _with_extra(job: SegmentJob, **extra: object) -> SegmentJob:
    return dataclasses.replace(job, preset=dataclasses.replace(job.preset, extra={**job.preset.extra, **extra}))


def _stage(name: str):  # noqa: ANN202
    from pipeline.stages.draft import DraftStage
    from pipeline.stages.enhance import EnhanceStage
    from pipeline.stages.family_draft import FamilyDraftStage
    from pipeline.stages.grade import GradeStage
    from pipeline.stages.refine import RefineStage
    from pipeline.stages.resize_refine import ResizeRefineStage
    from pipeline.stages.retake import RetakeDraftStage, RetakeStage
    from pipeline.stages.upscale import UpscaleStage

    return {"enhance": EnhanceStage, "draft": DraftStage, "refine": RefineStage, "upscale": UpscaleStage,
            "grade": GradeStage, "family_draft": FamilyDraftStage, "resize_refine": ResizeRefineStage,
            "retake-draft": RetakeDraftStage, "retake": RetakeStage}[name]()


@pytest.mark.parametrize(("kind", "index", "anchor", "i2v"), [
    ("image", 0, False, True), ("video", 0, False, True), ("previous", 1, False, True),
    ("previous", 0, False, False), ("none", 1, False, False), ("none", 0, True, True)])
def test_the_enhancer_is_told_image_to_video_exactly_when_the_shot_starts_from_a_frame(
        tmp_path: Path, kind: str, index: int, anchor: bool, i2v: bool) -> None:
    """Lightricks word an I2V prompt otherwise than a T2V one: the flag is in the key, known before
    the anchor is read (a chained first shot has no previous frame)."""
    seg = Segment(id="b", prompt="the fox sleeps", anchor=Anchor(kind, "a.png" if kind in ("image", "video") else ""))
    job = _job(tmp_path, segment=seg, index=index, anchor=np.zeros((4, 4, 3), np.uint8) if anchor else None)
    assert _stage("enhance").params(job)["image_to_video"] is i2v


def test_the_anchor_reaches_the_enhance_key_only_through_a_vision_projector(tmp_path: Path) -> None:
    mmproj = tmp_path / "mmproj.gguf"
    mmproj.write_bytes(b"projector")
    job = _job(tmp_path, anchor=np.zeros((4, 4, 3), np.uint8), anchor_digest="d0")
    vision = dataclasses.replace(job, preset=dataclasses.replace(job.preset, files=(
        *job.preset.files, ModelFile("enhancer_mmproj", "vision projector", path=str(mmproj)))))
    enhance = _stage("enhance")
    assert enhance.params(job)["anchor"] == ""  # a text-only enhancer never sees the frame
    assert enhance.params(vision)["anchor"] == "d0"
    assert enhance.params(dataclasses.replace(vision, anchor_digest="d1"))["anchor"] == "d1"
    assert enhance.params(dataclasses.replace(vision, anchor=None, anchor_digest=""))["anchor"] == ""
    mmproj.unlink()  # named but not found: no image is shown
    assert enhance.params(vision)["anchor"] == ""


def test_a_rebuilt_tiny_enhancer_or_projector_moves_the_enhance_key(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import enhancer

    job = _job(tmp_path)
    job = dataclasses.replace(job, preset=dataclasses.replace(job.preset, files=(
        *job.preset.files, ModelFile("enhancer_mmproj", "vision projector", path="mmproj.gguf"))))
    before = _stage("enhance").params(job)
    monkeypatch.setattr(enhancer, "TINY_LLM_VERSION", enhancer.TINY_LLM_VERSION + 1)
    after = _stage("enhance").params(job)
    assert before["model"] != after["model"] and before["mmproj"] != after["mmproj"]


def test_a_rebuilt_tiny_upscaler_moves_the_upscale_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.stages import upscale

    before = _stage("upscale").params(_job(tmp_path))
    monkeypatch.setattr(upscale, "TINY_X2PLUS_VERSION", upscale.TINY_X2PLUS_VERSION + 1)
    assert _stage("upscale").params(_job(tmp_path))["model"] != before["model"]


def test_the_enhance_key_holds_the_prompts_mode_and_temperature_the_preset_asks_for(tmp_path: Path) -> None:
    """Lightricks' prompts come from diffusers (another release may word them anew); a finetuned
    enhancer's own prompt does not; only a preset that departs from 0.7 carries a temperature
    (so every other preset's cached prompts stay valid)."""
    from pipeline.stages.enhance import DEFAULT_MAX_TOKENS

    enhance = _stage("enhance")
    tiny = enhance.params(_job(tmp_path))
    assert (tiny["mode"], tiny["prompts_from"]) == ("ltx", importlib.metadata.version("diffusers"))
    assert "temperature" not in tiny
    own = enhance.params(_with_extra(_job(tmp_path), enhance_system_prompt="none"))
    assert (own["mode"], own["prompts_from"]) == ("none", "")
    greedy = enhance.params(_with_extra(_job(tmp_path), enhance_temperature=0.0))
    assert greedy["temperature"] == 0.0 and {k: v for k, v in greedy.items() if k != "temperature"} == tiny
    # no text-encoder limit (SVD takes no prompt): the answer is ltx-core's length
    assert enhance.params(_job(tmp_path, "tiny-svd"))["max_tokens"] == DEFAULT_MAX_TOKENS


def test_a_model_that_takes_no_prompt_keys_neither_prompt_nor_negative(tmp_path: Path) -> None:
    family = _stage("family_draft")
    svd = family.params(_with_extra(_job(tmp_path, "tiny-svd"), negative_prompt="blurry"))
    assert (svd["prompt"], svd["negative"]) == ("", "")
    wan = _job(tmp_path, "tiny-wan-ti2v")
    assert (family.params(wan)["prompt"], family.params(wan)["negative"]) == ("the fox sleeps", "")
    assert family.params(_with_extra(wan, negative_prompt="blurry"))["negative"] == "blurry"


def test_a_retake_draws_its_own_noise_and_a_shot_without_one_the_drafts(tmp_path: Path) -> None:
    from pipeline.project.keyframes import retake_seed

    plain = _job(tmp_path)
    retaken = _job(tmp_path, segment=dataclasses.replace(plain.segment, retake=(3, 5)))
    draft, again = _stage("draft"), _stage("retake-draft")
    assert draft.seed(plain) == again.seed(plain) == 5
    assert again.seed(retaken) == retake_seed(5, (3, 5)) != 5
    assert again.params(retaken) == {"retake": [3, 5], "retake_seed": retake_seed(5, (3, 5))}
    assert _stage("retake").params(retaken) == {"span": [3, 5]}


#: stage -> the values its key holds for a shot without anchor, reference, keyframes or retake. A
#: user's cache on disk is keyed by them: changing one re-renders every cached shot after an upgrade.
RELEASED = {
    "draft": {"anchor": ""},
    "enhance": {"anchor": "", "mmproj": None},
    "upscale": {"resize": "bicubic-antialias", "output_size": [448, 256]},
    "grade": {"reference": "", "method": "meanstd"},
    "resize_refine": {"method": "lanczos"},
    "retake-draft": {"retake": None},
    "retake": {"span": None},
}


@pytest.mark.parametrize("stage_name", list(RELEASED))
def test_a_plain_shots_key_holds_the_values_it_was_released_with(stage_name: str, tmp_path: Path) -> None:
    params = _stage(stage_name).params(_job(tmp_path, "tiny-wan-ti2v" if stage_name == "resize_refine" else "tiny"))
    assert {k: params.get(k, "absent") for k in RELEASED[stage_name]} == RELEASED[stage_name]
    if stage_name in ("retake-draft", "retake"):
        assert params == RELEASED[stage_name]


def test_a_shot_without_keyframes_or_own_sound_keeps_the_keys_it_had_before_them(tmp_path: Path) -> None:
    plain = _job(tmp_path)
    assert "keyframes" not in _stage("refine").params(plain)
    assert not {"loras", "audio_track"} & set(_stage("draft").params(plain))
    track = tmp_path / "track.wav"
    track.write_bytes(b"RIFF")
    sound = _job(tmp_path, segment=dataclasses.replace(plain.segment, audio=AudioTrack("track.wav", start=1.5)))
    keyed = _stage("draft").params(sound)["audio_track"]
    assert keyed[1:] == [1.5, True] and len(keyed[0]) >= 32  # the bytes' digest, the start, chained
    track.write_bytes(b"RIFF2")
    assert _stage("draft").params(sound)["audio_track"][0] != keyed[0]
    track.unlink()
    assert _stage("draft").params(sound)["audio_track"][0] == "missing:track.wav"

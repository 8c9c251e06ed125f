"""Cache-key completeness, derived from the parameter types so it cannot go stale.

A stage's computation gets one typed object, :class:`SegmentJob` (with the storyboard's
:class:`Segment` and :class:`Project` and the model :class:`Preset` inside it). Every field
of those dataclasses is enumerated here and perturbed one at a time; for each stage the
test asserts that the stage's cache key changes exactly for the fields listed in
``REACHES[stage]`` and for nothing else. A field added to any of those types fails this
test for every stage until someone decides, in ``REACHES``, which stages it reaches.

A second test does the same through the storyboard and the runner's job resolution
(``RenderJob.segment_job`` through ``Renderer.job_for``), with each stage's key chained through its inputs' keys as a render
chains them: a TOML comment, a later segment and ``keep`` (for every stage before encode)
must not move a key; every [project]/[[segment]] field that changes pixels must.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.models.registry import ModelFile, Preset, get_preset
from pipeline.project import storyboard as sbmod
from pipeline.project.audio_track import AudioTrack
from pipeline.project.loras import LoraRef
from pipeline.project.storyboard import Anchor, Project, Segment, Storyboard
from pipeline.render.cache import stage_key
from pipeline.stages.base import SegmentJob, Stage

# ----------------------------------------------------------------- perturbing any field


def _other(value: Any, hint: Any, name: str) -> Any:
    """A different valid value of the same type (None-able fields get a value, and back)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1 if name == "index" else value + 1  # index 1 -> 0: the first shot
    if isinstance(value, float):
        return value / 2 + 0.125
    if isinstance(value, str):
        return {"drift_guard": "anchor+output" if value != "anchor+output" else "anchor"}.get(name, value + "-x")
    if isinstance(value, np.ndarray):
        return (value.astype(np.int16) + 1).clip(0, 255).astype(value.dtype)
    if isinstance(value, Anchor):
        return Anchor("none") if value.kind != "none" else Anchor("previous")
    # keyframes/retake: a still (kf.png beside the board, written by the tests) or its strength; a span
    if name == "keyframes":
        return (sbmod.Keyframe(-1, "kf.png"),) if not value else (replace_strength(value[0]),)
    if name == "retake":
        return (1, 2) if value is None else (value[0], value[1] + 1)
    if name == "loras":  # a LoRA appears, or the first one's strength changes
        return (LoraRef("style.safetensors", 0.5),) if not value else (
            dataclasses.replace(value[0], strength=value[0].strength / 2 + 0.125), *value[1:])
    if isinstance(value, AudioTrack) or value is None and "AudioTrack" in str(hint):
        return AudioTrack("track.wav") if value is None else dataclasses.replace(value, start=value.start + 0.5)
    if isinstance(value, tuple) and value and isinstance(value[0], ModelFile):
        return tuple(dataclasses.replace(f, path=f.path + "-x") for f in value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value) \
            and name.endswith("size"):
        return (value[0] + 32, value[1] + 32)
    if isinstance(value, tuple) and value and isinstance(value[0], str):  # a named schedule: (kind, *numbers)
        return (value[0], float(value[1]) / 2 + 0.125, *value[2:])
    if isinstance(value, tuple):
        return tuple(float(v) / 2 for v in value) if value else (0.5, 0.0)
    if isinstance(value, dict):
        return {**value, "not-a-setting": 1}
    if callable(value):
        return None
    if value is None:
        text = str(hint)
        for kind, v in (("ndarray", np.full((4, 4, 3), 7, np.uint8)), ("tuple[int, int]", (640, 352)),
                        ("tuple[float", (0.9, 0.0)), ("int", 41), ("float", 0.5), ("str", "anchor+output"),
                        ("Callable", lambda: Path("."))):
            if kind in text:
                return v
    raise TypeError(f"no perturbation for {name}={value!r} ({hint})")


def replace_strength(kf: Any) -> Any:
    return dataclasses.replace(kf, strength=kf.strength / 2)


def _still(folder: Path) -> None:
    """The keyframe still the perturbations name (a draft key holds its digest)."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "kf.png")


def _hints(cls: type) -> dict[str, Any]:
    import pipeline.stages.base as base

    ns = {**vars(base), **vars(sbmod), "np": np, "Path": Path, "Callable": typing.Callable,
          "Preset": Preset, "ModelFile": ModelFile}
    return typing.get_type_hints(cls, globalns=ns)


#: Settings some preset may hold in ``Preset.extra`` that a stage reads; perturbed on every preset.
EXTRA_SETTINGS = ("negative_prompt", "enhance_max_tokens", "enhance_n_ctx", "max_sequence_length",
                  "use_cross_timestep", "refine_scale", "recipe", "enhance_system_prompt", "draft_schedule")

#: Nested parameter types inside a job, by the attribute that holds them.
NESTED = {"segment": Segment, "preset": Preset, "storyboard": Storyboard}


def perturbations(job: SegmentJob) -> list[tuple[str, SegmentJob]]:
    """(path, job with that one field changed) for every field reachable from the job."""
    out: list[tuple[str, SegmentJob]] = []
    hints = _hints(SegmentJob)
    for f in dataclasses.fields(SegmentJob):
        if f.name in NESTED:
            continue
        out.append((f.name, dataclasses.replace(job, **{f.name: _other(getattr(job, f.name), hints[f.name], f.name)})))
        value = getattr(job, f.name)
        if f.name.endswith("_size"):  # width and height each on their own, too
            out.append((f.name, dataclasses.replace(job, **{f.name: (value[0], value[1] + 32)})))
            out.append((f.name, dataclasses.replace(job, **{f.name: (value[0] + 32, value[1])})))
    for f in dataclasses.fields(Segment):
        seg = dataclasses.replace(job.segment, **{f.name: _other(getattr(job.segment, f.name),
                                                                 _hints(Segment)[f.name], f.name)})
        board = dataclasses.replace(job.storyboard, segments=(seg, *job.storyboard.segments[1:]))
        out.append((f"segment.{f.name}", dataclasses.replace(job, segment=seg, storyboard=board)))
    for f in dataclasses.fields(Project):
        project = dataclasses.replace(job.project, **{f.name: _other(getattr(job.project, f.name),
                                                                    _hints(Project)[f.name], f.name)})
        out.append((f"project.{f.name}",
                    dataclasses.replace(job, storyboard=dataclasses.replace(job.storyboard, project=project))))
    for f in dataclasses.fields(Preset):
        preset = dataclasses.replace(job.preset, **{f.name: _other(getattr(job.preset, f.name),
                                                                  _hints(Preset)[f.name], f.name)})
        out.append((f"preset.{f.name}", dataclasses.replace(job, preset=preset)))
    for key in {*job.preset.extra, *EXTRA_SETTINGS}:
        value = job.preset.extra.get(key)
        extra = {**job.preset.extra, key: 7 if value is None else _other(value, None, key)}
        out.append((f"preset.extra[{key}]", dataclasses.replace(job, preset=dataclasses.replace(job.preset, extra=extra))))
    board = job.storyboard
    later = (*board.segments[:1], *(dataclasses.replace(s, prompt=s.prompt + " later") for s in board.segments[1:]))
    out.append(("storyboard.segments[1:]", dataclasses.replace(job, storyboard=dataclasses.replace(board, segments=later))))
    out.append(("storyboard.path", dataclasses.replace(job, storyboard=dataclasses.replace(board, path=board.path.with_name("b.toml")))))
    return out


# ------------------------------------------------------------------ what reaches what

_LTX_DRAFT = {"prompt", "anchor", "anchor_digest", "seed", "frames", "draft_size", "steps", "lora_strength", "fps", "audio",
              "preset.name", "preset.guidance_scale", "preset.builder", "preset.extra[draft_schedule]",
              "segment.loras", "segment.audio"}
# A shot's own LoRAs apply in refine too; a given sound is held fixed there as well.
_LTX_REFINE = {"seed", "refine_size", "refine_sigmas", "lora_strength", "fps",
               "preset.name", "preset.guidance_scale", "preset.builder", "segment.loras", "segment.audio"}
# job.frames reaches encode only through `kept` when keep is unset (this job sets keep).
_ENCODE = {"fps", "output_size", "audio", "index", "segment.keep", "segment.anchor"}

#: stage -> the paths that must change its own key (its inputs' keys carry the rest).
REACHES: dict[str, set[str]] = {
    "enhance": {"seed", "segment.prompt", "preset.files", "preset.builder", "preset.extra[enhance_max_tokens]",
                "preset.extra[max_sequence_length]",  # the answer is held to what the encoder reads
                "preset.extra[enhance_system_prompt]"},
    "draft": _LTX_DRAFT | {"segment.keyframes"},
    "refine": _LTX_REFINE | {"segment.keyframes"},  # refine conditions on the stills again, at its size
    "upscale": {"output_size", "preset.files", "preset.builder"},
    "grade": {"reference", "project.drift_strength"},
    "encode": _ENCODE,
    "family_draft": {"prompt", "anchor", "anchor_digest", "seed", "frames", "draft_size", "steps", "fps",
                     "preset.name", "preset.guidance_scale", "preset.builder", "preset.takes_prompt",
                     "preset.extra[tiny_digest]", "preset.extra[negative_prompt]"},
    "resize_refine": {"refine_size"},
    # keyframes/retake: a retake's draft reaches the rest through the original draft's key (its input)
    "retake-draft": {"seed", "segment.retake"},
    "retake": {"segment.retake"},
}

# Fields no stage reads directly, and why (the runner resolves them into the job's own fields,
# or they do not change pixels). Listed so a reader sees every field was decided on.
RESOLVED_OR_INERT = {
    "segment.frames/seconds/seed/steps/refine_sigmas/lora_strength/preset/drift_guard":
        "resolved by Renderer.job_for into job.frames/seed/steps/... (second test)",
    "segment.enhanced_prompt/enhance_lock": "resolved into job.prompt by Renderer.prompt_for",
    "project.*": "resolved into the job by Renderer.job_for, or memory budgets/title (no pixels)",
    "preset.extra[...]": "max_sequence_length, use_cross_timestep, recipe: fixed per preset name "
                         "(the preset name and builder version are in the key)",
}


def _stages() -> dict[str, Stage]:
    from pipeline.stages.draft import DraftStage
    from pipeline.stages.encode import EncodeStage
    from pipeline.stages.enhance import EnhanceStage
    from pipeline.stages.family_draft import FamilyDraftStage
    from pipeline.stages.grade import GradeStage
    from pipeline.stages.refine import RefineStage
    from pipeline.stages.resize_refine import ResizeRefineStage
    from pipeline.stages.retake import RetakeDraftStage, RetakeStage
    from pipeline.stages.upscale import UpscaleStage

    return {"enhance": EnhanceStage(), "draft": DraftStage(), "refine": RefineStage(), "upscale": UpscaleStage(),
            "grade": GradeStage(), "encode": EncodeStage(), "family_draft": FamilyDraftStage(),
            "resize_refine": ResizeRefineStage(), "retake-draft": RetakeDraftStage(), "retake": RetakeStage()}


def _job(tmp: Path, preset: Preset, index: int = 1) -> SegmentJob:
    _still(tmp)
    segs = (Segment(id="a", prompt="a red fox", keep=9, retake=(3, 5)), Segment(id="b", prompt="the fox sleeps"))
    seg = segs[0]
    board = Storyboard(path=tmp / "board.toml", project=Project(fps=8, drift_guard="anchor+output"),
                       segments=segs)
    anchor = np.zeros((preset.draft_size[1], preset.draft_size[0], 3), np.uint8)
    return SegmentJob(storyboard=board, segment=seg, index=index, preset=preset, frames=17, seed=5, fps=8,
                      draft_size=preset.draft_size, refine_size=preset.refine_size, output_size=(448, 256),
                      steps=preset.steps, refine_sigmas=preset.refine_sigmas, lora_strength=0.7, audio=True,
                      prompt="a red fox, enhanced", anchor=anchor, anchor_digest="d0",
                      reference=np.full((8, 8, 3), 100, np.uint8))


def _key(stage: Stage, job: SegmentJob) -> str:
    return stage_key(stage.name, stage.version, stage.params(job), {})


def _preset_for(stage: str) -> Preset:
    return get_preset("tiny-wan-ti2v" if stage in ("family_draft", "resize_refine") else "tiny")


@pytest.mark.parametrize("stage_name", list(REACHES))
def test_each_job_field_moves_exactly_the_keys_of_the_stages_it_reaches(stage_name: str, tmp_path: Path) -> None:
    stage = _stages()[stage_name]
    job = _job(tmp_path, _preset_for(stage_name))
    base = _key(stage, job)
    wrong_moves, wrong_stays = [], []
    for path, changed in perturbations(job):
        if path == "anchor":  # the runner sets the digest with the anchor; keep them together
            changed = dataclasses.replace(changed, anchor_digest="d1")
        moved = _key(stage, changed) != base
        if moved and path not in REACHES[stage_name] and path not in wrong_moves:
            wrong_moves.append(path)
        if not moved and path in REACHES[stage_name] and path not in wrong_stays:
            wrong_stays.append(path)
    assert not wrong_stays, f"{stage_name}'s cache key ignores {wrong_stays}: an edit would reuse a stale entry"
    assert not wrong_moves, f"{stage_name}'s cache key changes with {wrong_moves}, which do not reach it"


def test_the_enumeration_covers_every_field_of_the_parameter_types(tmp_path: Path) -> None:
    paths = {p for preset in ("tiny", "tiny-wan-ti2v")
             for p, _ in perturbations(_job(tmp_path, get_preset(preset)))}
    for cls, prefix in ((Segment, "segment."), (Project, "project."), (Preset, "preset."), (SegmentJob, "")):
        for f in dataclasses.fields(cls):
            if f.name not in NESTED or cls is not SegmentJob:
                assert prefix + f.name in paths
    every = set().union(*REACHES.values())
    assert every <= paths | {"anchor"}, every - paths


# ------------------------------------------------ through the storyboard and the runner

BOARD = """\
# A chained two-shot storyboard.
[project]
title = "keys"
fps = 8
seed = 3
preset = "tiny"
output_size = [448, 256]
drift_guard = "anchor+output"

[[segment]]
id = "a"
prompt = "a red fox in the snow"
frames = 17
keep = 13

[[segment]]
id = "b"
prompt = "the fox curls up and sleeps"
frames = 9
"""


def _renderer(sb: Storyboard) -> Any:
    from pipeline.render.job import RenderJob
    from pipeline.render.runner import Renderer

    return Renderer(RenderJob.resolve(sb), lambda e: None, threading.Event(), "job", LoadedModels())


def chained_keys(sb: Storyboard, index: int = 0) -> dict[str, str]:
    """Each stage's key for segment ``index`` as a render computes it, inputs' keys included."""
    from pipeline.render.cache import Artifact

    r = _renderer(sb)
    job = r.job_for(index)
    job.prompt = job.segment.enhanced_prompt or job.segment.prompt
    job.reference = np.full((8, 8, 3), 90, np.uint8)  # the film's, from segment 0 or a file
    keys: dict[str, str] = {}
    arts: dict[str, Artifact] = {}

    def run(name: str, inputs: dict[str, str]) -> None:
        given = {k: arts[k] for k in inputs}
        keys[name] = r.key_for(name, job, given)
        arts[name] = Artifact(stage=name, key=keys[name], path=Path("."), meta={})

    run("enhance", {})
    run("draft", {})
    run("refine", {"draft": ""})
    run("upscale", {"refine": ""})
    run("grade", {"upscale": ""})
    keys["encode"] = r.key_for("encode", job, {"upscale": arts["grade"], "draft": arts["draft"]})
    return keys


STAGE_ORDER = ("enhance", "draft", "refine", "upscale", "grade", "encode")

#: storyboard field -> the first stage of segment 0 it reaches ("" = none); later stages
#: follow through their inputs' keys (enhance feeds the draft only through job.prompt).
FIRST_REACHED = {
    "segment.id": "", "segment.prompt": "enhance", "segment.enhanced_prompt": "draft",
    "segment.enhance_lock": "", "segment.frames": "draft", "segment.seconds": "",  # frames wins
    "segment.seed": "enhance", "segment.anchor": "",  # anchor: segment 0 repeats none "segment.preset": "",
    "segment.steps": "draft", "segment.refine_sigmas": "refine", "segment.lora_strength": "draft",
    "segment.drift_guard": "", "segment.keep": "encode", "segment.loras": "draft", "segment.audio": "draft",
    "project.title": "", "project.fps": "draft", "project.seed": "enhance", "project.preset": "",
    "project.vram_budget_gb": "", "project.ram_budget_gb": "", "project.draft_size": "draft",
    "project.refine_size": "refine", "project.output_size": "upscale", "project.audio": "draft",
    "project.steps": "draft", "project.refine_sigmas": "refine", "project.lora_strength": "draft",
    "project.enhance": "", "project.drift_guard": "", "project.drift_reference": "",
    "project.drift_strength": "grade", "project.cache_limit_gb": "",
    # keyframes/retake: a retake moves none of the original's keys (undo finds them again)
    "segment.keyframes": "draft", "segment.retake": "",
}
# Notes on the "" entries above, each checked by this test: segment.seconds loses to frames;
# segment.preset/project.preset —
# "-x" names no preset, so they are left to test_mixed_presets, as drift_reference (a file) is
# to test_drift_guard_e2e; drift_guard values of this
# board keep the grade stage either way; project.enhance is read by Renderer.prompt_for.
_SKIP = {"segment.preset", "project.preset", "segment.id", "project.drift_reference"}


def _storyboard_perturbations(sb: Storyboard) -> list[tuple[str, Storyboard]]:
    out = []
    seg = sb.segments[0]
    for f in dataclasses.fields(Segment):
        if f"segment.{f.name}" in _SKIP:
            continue
        value = _other(getattr(seg, f.name), _hints(Segment)[f.name], f.name)
        if f.name == "seconds":
            value = 3.0
        if f.name == "anchor":
            value = Anchor("none")
        out.append((f"segment.{f.name}", sbmod.with_segment(sb, seg.id, **{f.name: value})))
    for f in dataclasses.fields(Project):
        if f"project.{f.name}" in _SKIP:
            continue
        value = _other(getattr(sb.project, f.name), _hints(Project)[f.name], f.name)
        if f.name == "drift_guard":
            value = "anchor"
        out.append((f"project.{f.name}", dataclasses.replace(sb, project=dataclasses.replace(sb.project, **{f.name: value}))))
    return out


def test_every_storyboard_field_reaches_the_stages_it_should(tmp_path: Path) -> None:
    sb = sbmod.parse(BOARD, tmp_path / "keys.toml")
    _still(tmp_path)
    base = chained_keys(sb)
    problems = []
    for path, changed in _storyboard_perturbations(sb):
        first = FIRST_REACHED[path]
        keys = chained_keys(changed)
        for stage in STAGE_ORDER:
            expect = bool(first) and (STAGE_ORDER.index(stage) >= STAGE_ORDER.index(first))
            if (keys[stage] != base[stage]) != expect:
                problems.append(f"{path} {'does not move' if expect else 'moves'} the {stage} key")
    assert not problems, "\n".join(problems)


def test_comments_later_segments_and_keep_leave_upstream_keys_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    base = chained_keys(sbmod.parse(BOARD, path))
    commented = BOARD.replace('prompt = "a red fox in the snow"', 'prompt = "a red fox in the snow"  # shot one')
    assert chained_keys(sbmod.parse("# edited\n" + commented, path)) == base
    later = BOARD.replace("the fox curls up and sleeps", "the fox runs off").replace("frames = 9", "frames = 25")
    assert chained_keys(sbmod.parse(later, path)) == base
    kept = chained_keys(sbmod.parse(BOARD.replace("keep = 13", "keep = 11"), path))
    assert {s: kept[s] == base[s] for s in STAGE_ORDER} == {s: s != "encode" for s in STAGE_ORDER}



# ------------------------------------------------ what the job resolves each setting to

LAYERED = """\
[project]
fps = 12
seed = 40
preset = "tiny"
steps = 5
lora_strength = 0.5
refine_sigmas = [0.8, 0.0]

[[segment]]
id = "own"
prompt = "every setting its own"
seconds = 1.5
seed = 7
steps = 3
lora_strength = 0.0
refine_sigmas = [0.6, 0.0]

[[segment]]
id = "inherits"
prompt = "every setting from the project"

[[segment]]
id = "family"
prompt = "another family, its own refine scale"
preset = "tiny-wan-ti2v"
"""


def test_each_setting_comes_from_the_segment_else_the_project_else_the_preset(tmp_path: Path) -> None:
    from pipeline.render.job import RenderJob

    sb = sbmod.parse(LAYERED, tmp_path / "layered.toml")
    job = RenderJob.resolve(sb)
    own, inherits, family = (job.segment_job(i) for i in range(3))
    tiny, wan = get_preset("tiny"), get_preset("tiny-wan-ti2v")
    assert (own.frames, own.seed, own.steps, own.lora_strength, own.refine_sigmas, own.fps) == (
        tiny.round_frames(18), 7, 3, 0.0, (0.6, 0.0), 12)
    assert (inherits.frames, inherits.seed, inherits.steps, inherits.lora_strength, inherits.refine_sigmas) == (
        tiny.round_frames(25), 41, 5, 0.5, (0.8, 0.0))  # 2 s at 12 fps + 1; project seed + position
    assert (own.draft_size, own.refine_size) == (tiny.draft_size, (2 * tiny.draft_size[0], 2 * tiny.draft_size[1]))
    assert family.preset is wan and family.seed == 42 and family.audio is False
    assert family.refine_size == wan.draft_size  # refine_scale 1: no pixel ×2 without a latent upsampler
    bare = sbmod.parse('[[segment]]\nid = "a"\nprompt = "p"\n', tmp_path / "bare.toml")
    only = RenderJob.resolve(bare).segment_job(0)
    assert (only.steps, only.lora_strength, only.refine_sigmas, only.seed) == (
        tiny.steps, tiny.lora_strength, tiny.refine_sigmas, 0)


def _preset_of_files(tmp_path: Path, base: str, name: str, roles: tuple[str, ...],
                     suffix: str) -> tuple[Preset, dict[str, Path]]:
    """``base`` without a builder, identified by one small file per role (each holding b"v1")."""
    files = {role: tmp_path / f"{role}{suffix}" for role in roles}
    for p in files.values():
        p.write_bytes(b"v1")
    preset = dataclasses.replace(get_preset(base), name=name, builder=None,
                                 files=tuple(ModelFile(r, r, path=str(p)) for r, p in files.items()))
    return preset, files


def test_real_weights_files_are_part_of_the_keys_that_use_them(tmp_path: Path) -> None:
    """Presets without a builder are identified by their files: replacing the upscaler's file
    moves the upscale key and not the family draft's; replacing the model moves the draft's."""
    preset, files = _preset_of_files(tmp_path, "tiny-wan-ti2v", "real-wan", ("diffusers", "upscaler", "enhancer"),
                                     ".bin")
    stages = _stages()
    job = _job(tmp_path, preset)

    def keys() -> dict[str, str]:
        return {n: _key(stages[n], job) for n in ("family_draft", "upscale", "enhance")}

    before = keys()
    files["upscaler"].write_bytes(b"version 2")
    after_upscaler = keys()
    assert {n: after_upscaler[n] != before[n] for n in before} == {"family_draft": False, "upscale": True,
                                                                   "enhance": False}
    files["enhancer"].write_bytes(b"version 2")
    after_enhancer = keys()
    assert {n: after_enhancer[n] != after_upscaler[n] for n in before} == {"family_draft": False, "upscale": False,
                                                                           "enhance": True}
    files["diffusers"].write_bytes(b"version 2")
    after_model = keys()
    assert {n: after_model[n] != after_enhancer[n] for n in before} == {"family_draft": True, "upscale": False,
                                                                        "enhance": False}
    files["upscaler"].unlink()
    assert keys()["upscale"] != after_model["upscale"]  # a missing file is not the file


def test_a_reference_or_an_anchor_appearing_moves_the_key(tmp_path: Path) -> None:
    job = _job(tmp_path, get_preset("tiny"))
    stages = _stages()
    assert _key(stages["grade"], job) != _key(stages["grade"], dataclasses.replace(job, reference=None))
    tall = dataclasses.replace(job, reference=job.reference.reshape(16, 4, 3))  # same bytes, other shape
    assert _key(stages["grade"], job) != _key(stages["grade"], tall)
    t2v = dataclasses.replace(job, anchor=None, anchor_digest="", index=0)
    for name in ("draft", "enhance"):  # the enhancer words a T2V prompt otherwise than an I2V one
        assert _key(stages[name], job) != _key(stages[name], t2v)


def test_the_enhancers_vision_projector_is_part_of_the_enhance_key(tmp_path: Path) -> None:
    """The mmproj loads with the LLM (another chat handler) even for a T2V prompt: replacing,
    adding or removing it must re-run the enhancer, and must not touch the draft's key."""
    preset, files = _preset_of_files(tmp_path, "tiny", "real-ltx", ("diffusers", "enhancer", "enhancer_mmproj"),
                                     ".gguf")
    stages = _stages()
    job = dataclasses.replace(_job(tmp_path, preset), anchor=None, anchor_digest="", index=0)  # T2V

    def key() -> str:
        return _key(stages["enhance"], job)

    before = key()
    files["enhancer_mmproj"].write_bytes(b"version 2")
    replaced = key()
    assert replaced != before
    files["enhancer_mmproj"].unlink()
    assert key() not in (before, replaced)  # a missing projector is not the projector
    without = dataclasses.replace(preset, files=tuple(f for f in preset.files if f.role != "enhancer_mmproj"))
    assert _key(stages["enhance"], dataclasses.replace(job, preset=without)) != replaced


# ------------------------------------------------------------------ the key's own field names

#: stage -> (its version, every field name its key can hold, nested as dotted paths). A user's
#: cache on disk is keyed by these names: renaming one silently re-renders every cached shot
#: (hours of GPU time) after an upgrade. A deliberate change updates this line (and the version
#: when the stage's output changes meaning).
KEY_FIELDS: dict[str, tuple[int, str]] = {
    "enhance": (3, "anchor image_to_video max_tokens mmproj mode model model.file model.missing model.mtime_ns "
                   "model.size model.tiny prompt prompts_from seed system_prompt"),
    "draft": (2, "anchor audio audio_track fps frames guidance_scale keyframes keyframes.[].frame keyframes.[].image "
                 "keyframes.[].strength lora_strength loras model prompt schedule seed size steps"),
    # keyframes: only a shot that has them carries the field (and only its refine output changed)
    "refine": (1, "audio_track fps guidance_scale keyframes keyframes.[].frame keyframes.[].image "
                  "keyframes.[].strength lora_strength loras model seed sigmas size"),
    "upscale": (1, "model model.file model.missing model.mtime_ns model.size model.tiny output_size resize"),
    "grade": (1, "method reference strength"),
    "encode": (5, "audio audio_rate crf fps idr_after_anchor kept preset size"),
    "family_draft": (1, "anchor fps frames guidance model negative preset prompt seed size steps"),
    "resize_refine": (1, "method size"),
    "retake-draft": (1, "retake retake_seed"),
    "retake": (1, "span"),
}


def _field_names(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {n for k, v in value.items() for n in {prefix + k, *_field_names(v, prefix + k + ".")}}
    if isinstance(value, list | tuple):
        return {n for v in value for n in _field_names(v, prefix + "[].")}
    return set()


def _weights_found_or_not(job: SegmentJob, tmp_path: Path) -> list[SegmentJob]:
    """The job with real (not tiny) weights files, once present and once absent: both key shapes."""
    present = tmp_path / "weights.safetensors"
    present.write_bytes(b"0")
    return [dataclasses.replace(job, preset=dataclasses.replace(job.preset, builder=None, files=tuple(
        dataclasses.replace(f, path=str(path), repo="", url="", env="") for f in job.preset.files)))
        for path in (present, tmp_path / "absent.safetensors")]


@pytest.mark.parametrize("stage_name", list(KEY_FIELDS))
def test_a_stage_keys_its_cache_by_the_field_names_it_was_released_with(stage_name: str, tmp_path: Path) -> None:
    stage = _stages()[stage_name]
    job = _job(tmp_path, _preset_for(stage_name))
    jobs = [job, *(j for _, j in perturbations(job)), *_weights_found_or_not(job, tmp_path)]
    names = set().union(*(_field_names(stage.params(j)) for j in jobs))
    version, expected = KEY_FIELDS[stage_name]
    assert (stage.version, " ".join(sorted(names))) == (version, expected), (
        f"{stage_name}'s key fields changed: every cached entry would be rendered again; "
        "if that is meant, update KEY_FIELDS (and the stage's version if its output changes)")

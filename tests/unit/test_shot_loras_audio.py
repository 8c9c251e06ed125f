"""Shot LoRAs and given sound: the storyboard keys, their cache keys, and the refusals.

What a user checks without a render: a bad entry is one line at its key's line, a save keeps
the file's spelling, an edited LoRA file (same name) re-renders while a moved one does not,
other model families refuse the keys, and a LoRA whose tensors fit no module of the model is
refused in one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.models.registry import get_preset
from pipeline.project import storyboard as sbmod
from pipeline.project.audio_track import AudioTrack
from pipeline.project.loras import LoraRef
from pipeline.project.references import check_references
from pipeline.render.errors import RenderError
from pipeline.render.job import RenderJob
from pipeline.stages.base import SegmentJob
from pipeline.stages.draft import DraftStage
from pipeline.stages.refine import RefineStage
from tests.shot_twins import write_lora, write_track

BOARD = """\
[project]
preset = "tiny"
fps = 8

[[segment]]
id = "a"
prompt = "a red fox in the snow"
loras = [{ path = "loras/style.safetensors", strength = 0.8 }, { repo = "Lightricks/Cam", path = "dolly.safetensors" }]  # mine
audio = { path = "song.wav", start = 1.5 }

[[segment]]
id = "b"
prompt = "the fox sleeps"
audio = "song.wav"
"""


def test_the_keys_parse_and_a_save_keeps_the_files_spelling(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(BOARD)
    sb = sbmod.load(path)
    a, b = sb.segments
    assert a.loras == (LoraRef("loras/style.safetensors", 0.8), LoraRef("dolly.safetensors", 1.0, "Lightricks/Cam"))
    assert a.audio == AudioTrack("song.wav", 1.5) and b.audio == AudioTrack("song.wav") and b.loras == ()
    assert sbmod.save(sb) == BOARD and path.read_text() == BOARD  # strength left at 1 stays unwritten
    sbmod.save(sbmod.with_segment(sb, "a", loras=(a.loras[0],), audio=None))
    again = sbmod.load(path)
    assert again.segments[0].loras == (a.loras[0],) and again.segments[0].audio is None
    assert "# mine" in path.read_text() and "[[segment.loras]]" not in path.read_text()


@pytest.mark.parametrize(("line", "message"), [
    ('loras = [{ path = "x.bin" }]', "segment[1].loras: entry 1: x.bin: a LoRA is a .safetensors file"),
    ('loras = ["x.safetensors"]', "segment[1].loras: entry 1: expected { path"),
    ('loras = [{ path = "x.safetensors", strength = 12 }]', "strength must be between -10 and 10"),
    ('loras = [{ path = "x.safetensors", weight = 1 }]', "unknown key 'weight'"),
    ('loras = [{ path = "x.safetensors" }, { path = "x.safetensors" }]', "x.safetensors is listed twice"),
    ('loras = [{ repo = "no-slash", path = "x.safetensors" }]', 'repo must be "owner/name"'),
    ('audio = "notes.txt"', "segment[1].audio: notes.txt: expected a sound file"),
    ('audio = { path = "a.wav", start = -2 }', "start must be a number of seconds"),
    ("audio = 3", "segment[1].audio: expected a sound file"),
])
def test_a_bad_entry_is_one_line_at_its_keys_line(tmp_path: Path, line: str, message: str) -> None:
    text = BOARD.replace('audio = "song.wav"', line)
    with pytest.raises(sbmod.StoryboardError) as exc:
        sbmod.parse(text, tmp_path / "board.toml")
    msg = str(exc.value)
    lineno = text.splitlines().index(line) + 1
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'board.toml'}:{lineno}:1: ") and message in msg


def _job(tmp: Path, **seg_changes: object) -> SegmentJob:
    sb = sbmod.parse('[project]\npreset = "tiny"\n\n[[segment]]\nid = "a"\nprompt = "p"\n', tmp / "board.toml")
    sb = sbmod.with_segment(sb, "a", **seg_changes)
    return RenderJob.resolve(sb).segment_job(0)


def _keys(job: SegmentJob) -> tuple[str, str]:
    from pipeline.render.cache import stage_key

    return tuple(stage_key(s.name, s.version, s.params(job), {}) for s in (DraftStage(), RefineStage()))


def test_the_lora_files_bytes_and_strength_reach_draft_and_refine_keys_its_name_does_not(tmp_path: Path) -> None:
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"v1" * 100)
    plain = _keys(_job(tmp_path))
    one = _keys(_job(tmp_path, loras=(LoraRef("style.safetensors", 1.0),)))
    half = _keys(_job(tmp_path, loras=(LoraRef("style.safetensors", 0.5),)))
    assert len({plain[0], one[0], half[0]}) == 3 and len({plain[1], one[1], half[1]}) == 3
    stat = lora.stat()
    lora.write_bytes(b"v2" * 100)  # edited in place: same size, same mtime
    os.utime(lora, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = _keys(_job(tmp_path, loras=(LoraRef("style.safetensors", 1.0),)))
    assert edited[0] != one[0] and edited[1] != one[1]
    lora.rename(tmp_path / "moved.safetensors")
    moved = _keys(_job(tmp_path, loras=(LoraRef("moved.safetensors", 1.0),)))
    assert moved == edited
    assert _keys(_job(tmp_path, loras=())) == plain  # removing the key: the original entries again


def test_the_tracks_bytes_and_start_reach_the_draft_key(tmp_path: Path) -> None:
    write_track(tmp_path / "song.wav", 1.0)
    plain = _keys(_job(tmp_path))
    track = _keys(_job(tmp_path, audio=AudioTrack("song.wav")))
    later = _keys(_job(tmp_path, audio=AudioTrack("song.wav", 0.25)))
    assert len({plain[0], track[0], later[0]}) == 3
    write_track(tmp_path / "song.wav", 1.0, seed=9)
    assert _keys(_job(tmp_path, audio=AudioTrack("song.wav")))[0] != track[0]


@pytest.mark.parametrize("preset", ["tiny-wan-ti2v", "tiny-svd", "tiny-ltxv", "tiny-cogvideox"])
@pytest.mark.parametrize("key", ["loras", "audio"])
def test_other_families_refuse_the_keys_in_one_line(tmp_path: Path, preset: str, key: str) -> None:
    value = 'loras = [{ path = "s.safetensors" }]' if key == "loras" else 'audio = "song.wav"'
    text = f'[project]\npreset = "tiny"\n\n[[segment]]\nid = "a"\nprompt = "p"\n\n' \
           f'[[segment]]\nid = "shot-2"\nprompt = "q"\npreset = "{preset}"\n{value}\n'
    with pytest.raises(RenderError) as exc:
        RenderJob.resolve(sbmod.parse(text, tmp_path / "b.toml"))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("segment shot-2: ") and key in msg and preset in msg
    assert exc.value.kind == "unsupported_key"


def test_missing_or_unreadable_files_are_named_at_their_key(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(BOARD.replace(', { repo = "Lightricks/Cam", path = "dolly.safetensors" }', ""))
    sb = sbmod.load(path)
    with pytest.raises(sbmod.StoryboardError, match=r"board.toml:8:1: segment\[0\].loras: .*style.safetensors: "
                                                    r"file not found"):
        check_references(sb)
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "style.safetensors").write_bytes(b"not a LoRA at all, just some bytes")
    with pytest.raises(sbmod.StoryboardError, match=r"board.toml:8:1: segment\[0\].loras: .*style.safetensors: "
                                                    r"not a safetensors file \(.*header"):
        check_references(sb)
    write_lora(tmp_path / "loras" / "style.safetensors")
    with pytest.raises(sbmod.StoryboardError, match=r":9:1: segment\[0\].audio: .*song.wav: file not found"):
        check_references(sb)
    (tmp_path / "song.wav").write_bytes(b"RIFF not really")
    with pytest.raises(sbmod.StoryboardError, match="not a sound file PyAV can read") as info:
        check_references(sb)
    assert "Errno" not in str(info.value) and "\n" not in str(info.value)
    write_track(tmp_path / "song.wav", 1.0)  # 1 s long: start = 1.5 is past its end
    with pytest.raises(sbmod.StoryboardError, match=r"start = 1.5 s is past its end \(1.00 s\)"):
        check_references(sb)
    write_track(tmp_path / "song.wav", 2.0)
    check_references(sb)


def test_a_lora_that_fits_no_module_is_one_line_naming_the_file(tmp_path: Path) -> None:
    from pipeline.models import user_loras
    from pipeline.models.published import WeightsMismatch

    tiny = get_preset("tiny")
    user_loras.check(tiny, write_lora(tmp_path / "good.safetensors"))
    bad = write_lora(tmp_path / "bad.safetensors", rename={"attn1.to_v": "attn1.to_vv"})
    with pytest.raises(WeightsMismatch) as exc:
        user_loras.check(tiny, bad)
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value) and "attn1.to_vv" in str(exc.value)
    wide = write_lora(tmp_path / "wide.safetensors", targets=("attn1.to_q",))
    from safetensors.torch import load_file, save_file

    sd = load_file(str(wide))
    sd = {k: (v[:, :-1].contiguous() if k.endswith("lora_A.weight") else v) for k, v in sd.items()}  # in - 1
    save_file(sd, str(wide))
    with pytest.raises(WeightsMismatch, match="wide.safetensors: weights do not map"):
        user_loras.check(tiny, wide)


def test_the_mel_filterbank_is_slaneys() -> None:
    """The audio VAE's mel input: ascending triangles of unit area in Hz (Slaney norm), none empty."""
    from pipeline.models.ltx2_audio import mel_filterbank

    fb = mel_filterbank(16_000, 1024, 16)
    assert fb.shape == (16, 513) and (fb >= 0).all()
    centres = fb.argmax(axis=1)
    assert (np.diff(centres) > 0).all()  # one triangle per band, ascending
    hz = np.linspace(0, 8000, 513)
    area = (fb * (hz[1] - hz[0])).sum(axis=1)
    assert np.allclose(area, 1.0, atol=0.1)  # Slaney norm: each filter has unit area (in Hz)



def test_a_file_that_is_no_safetensors_is_one_line_naming_it_before_any_stage(tmp_path: Path) -> None:
    from pipeline.render.lora_audio import check_loras

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    job = _job(tmp_path, loras=(LoraRef("junk.safetensors", 1.0),))
    with pytest.raises(RenderError) as exc:
        check_loras([job])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"segment a: LoRA does not fit tiny: {junk}: not a safetensors LoRA")


@pytest.mark.parametrize("key", ["loras", "audio"])
def test_a_fifo_named_as_a_lora_or_track_is_refused_unopened(tmp_path: Path, key: str) -> None:
    """A FIFO would hang a reader (the digest, PyAV): refused from its stat, in one line."""
    name = "pipe.safetensors" if key == "loras" else "pipe.wav"
    os.mkfifo(tmp_path / name)
    value = f'loras = [{{ path = "{name}" }}]' if key == "loras" else f'audio = "{name}"'
    path = tmp_path / "board.toml"
    path.write_text(f'[project]\npreset = "tiny"\n\n[[segment]]\nid = "a"\nprompt = "p"\n{value}\n')
    sb = sbmod.load(path)
    with pytest.raises(sbmod.StoryboardError) as exc:
        check_references(sb)
    assert f"board.toml:7:1: segment[0].{key}: " in str(exc.value) and name in str(exc.value)
    assert "\n" not in str(exc.value)
    if key == "loras":
        from pipeline.models import user_loras

        (found,) = user_loras.resolve(sb, sb.segments[0])  # a cache key never reads it either
        assert found.path is None and found.digest.startswith("missing:")


def test_the_example_storyboards_lora_and_sound_are_usable() -> None:
    """storyboards/creative.toml: its LoRA fits the tiny preset it names, its sound is readable."""
    from pipeline.models import user_loras

    sb = sbmod.load(Path(__file__).resolve().parents[2] / "storyboards" / "creative.toml")
    check_references(sb)
    night, bell = sb.segment("night"), sb.segment("bell")
    assert night.loras and bell.audio is not None and bell.audio.start == 0.25
    (lora,) = user_loras.resolve(sb, night)
    assert lora.path is not None
    user_loras.check(get_preset(sb.project.preset), lora.path)
    RenderJob.resolve(sb)  # an LTX-2 preset: nothing refused


@pytest.mark.parametrize(("channels", "rate"), [(2, 48_000), (1, 22_050)])
def test_a_track_is_read_sample_exact_from_its_start_mono_in_both_channels(
        tmp_path: Path, channels: int, rate: int) -> None:
    """The samples an audio-driven shot keeps: from ``start`` exactly, at the file's own rate, a mono
    file copied to both channels at full level (a stereo upmix would lower it 3 dB), padded past the end."""
    from pipeline.models.ltx2_audio import read_track

    given = write_track(tmp_path / "t.wav", 1.0, rate=rate, channels=channels)
    wave, got_rate = read_track(tmp_path / "t.wav", 0.5, lambda r: r)  # 1 s from 0.5 s: half of it is past the end
    first, half = rate // 2, rate - rate // 2
    assert got_rate == rate and wave.shape == (2, rate)
    for ch in range(2):
        np.testing.assert_array_equal(wave[ch, :half], given[min(ch, channels - 1), first:])
    assert not wave[:, half:].any()

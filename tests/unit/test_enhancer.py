"""Prompt enhancer and enhance stage, through real llama.cpp with the tiny GGUF."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.planner import StagePlan
from pipeline.models import enhancer as enhancer_module
from pipeline.models.enhancer import (
    MAX_CHARS,
    _messages,
    _prose_grammar,
    build_tiny_llm,
    clean_enhanced,
    enhance,
    enhance_prompt,
    load_enhancer,
    unusable_reason,
)
from pipeline.models.registry import ModelFile, Preset
from pipeline.models.verify import check_enhancer
from pipeline.project.storyboard import Project, Segment, Storyboard
from pipeline.stages import enhance as enhance_stage
from pipeline.stages.base import SegmentJob, StageContext
from pipeline.stages.enhance import EnhanceStage

PROMPT = "a tabby cat walks along a wet rooftop at night, neon signs below"


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-enhancer.gguf")


@pytest.fixture(scope="module")
def llm(tiny_llm: Path):  # noqa: ANN201 - llama_cpp.Llama
    return load_enhancer(tiny_llm, n_gpu_layers=0, n_ctx=4096, seed=0)


def printable(text: str) -> bool:
    return text == " ".join(text.split()) and all(ch.isprintable() for ch in text)


def make_job(tmp: Path, model: Path | None, prompt: str = PROMPT, seed: int = 7,
             builder: object = None, extra: dict | None = None, index: int = 0) -> SegmentJob:
    files = (ModelFile(role="enhancer", description="llm", path=str(model or tmp / "missing.gguf")),)
    preset = Preset(name="test", family="ltx2", description="", files=files, builder=builder,  # type: ignore[arg-type]
                    extra={"enhance_max_tokens": 48} if extra is None else extra)
    seg = Segment(id="s1", prompt=prompt)
    board = Storyboard(path=tmp / "board.toml", project=Project(), segments=(seg,))
    return SegmentJob(storyboard=board, segment=seg, index=index, preset=preset, frames=9, seed=seed, fps=24,
                      draft_size=(32, 32), refine_size=(64, 64), output_size=(128, 128), steps=1,
                      refine_sigmas=(0.0,), lora_strength=0.0, audio=False)


def make_ctx(device: str = "cpu", models: LoadedModels | None = None) -> tuple[StageContext, list]:
    events: list = []
    ctx = StageContext(emit=events.append, cancel=threading.Event(), models=models or LoadedModels(),
                       plan=StagePlan(name=device, device=device), segment_id="s1")
    return ctx, events


def test_tiny_gguf_is_small_and_deterministic(tmp_path: Path, tiny_llm: Path) -> None:
    again = build_tiny_llm(tmp_path / "again.gguf")
    assert again.read_bytes() == tiny_llm.read_bytes()
    assert tiny_llm.stat().st_size < 2_000_000
    assert not list(tmp_path.glob(".*partial"))


def test_enhance_prompt_is_clean_and_deterministic(llm) -> None:  # noqa: ANN001
    first = enhance(llm, PROMPT, seed=3, max_tokens=48)
    assert first.raw  # the model really generated something
    assert first.text and printable(first.text) and len(first.text) <= MAX_CHARS
    if first.fallback:
        assert first.text == PROMPT and first.reason
    assert enhance_prompt(llm, PROMPT, seed=3, max_tokens=48) == first.text
    assert enhance(llm, PROMPT, seed=3, max_tokens=48).raw == first.raw
    # Another seed samples differently (the model is random, not constant).
    assert enhance(llm, PROMPT, seed=4, max_tokens=48).raw != first.raw


def test_cleaning_makes_model_output_storyboard_safe() -> None:
    assert clean_enhanced("Sure, here is the prompt:\n\n\"A wide\tshot\x00 of\x1b a city.\"") == "A wide shot of a city."
    assert clean_enhanced("<start_of_turn>model\nA **slow** pan.<end_of_turn>") == "A slow pan."
    long = " ".join(["word"] * 1000)
    cut = clean_enhanced(long)
    assert len(cut) <= MAX_CHARS and cut.endswith("word")


def test_byte_soup_is_not_a_prompt_but_prose_is() -> None:
    rng = np.random.default_rng(1)
    soup = clean_enhanced(rng.integers(0, 256, 300, dtype=np.uint8).tobytes().decode("utf-8", "ignore"))
    assert unusable_reason(soup)
    assert unusable_reason("") == "empty after cleaning"
    for prose in ("A slow dolly-in on a tabby cat at f/1.8, 35mm lens; warm tungsten light, rain patters.",
                  "Plano general de una ciudad de noche, la cámara avanza despacio entre la lluvia.",
                  "日本の夜の街、カメラがゆっくりパンする 雨の音 遠くの音楽"):
        assert unusable_reason(clean_enhanced(prose)) == ""


def test_stage_writes_prompt_and_keeps_the_llm_on_cpu(tmp_path: Path, tiny_llm: Path) -> None:
    job = make_job(tmp_path, tiny_llm)
    ctx, events = make_ctx("cpu")
    out = tmp_path / "out"
    out.mkdir()
    meta = EnhanceStage().run(ctx, job, {}, out)
    text = (out / "prompt.txt").read_text(encoding="utf-8")
    assert text == meta["prompt"] and printable(text)
    assert isinstance(meta["fallback"], bool)
    assert (text == PROMPT) == meta["fallback"]
    assert "enhancer" in ctx.models.names()
    if meta["fallback"]:  # the user is told why their prompt was kept
        assert any(getattr(e, "level", "") == "warning" for e in events)

    # Same job again reuses the held model and gives the same text.
    out2 = tmp_path / "out2"
    out2.mkdir()
    assert EnhanceStage().run(ctx, job, {}, out2) == meta


def test_stage_evicts_the_llm_after_use_on_cuda_plans(tmp_path: Path, tiny_llm: Path) -> None:
    # llama.cpp built without CUDA ignores n_gpu_layers, so the eviction policy runs here too.
    ctx, _ = make_ctx("cuda")
    out = tmp_path / "out"
    out.mkdir()
    EnhanceStage().run(ctx, make_job(tmp_path, tiny_llm), {}, out)
    assert (out / "prompt.txt").is_file()
    assert "enhancer" not in ctx.models.names()


def test_params_follow_prompt_seed_and_model(tmp_path: Path, tiny_llm: Path) -> None:
    stage = EnhanceStage()
    base = stage.params(make_job(tmp_path, tiny_llm))
    assert stage.params(make_job(tmp_path, tiny_llm)) == base
    assert stage.params(make_job(tmp_path, tiny_llm, prompt="a dog")) != base
    assert stage.params(make_job(tmp_path, tiny_llm, seed=8)) != base
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_llm.read_bytes() + b"\0")
    assert stage.params(make_job(tmp_path, other))["model"] != base["model"]


def test_tiny_preset_builds_its_llm_on_first_use(tmp_path: Path) -> None:
    target = tmp_path / "built" / "tiny.gguf"
    job = make_job(tmp_path, target, builder=lambda: build_tiny_llm(target))
    params = EnhanceStage().params(job)  # before the file exists: no stat needed
    ctx, _ = make_ctx("cpu")
    out = tmp_path / "out"
    out.mkdir()
    EnhanceStage().run(ctx, job, {}, out)
    assert target.is_file() and (out / "prompt.txt").is_file()
    assert EnhanceStage().params(job) == params  # a rebuild does not invalidate the cache


def test_a_template_without_system_role_still_enhances(tmp_path: Path) -> None:
    # Gemma 2's template raises on a system turn; the instructions then go in the user turn.
    template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
                "{{ raise_exception('System role not supported') }}{% endif %}"
                "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
                "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    llm = load_enhancer(build_tiny_llm(tmp_path / "g2.gguf", chat_template=template),
                        n_gpu_layers=0, n_ctx=4096, seed=0)
    result = enhance(llm, PROMPT, seed=3, max_tokens=16)
    assert result.raw and printable(result.text)


# --------------------------------------------------------------------------- the model's language


def test_default_instructions_are_lightricks_t2v_and_i2v_prompts() -> None:
    from diffusers.pipelines.ltx2.utils import I2V_DEFAULT_SYSTEM_PROMPT, T2V_DEFAULT_SYSTEM_PROMPT

    t2v = _messages(PROMPT, "ltx", False, None)
    i2v = _messages(PROMPT, "ltx", True, None)
    assert t2v == [{"role": "system", "content": T2V_DEFAULT_SYSTEM_PROMPT.strip()},
                   {"role": "user", "content": f"user prompt: {PROMPT}"}]          # ltx-core's enhance_t2v
    assert i2v == [{"role": "system", "content": I2V_DEFAULT_SYSTEM_PROMPT.strip()},
                   {"role": "user", "content": f"User Raw Input Prompt: {PROMPT}."}]  # ltx-core's enhance_i2v
    for turns in (t2v, i2v):  # what a user of LTX-2 relies on: no camera moves made up
        assert "DO NOT invent camera motion" in turns[0]["content"]
    # Sulphur 2's own enhancer: no system prompt, the user's words as they are.
    assert _messages(PROMPT, "none", True, None) == [{"role": "user", "content": PROMPT}]
    assert _messages(PROMPT, "Be brief.", False, None)[0] == {"role": "system", "content": "Be brief."}


def test_grammar_lets_dialogue_and_any_script_through(llm) -> None:  # noqa: ANN001
    # Push llama.cpp towards a double quote, then towards "é" (bytes C3 A9): under the grammar
    # the text gets them only if the grammar allows them (the old one allowed neither).
    for wanted in ('"', "é"):
        bias = {t: 12.0 for t in llm.tokenize(wanted.encode(), add_bos=False, special=False)}
        llm.reset()
        out = llm.create_completion("The man says", max_tokens=40, seed=1, temperature=0.0,
                                    grammar=_prose_grammar(), logit_bias=bias)["choices"][0]["text"]
        assert wanted in out, out
        assert "\n" not in out and "#" not in out and "*" not in out


def test_cleaning_keeps_dialogue_quotes_and_dashes() -> None:
    line = "Style: cinematic. The man says in a low voice, \"We leave at dawn.\" Rain falls — softly, café lights."
    assert clean_enhanced(line) == line
    assert unusable_reason(clean_enhanced(line)) == ""


def test_chained_shot_gets_the_i2v_prompt(tmp_path: Path, tiny_llm: Path) -> None:
    stage = EnhanceStage()
    first, chained = make_job(tmp_path, tiny_llm, index=0), make_job(tmp_path, tiny_llm, index=1)
    assert not stage.params(first)["image_to_video"] and stage.params(chained)["image_to_video"]
    assert stage.params(first) != stage.params(chained)
    ctx, _ = make_ctx("cpu")
    out = tmp_path / "out"
    out.mkdir()
    assert stage.run(ctx, chained, {}, out)["image_to_video"] is True


def test_answer_length_follows_the_text_encoder(tmp_path: Path, tiny_llm: Path) -> None:
    stage = EnhanceStage()
    assert stage.params(make_job(tmp_path, tiny_llm, extra={}))["max_tokens"] == 512  # ltx-core's Gemma 3 value
    assert stage.params(make_job(tmp_path, tiny_llm, extra={"max_sequence_length": 64}))["max_tokens"] == 64
    assert stage.params(make_job(tmp_path, tiny_llm, extra={"max_sequence_length": 1024,
                                                             "enhance_max_tokens": 48}))["max_tokens"] == 48


def test_a_prompt_too_long_for_the_context_is_used_as_written(tmp_path: Path, tiny_llm: Path) -> None:
    long_prompt = " ".join(["a tabby cat walks along a wet rooftop"] * 150)
    job = make_job(tmp_path, tiny_llm, prompt=long_prompt, extra={"enhance_max_tokens": 48, "enhance_n_ctx": 2048})
    ctx, events = make_ctx("cpu")
    out = tmp_path / "out"
    out.mkdir()
    meta = EnhanceStage().run(ctx, job, {}, out)  # no exception: the job goes on
    assert meta["fallback"] is True and (out / "prompt.txt").read_text(encoding="utf-8") == long_prompt
    warnings = [e.message for e in events if getattr(e, "level", "") == "warning"]
    assert len(warnings) == 1 and "too long to enhance" in warnings[0] and "2048" in warnings[0]


def test_cpu_only_llama_on_a_gpu_machine_says_so_once(tmp_path: Path, tiny_llm: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp offloads to the GPU")
    monkeypatch.setattr(enhance_stage, "_warned_cpu_build", False)
    ctx, events = make_ctx("cuda")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        EnhanceStage().run(ctx, make_job(tmp_path, tiny_llm), {}, tmp_path / name)
    said = [e.message for e in events if "CPU-only" in getattr(e, "message", "")]
    assert len(said) == 1 and 'CMAKE_ARGS="-DGGML_CUDA=on"' in said[0]
    ctx, events = make_ctx("cpu")  # a machine without a GPU: nothing to say
    monkeypatch.setattr(enhance_stage, "_warned_cpu_build", False)
    EnhanceStage().run(ctx, make_job(tmp_path, tiny_llm), {}, tmp_path / "a")
    assert not [e for e in events if "CPU-only" in getattr(e, "message", "")]


def test_vision_hook_is_off_without_a_projector(llm) -> None:  # noqa: ANN001
    # No mmproj: the I2V prompt alone (the image is dropped before it reaches llama.cpp).
    frame = np.zeros((64, 96, 3), np.uint8)
    with_image = enhance(llm, PROMPT, seed=3, max_tokens=16, image_to_video=True, image=frame)
    without = enhance(llm, PROMPT, seed=3, max_tokens=16, image_to_video=True)
    assert with_image == without
    assert enhancer_module._image_data_uri(frame).startswith("data:image/png;base64,")


def test_llama_cpp_warnings_stay_off_the_terminal(tiny_llm: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Every render printed "llama_kv_cache_iswa: using full-size SWA cache (ref: …)" among its
    progress lines: llama-cpp-python 0.3.36 filters with ggml's old level numbers, where the
    bundled ggml's WARN is the old ERROR. Only llama.cpp's errors may reach stderr."""
    capfd.readouterr()
    load_enhancer(tiny_llm, n_gpu_layers=0, n_ctx=4096, seed=0)
    check_enhancer(tiny_llm)  # `sulphur models verify` loads it too
    err = capfd.readouterr().err
    assert "llama_" not in err and "SWA" not in err, err

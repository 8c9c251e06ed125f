"""The tiny enhancer is a Gemma 3 GGUF as llama.cpp knows one, and llama.cpp runs it as such.

The expected tensor names come from llama.cpp's own table (``gguf.constants.MODEL_TENSORS``
for ``gemma3``, shipped with the gguf package), not from the builder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models.enhancer import build_tiny_llm, load_enhancer


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-gemma3.gguf")


def _field(reader, key: str):  # noqa: ANN001, ANN202 - gguf's reader types
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]


def test_twin_has_gemma3_metadata_and_llama_cpps_gemma3_tensor_names(twin: Path) -> None:
    import gguf
    from gguf.constants import MODEL_ARCH, MODEL_TENSORS, TENSOR_NAMES

    reader = gguf.GGUFReader(str(twin))
    assert _field(reader, "general.architecture") == "gemma3"
    n_layer = _field(reader, "gemma3.block_count")
    for key in ("context_length", "embedding_length", "feed_forward_length", "attention.head_count",
                "attention.head_count_kv", "attention.key_length", "attention.value_length",
                "attention.layer_norm_rms_epsilon", "rope.freq_base", "attention.sliding_window"):
        assert f"gemma3.{key}" in reader.fields, key
    # Gemma's head size is its own, not n_embd / n_head (3840 vs 16 x 256 at 12B).
    assert _field(reader, "gemma3.attention.key_length") * _field(reader, "gemma3.attention.head_count") \
        != _field(reader, "gemma3.embedding_length")

    expected = set()
    for t in MODEL_TENSORS[MODEL_ARCH.GEMMA3]:
        name = TENSOR_NAMES[t]
        if name == "output":
            continue  # Gemma ties the output to the embedding; its converter writes none
        expected |= {f"{name.format(bid=i)}.weight" for i in range(n_layer)} if "{bid}" in name else {f"{name}.weight"}
    assert {t.name for t in reader.tensors} == expected

    tokens = [bytes(reader.fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in reader.fields["tokenizer.ggml.tokens"].data]
    assert tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids
    assert (_field(reader, "tokenizer.ggml.bos_token_id"), _field(reader, "tokenizer.ggml.eos_token_id")) == (2, 1)


def test_llama_cpp_runs_it_as_gemma3_with_gemma_turns(twin: Path) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = load_enhancer(twin, n_gpu_layers=0, n_ctx=512, seed=0)
    assert llm.metadata["general.architecture"] == "gemma3"
    assert llm.tokenize(b"<start_of_turn>", add_bos=False, special=True) == [4]
    assert llm.tokenize(b"<end_of_turn>", add_bos=False, special=True) == [5]

    fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="<eos>", bos_token="<bos>")
    prompt = fmt(messages=[{"role": "system", "content": "Be vivid."},
                           {"role": "user", "content": "a fox in the snow"}]).prompt
    # Gemma 3 has no system role: the instructions open the first user turn.
    assert prompt == "<bos><start_of_turn>user\nBe vivid.\n\na fox in the snow<end_of_turn>\n<start_of_turn>model\n"
    # llama.cpp adds <bos> itself (add_bos_token), so the text goes in without it.
    out = llm.create_completion(prompt.removeprefix("<bos>"), max_tokens=4, seed=0, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1

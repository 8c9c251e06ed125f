"""Prompt enhancer: a small chat LLM run through llama.cpp that turns a shot description
into the dense cinematic language LTX-2 was trained on.

Real presets point at a Gemma-3 GGUF; the tiny preset builds a 2-layer random llama
GGUF with :func:`build_tiny_llm` so tests run the very same llama.cpp code path. A
random model emits arbitrary bytes, and even a real one sometimes wraps its answer in
quotes or chat markup, so everything it returns goes through :func:`clean_enhanced`
before it can reach a storyboard.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import llama_cpp

log = logging.getLogger(__name__)

#: Bump when :func:`build_tiny_llm` writes a different file (part of the enhance cache key).
TINY_LLM_VERSION = 1
#: Bump when the system prompt or the cleaning rules change (part of the enhance cache key).
SYSTEM_PROMPT_VERSION = 1

SYSTEM_PROMPT = (
    "You rewrite a user's shot description into one prompt for a video model that also "
    "generates the soundtrack. Keep every subject, action and setting the user gave; invent "
    "nothing that contradicts them. Write one flowing paragraph of 60 to 120 words in present "
    "tense: the shot type and camera (lens, angle, movement), the lighting and colour, how the "
    "subjects move through the shot, and what is heard (ambience, effects, voices, music). "
    "No lists, no headings, no quotes, no preamble: answer with the prompt only."
)

#: Longest enhanced prompt kept; LTX-2's text encoder reads ~256 tokens, a bit over 1 KB.
MAX_CHARS = 1200
# Chat markup a model may echo (Gemma turns with their role word, <|tags|>, [INST]).
_MARKUP = re.compile(r"<start_of_turn>(?:model|user|system)?|<end_of_turn>|<\|?/?[A-Za-z_]+[^<>]{0,20}\|?>|\[/?INST\]")
_PREAMBLE = re.compile(r"^(?:sure|here(?:'s| is)|okay|ok)\b[^:\n]{0,60}:\s*", re.IGNORECASE)
# A word as prose has it: letters (any script), digits, and inner ' - / . (35mm, f/1.8, dolly-in).
_WORD = re.compile(r"(?=.*[^\W\d_])[\w'’./-]+")
_EDGE_PUNCT = "\"'“”‘’()[],.;:!?—–-…"


@dataclass(frozen=True)
class EnhanceResult:
    text: str       # what the draft should use
    raw: str        # what the model said, before cleaning
    fallback: bool  # True when the model's answer was unusable and ``text`` is the user's prompt
    reason: str = ""


# --------------------------------------------------------------------------- tiny model

TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def build_tiny_llm(path: Path, *, chat_template: str = TINY_CHAT_TEMPLATE) -> Path:
    """Write a deterministic 2-layer, 64-wide llama GGUF (F32, SPM vocab with byte tokens).

    Written to a temp file beside ``path`` and renamed, so a killed build never leaves a
    half file that llama.cpp would later choke on.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_embd, n_layer, n_head, n_ff, n_ctx = 64, 2, 4, 128, 2048

    # SPM vocabulary: specials, the 256 byte-fallback tokens, then a few whole words so
    # the tokenizer has merges to choose between.
    words = ["▁the", "▁a", "▁camera", "▁light", "▁slow", "▁shot", "▁sound", "▁wide", "▁close",
             "▁warm", "▁cold", "▁rain", "▁city", "▁night", "▁pans", "▁music", "▁and", "▁of"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    types = ([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
             + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(words))
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(words))]
    n_vocab = len(tokens)

    rng = np.random.default_rng(20261127)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tmp = Path(tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)[1])
    try:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name("sulphur-tiny-enhancer")
        writer.add_context_length(n_ctx)
        writer.add_embedding_length(n_embd)
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(n_ff)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head)
        writer.add_rope_dimension_count(n_embd // n_head)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_chat_template(chat_template)
        writer.add_tensor("token_embd.weight", w(n_vocab, n_embd))
        for i in range(n_layer):
            writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
            for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
                writer.add_tensor(f"blk.{i}.{name}.weight", w(n_embd, n_embd))
            writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
            writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(n_ff, n_embd))
            writer.add_tensor(f"blk.{i}.ffn_up.weight", w(n_ff, n_embd))
            writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, n_ff))
        writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor("output.weight", w(n_vocab, n_embd))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- running

def load_enhancer(path: Path, *, n_gpu_layers: int, n_ctx: int, seed: int) -> llama_cpp.Llama:
    """Load a chat GGUF with llama.cpp; ``n_gpu_layers`` is 0 on CPU plans, -1 for all on CUDA."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                           seed=seed, verbose=False)


# One paragraph of plain prose: no lists, markdown, quotes or line breaks, which a video
# model's text encoder would read literally. llama.cpp enforces it while sampling, so a
# chatty model cannot wrap its answer, and a random-weight one still writes word-shaped text.
PROSE_GBNF = r"""
root ::= word (" " word){7,}
word ::= [A-Za-z0-9] [A-Za-z0-9'-]* [,.;:!?]?
"""


@functools.cache
def _prose_grammar() -> llama_cpp.LlamaGrammar:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(PROSE_GBNF, verbose=False)


def enhance(llm: llama_cpp.Llama, prompt: str, *, seed: int, max_tokens: int,
            temperature: float = 0.3) -> EnhanceResult:
    """Ask the LLM for a cinematic version of ``prompt``; fall back to ``prompt`` if unusable."""
    import jinja2

    llm.reset()  # no KV reuse from an earlier call, so the answer depends on the inputs only
    # Turn enders as stop strings too, for GGUFs whose vocab does not mark them end-of-generation.
    sampling = dict(seed=seed, temperature=temperature, top_p=0.95, top_k=40, max_tokens=max_tokens,
                    stop=["<end_of_turn>", "<|eot_id|>", "<|im_end|>"], grammar=_prose_grammar())
    try:
        reply = llm.create_chat_completion(
            messages=[{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": prompt.strip()}], **sampling)
    except (jinja2.TemplateError, ValueError) as exc:
        # Some chat templates (Gemma 2's) refuse a system turn via raise_exception, which
        # llama-cpp-python surfaces as ValueError: put the instructions in the user turn.
        if "role" not in str(exc).lower():
            raise
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{prompt.strip()}"}], **sampling)
    raw = reply["choices"][0]["message"].get("content") or ""  # type: ignore[index]
    text = clean_enhanced(raw)
    reason = unusable_reason(text)
    if reason:
        log.warning("prompt enhancer output unusable (%s); keeping the user's prompt", reason)
        return EnhanceResult(text=prompt.strip(), raw=raw, fallback=True, reason=reason)
    return EnhanceResult(text=text, raw=raw, fallback=False)


def enhance_prompt(llm: llama_cpp.Llama, prompt: str, *, seed: int, max_tokens: int) -> str:
    """The enhanced prompt as text (the user's own prompt when the model's answer was unusable)."""
    return enhance(llm, prompt, seed=seed, max_tokens=max_tokens).text


def clean_enhanced(text: str, max_chars: int = MAX_CHARS) -> str:
    """Make model output safe for a storyboard: printable, one paragraph, bounded length."""
    text = unicodedata.normalize("NFC", text)
    text = _MARKUP.sub(" ", text)
    # Control, format, surrogate, private-use and unassigned code points (categories C*)
    # plus U+FFFD from undecodable bytes; newlines and tabs become spaces.
    text = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or (unicodedata.category(ch)[0] != "C" and ch != "\ufffd"))
    text = " ".join(text.split())
    text = text.replace("**", "").replace("__", "")
    text = _PREAMBLE.sub("", text).strip()
    if len(text) >= 2 and text[0] in "\"'“”" and text[-1] in "\"'“”":
        text = text[1:-1].strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
        # Prefer ending on a sentence; else on a word, never mid-word.
        text = cut[:end + 1] if end > max_chars // 2 else cut.rsplit(" ", 1)[0]
    return text.strip()


def unusable_reason(text: str) -> str:
    """Why cleaned text is not a prompt (empty string when it is one).

    Prose is mostly word-like tokens; byte soup from a confused (or random) model is not.
    """
    if not text:
        return "empty after cleaning"
    # CJK prose has no spaces between words, only its own punctuation.
    tokens = [t.strip(_EDGE_PUNCT) for t in re.split(r"[\s、。，！？：；]+", text)]
    tokens = [t for t in tokens if t]
    words = sum(bool(_WORD.fullmatch(t)) for t in tokens)
    if words < 3:
        return f"only {words} word(s)"
    if words < 0.8 * len(tokens):
        return f"mostly not words ({words} of {len(tokens)} tokens)"
    return ""

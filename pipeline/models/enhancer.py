"""Prompt enhancer: a chat LLM run through llama.cpp that rewrites a shot description in
the language LTX-2 was trained on.

By default it is instructed as Lightricks instructs it: the T2V and I2V system prompts of
Lightricks' LTX-2 repository (``packages/ltx-core/src/ltx_core/text_encoders/gemma/
encoders/prompts/gemma_{t2v,i2v}_system_prompt.txt``), read from diffusers, which ships
them byte for byte as ``diffusers.pipelines.ltx2.utils.T2V_DEFAULT_SYSTEM_PROMPT`` /
``I2V_DEFAULT_SYSTEM_PROMPT``, with ltx-core's user-turn wording. Those prompts ask for
dialogue in quotes and forbid invented camera motion, so the output grammar allows
quotes, punctuation and any script. A preset may instead name ``"none"`` (a finetuned
enhancer used as its publisher says, with no system prompt) or its own text.

Real presets point at a Gemma-3 GGUF (or, for Sulphur 2, its own enhancer); the tiny
preset builds a 2-layer random GGUF of llama.cpp's ``gemma3`` architecture with
:func:`build_tiny_llm` so tests run the very same llama.cpp code path. A
random model emits arbitrary bytes, and even a real one sometimes wraps its answer in
quotes or chat markup, so everything it returns goes through :func:`clean_enhanced`
before it can reach a storyboard.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import io
import logging
import os
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import gguf
    import llama_cpp

# Deferred imports: gguf, llama_cpp, PIL, jinja2 — the prompt constants are read by cache keys without loading
#   llama.cpp

log = logging.getLogger(__name__)

#: Bump when :func:`build_tiny_llm` writes a different file (part of the enhance cache key).
TINY_LLM_VERSION = 3  # 3: gemma3 architecture, Gemma's specials and turn format
#: Bump when the message layout, grammar or cleaning rules change (part of the enhance cache key).
SYSTEM_PROMPT_VERSION = 3  # 3: Lightricks' LTX-2.5 prompts ("ltx25")

#: ``enhance_system_prompt`` values with a meaning; anything else is the system prompt itself.
LTX_PROMPTS = "ltx"       # Lightricks' published T2V / I2V prompts (the default)
LTX25_PROMPTS = "ltx25"   # Lightricks' LTX-2.5 T2V / I2V prompts (for gemma-4-E2B-it), the same user turns
NO_SYSTEM_PROMPT = "none"  # the enhancer's own training: the user's words only

#: Safety cap on an enhanced prompt's length; the stage passes one matched to the text encoder.
MAX_CHARS = 1200
#: Characters per token allowed when a token budget becomes a character cap (Gemma: ~4 for English).
CHARS_PER_TOKEN = 6
#: Lightricks resizes the I2V reference frame to this long side before the enhancer sees it.
IMAGE_LONG_SIDE = 896
# Chat markup a model may echo (Gemma turns with their role word, <|tags|>, [INST]).
_MARKUP = re.compile(r"<start_of_turn>(?:model|user|system)?|<end_of_turn>|<\|?/?[A-Za-z_]+[^<>]{0,20}\|?>|\[/?INST\]")
_PREAMBLE = re.compile(r"^(?:sure|here(?:'s| is)|okay|ok)\b[^:\n]{0,60}:\s*", re.IGNORECASE)
# A word as prose has it: letters (any script), digits, and inner ' - / . (35mm, f/1.8, dolly-in).
_WORD = re.compile(r"(?=.*[^\W\d_])[\w'’./-]+")
_QUOTES = "\"'“”‘’"
_EDGE_PUNCT = "\"'“”‘’()[],.;:!?—–-…"


@dataclass(frozen=True)
class EnhanceResult:
    text: str       # what the draft should use
    raw: str        # what the model said, before cleaning
    fallback: bool  # True when the model's answer was unusable and ``text`` is the user's prompt
    reason: str = ""


def system_prompt(mode: str, *, image_to_video: bool) -> str:
    """The system turn for ``mode`` (see :data:`LTX_PROMPTS`, :data:`NO_SYSTEM_PROMPT`); "" for none."""
    if mode == NO_SYSTEM_PROMPT:
        return ""
    if mode == LTX_PROMPTS:
        # diffusers imports torch here; the enhance stage runs in the render process, which has it.
        from diffusers.pipelines.ltx2.utils import I2V_DEFAULT_SYSTEM_PROMPT, T2V_DEFAULT_SYSTEM_PROMPT

        return (I2V_DEFAULT_SYSTEM_PROMPT if image_to_video else T2V_DEFAULT_SYSTEM_PROMPT).strip()
    if mode == LTX25_PROMPTS:
        # diffusers (and torch) as above: only the render process enhances
        from diffusers.pipelines.ltx2.utils import (
            LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT,
            LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT,
        )

        return (LTX2_5_I2V_DEFAULT_SYSTEM_PROMPT if image_to_video else LTX2_5_T2V_DEFAULT_SYSTEM_PROMPT).strip()
    return mode


def user_text(prompt: str, mode: str, *, image_to_video: bool) -> str:
    """The user turn: ltx-core's wording with Lightricks' prompts, the bare prompt otherwise."""
    prompt = prompt.strip()
    if mode not in (LTX_PROMPTS, LTX25_PROMPTS):  # diffusers words 2.5's user turns as 2.3's
        return prompt
    return f"User Raw Input Prompt: {prompt}." if image_to_video else f"user prompt: {prompt}"


# --------------------------------------------------------------------------- tiny model

TINY_CHAT_TEMPLATE = (
    # Gemma 3's turn format, as its own template lays it out: <bos>, a system turn folded into
    # the first user turn, the assistant speaking as "model", each turn closed by <end_of_turn>.
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] + '\\n\\n' %}"
    "{% set messages = messages[1:] %}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if loop.first %}{{ ns.system }}{% endif %}{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

#: Gemma's own special tokens, at Gemma's ids (pad 0, eos 1, bos 2, unk 3), then its turn markers.
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
#: The tiny twin's shape: Gemma 3's (grouped KV heads, a head size that is not n_embd / n_head,
#: query/key RMS norms, norms after attention and FFN, a sliding window), only small.
_TINY_GEMMA = {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_head_kv": 2, "head_dim": 32, "n_ff": 128,
               "n_ctx": 8192, "sliding_window": 1024}


def build_tiny_llm(path: Path, *, chat_template: str = TINY_CHAT_TEMPLATE) -> Path:
    """Write a deterministic 2-layer Gemma-3-architecture GGUF (F32, Gemma's SPM specials and byte tokens).

    Metadata and tensor names are llama.cpp's ``gemma3`` ones, as ``convert_hf_to_gguf`` writes
    a Gemma 3 checkpoint (no ``output.weight``: Gemma ties it to the embedding; norm weights
    near 1, as the converter stores Gemma's ``1 + w``). Written to a temp file beside
    ``path`` and renamed, so a killed build never leaves a half file that llama.cpp would
    later choke on.
    """
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)[1])
    try:
        writer = gguf.GGUFWriter(str(tmp), "gemma3")
        _write_gemma3_header(writer, chat_template)
        _write_gemma3_tensors(writer, n_vocab=len(_tiny_vocab()[0]))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _tiny_vocab() -> tuple[list[str], list[int], list[float]]:
    """Gemma's specials, the 256 byte-fallback tokens, then whole words (tokens, types, scores).

    The words are a shot's and those of the system prompts, so the prompts take ~1k tokens as
    in Gemma's vocabulary, not ~5k bytes; SPM merges only into pieces the vocab has, so every
    prefix is there.
    """
    import gguf

    words = sorted({"▁" + w[:i] for w in _TINY_WORDS for i in range(1, len(w) + 1)}, key=lambda t: (len(t), t))
    t = gguf.TokenType
    tokens = list(_GEMMA_SPECIALS) + [f"<0x{b:02X}>" for b in range(256)] + words
    types = [t.CONTROL, t.CONTROL, t.CONTROL, t.UNKNOWN, t.CONTROL, t.CONTROL] + [t.BYTE] * 256 + [t.NORMAL] * len(words)
    scores = [0.0] * (len(_GEMMA_SPECIALS) + 256) + [float(len(w)) for w in words]
    return tokens, types, scores


def _write_gemma3_header(w: gguf.GGUFWriter, chat_template: str) -> None:
    import gguf

    g = _TINY_GEMMA
    w.add_name("sulphur-tiny-enhancer")
    w.add_context_length(g["n_ctx"])
    w.add_embedding_length(g["n_embd"])
    w.add_block_count(g["n_layer"])
    w.add_feed_forward_length(g["n_ff"])
    w.add_head_count(g["n_head"])
    w.add_head_count_kv(g["n_head_kv"])
    w.add_key_length(g["head_dim"])
    w.add_value_length(g["head_dim"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(g["sliding_window"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types, scores = _tiny_vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(chat_template)


def _write_gemma3_tensors(writer: gguf.GGUFWriter, *, n_vocab: int) -> None:
    g = _TINY_GEMMA
    rng = np.random.default_rng(20261127)
    n_embd, hd, n_ff = g["n_embd"], g["head_dim"], g["n_ff"]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    add = writer.add_tensor
    add("token_embd.weight", w(n_vocab, n_embd))
    for i in range(g["n_layer"]):
        b = f"blk.{i}."
        add(b + "attn_norm.weight", norm(n_embd))
        add(b + "attn_q.weight", w(g["n_head"] * hd, n_embd))
        add(b + "attn_k.weight", w(g["n_head_kv"] * hd, n_embd))
        add(b + "attn_v.weight", w(g["n_head_kv"] * hd, n_embd))
        add(b + "attn_q_norm.weight", norm(hd))
        add(b + "attn_k_norm.weight", norm(hd))
        add(b + "attn_output.weight", w(n_embd, g["n_head"] * hd))
        add(b + "post_attention_norm.weight", norm(n_embd))
        add(b + "ffn_norm.weight", norm(n_embd))
        add(b + "ffn_gate.weight", w(n_ff, n_embd))
        add(b + "ffn_up.weight", w(n_ff, n_embd))
        add(b + "ffn_down.weight", w(n_embd, n_ff))
        add(b + "post_ffw_norm.weight", norm(n_embd))
    add("output_norm.weight", norm(n_embd))


# The tiny LLM's words: a shot's and those of Lightricks' system prompts, so the prompts
# tokenize into ~1.9k word pieces, near Gemma's ~1k tokens, rather than ~5k bytes (which
# would not fit a 4k context and would slow every tiny render's enhance).
_TINY_WORDS = sorted(set(re.findall(r"[A-Za-z]+", " ".join([
    "the a camera light slow shot sound wide close warm cold rain city night pans music and of",
    "You are a Creative Assistant Given user raw input prompt describing scene or concept expand it into",
    "detailed video generation with specific visuals integrated audio to guide text model image first frame",
    "Guidelines Strictly follow all aspects include every element requested style motions actions movement",
    "If is vague invent concrete details lighting textures materials settings etc For characters describe",
    "gender clothing hair expressions DO NOT unrequested Use active language present progressive verbs walking",
    "speaking no action specified natural movements Maintain chronological flow temporal connectors as then while",
    "Audio layer Describe complete soundscape background ambient sounds SFX speech when Integrate sounds",
    "alongside Be e g soft footsteps on tile not present Speech only ANY related talking conversation singing",
    "ALWAYS exact words in quotes voice characteristics man says an excited won t believe what I just saw",
    "Specify if English accent relevant Style at beginning rest Default cinematic realistic unspecified Omit",
    "unclear Visual auditory senses smell taste touch Restrained Avoid dramatic exaggerated terms mild phrasing",
    "Colors plain red dress intensified vibrant blue bright Lighting neutral descriptions overhead harsh",
    "blinding Facial features delicate modifiers subtle freckles Important notes Analyze carefully In cases FPV",
    "POV exclude description subject whose requested Camera motion unless by modify provided character dialogue",
    "typo No timestamps cuts use Format phrases like opens Start directly optional Output Strict Single",
    "continuous paragraph titles headings prefaces code fences Markdown unsafe invalid return original Never ask",
    "questions clarifications Your output quality CRITICAL Generate visually rich dynamic prompts high Example",
    "woman coffee phone concise focused Analyze Identify Setting Elements Mood changes from established",
    "Inaccurate may cause cuts intensity tempo effects Objective interpret emotions intentions observable",
    "performance fidelity correct accurate essential goal flawless execution rules smiles speaks voice",
]))))

# --------------------------------------------------------------------------- running

def load_enhancer(path: Path, *, n_gpu_layers: int, n_ctx: int, seed: int,
                  mmproj: Path | None = None) -> llama_cpp.Llama:
    """Load a chat GGUF with llama.cpp; ``n_gpu_layers`` is 0 on CPU plans, -1 for all on CUDA.

    ``mmproj`` is the GGUF's vision projector, when the preset has one: the enhancer then
    sees the I2V anchor frame, as Lightricks' I2V enhancement does.
    """
    import llama_cpp

    quiet_llama_logs(llama_cpp)
    handler = None
    if mmproj is not None:
        from llama_cpp.llama_chat_format import MTMDChatHandler

        handler = MTMDChatHandler(clip_model_path=str(mmproj), verbose=False, use_gpu=n_gpu_layers != 0)
    return llama_cpp.Llama(model_path=str(path), n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                           seed=seed, verbose=False, chat_handler=handler)


#: llama.cpp's log callback while Sulphur runs it (ctypes keeps no reference of its own).
_LOG_CALLBACK: object = None

#: ggml_log_level as the bundled ggml numbers it: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
#: (CONT continues the previous line). Measured from the levels of known lines.
_GGML_ERROR, _GGML_CONT = 4, 5


def quiet_llama_logs(llama_cpp: object) -> None:
    """Let only llama.cpp's errors reach stderr. With ``verbose=False`` its warnings still
    printed between the progress lines of every render ("llama_kv_cache_iswa: using full-size
    SWA cache (ref: …)"): llama-cpp-python 0.3.36 filters with ggml's old level numbers
    (ERROR was 3), and 3 is WARN in the ggml it bundles."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    last = [0]

    def keep_errors(level: int, text: bytes, user_data: object) -> None:
        last[0] = last[0] if level == _GGML_CONT else level
        if last[0] == _GGML_ERROR:
            print(text.decode("utf-8", errors="replace"), end="", flush=True, file=sys.stderr)

    _LOG_CALLBACK = llama_cpp.llama_log_callback(keep_errors)  # type: ignore[attr-defined]
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))  # type: ignore[attr-defined]


def cpu_only_build() -> bool:
    """True when this llama.cpp cannot offload to a GPU (the default PyPI wheel)."""
    import llama_cpp

    return not llama_cpp.llama_supports_gpu_offload()


# One paragraph of prose: no line breaks, lists or markdown, which a video model's text
# encoder would read literally; but quotes (dialogue for LTX-2's joint audio), dashes and
# any script are allowed. Each word starts with a letter or digit after an optional
# opening quote, which is what keeps even a random-weight model's text word-shaped.
PROSE_GBNF = r"""
root  ::= word (gap word){7,}
gap   ::= " " | ", " | ". " | ": " | "; " | " - "
word  ::= open? alnum inner* close
open  ::= ["'(\u201c\u2018]
alnum ::= [A-Za-z0-9] | [^\x00-\x7F]
inner ::= [A-Za-z0-9'./-] | [^\x00-\x7F]
close ::= [,.;:!?]? ["')\u201d\u2019]? [,.;:!?]?
"""


@functools.cache
def _prose_grammar() -> llama_cpp.LlamaGrammar:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(PROSE_GBNF, verbose=False)


def _image_data_uri(image: np.ndarray) -> str:
    """The anchor frame as a PNG data URI, long side :data:`IMAGE_LONG_SIDE` (Lightricks' prep)."""
    from PIL import Image

    frame = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    scale = IMAGE_LONG_SIDE / max(frame.size)
    frame = frame.resize((int(frame.width * scale), int(frame.height * scale)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _messages(prompt: str, mode: str, image_to_video: bool, image: np.ndarray | None) -> list[dict]:
    system = system_prompt(mode, image_to_video=image_to_video)
    text = user_text(prompt, mode, image_to_video=image_to_video)
    user: dict = {"role": "user", "content": text}
    if image is not None:
        user["content"] = [{"type": "image_url", "image_url": {"url": _image_data_uri(image)}},
                           {"type": "text", "text": text}]
    return ([{"role": "system", "content": system}] if system else []) + [user]


def prompt_tokens(llm: llama_cpp.Llama, messages: list[dict]) -> int:
    """Tokens the chat turns take before the answer (text only; an image adds its own)."""
    text = "\n".join(m["content"] if isinstance(m["content"], str) else
                     " ".join(p.get("text", "") for p in m["content"]) for m in messages)
    return len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)) + 16 * len(messages)


def enhance(llm: llama_cpp.Llama, prompt: str, *, seed: int, max_tokens: int, temperature: float = 0.7,
            mode: str = LTX_PROMPTS, image_to_video: bool = False, image: np.ndarray | None = None,
            max_chars: int = MAX_CHARS) -> EnhanceResult:
    """Ask the LLM for an enhanced ``prompt``; fall back to ``prompt`` if unusable or too long.

    ``temperature`` 0.7 is ltx-core's sampling for Gemma 3 enhancement. ``image`` (H×W×3)
    is shown to the model only when it was loaded with a vision projector.
    """
    import jinja2

    llm.reset()  # no KV reuse from an earlier call, so the answer depends on the inputs only
    if image is not None and getattr(llm, "chat_handler", None) is None:
        image = None  # no vision projector: the I2V prompt alone
    messages = _messages(prompt, mode, image_to_video, image)
    need = prompt_tokens(llm, messages) + max_tokens
    if need > llm.n_ctx():
        return _too_long(prompt, f"the prompt and instructions need {need} tokens, "
                                 f"the enhancer's context holds {llm.n_ctx()}")
    # Turn enders as stop strings too, for GGUFs whose vocab does not mark them end-of-generation.
    sampling = dict(seed=seed, temperature=temperature, top_p=0.95, top_k=64, max_tokens=max_tokens,
                    stop=["<end_of_turn>", "<|eot_id|>", "<|im_end|>"], grammar=_prose_grammar())
    try:
        try:
            reply = llm.create_chat_completion(messages=messages, **sampling)
        except (jinja2.TemplateError, ValueError) as exc:
            # Some chat templates (Gemma 2's) refuse a system turn via raise_exception, which
            # llama-cpp-python surfaces as ValueError: put the instructions in the user turn.
            if "role" not in str(exc).lower() or messages[0]["role"] != "system":
                raise
            merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}] \
                if isinstance(messages[1]["content"], str) else messages[1:]
            reply = llm.create_chat_completion(messages=merged, **sampling)
    except ValueError as exc:
        if "context window" not in str(exc):
            raise
        return _too_long(prompt, str(exc))
    raw = reply["choices"][0]["message"].get("content") or ""  # type: ignore[index]
    text = clean_enhanced(raw, max_chars)
    reason = unusable_reason(text)
    if reason:
        log.warning("prompt enhancer output unusable (%s); keeping the user's prompt", reason)
        return EnhanceResult(text=prompt.strip(), raw=raw, fallback=True, reason=reason)
    return EnhanceResult(text=text, raw=raw, fallback=False)


def _too_long(prompt: str, why: str) -> EnhanceResult:
    log.warning("prompt not enhanced: %s", why)
    return EnhanceResult(text=prompt.strip(), raw="", fallback=True, reason=f"too long to enhance: {why}")


def enhance_prompt(llm: llama_cpp.Llama, prompt: str, *, seed: int, max_tokens: int, **kwargs: object) -> str:
    """The enhanced prompt as text (the user's own prompt when the model's answer was unusable)."""
    return enhance(llm, prompt, seed=seed, max_tokens=max_tokens, **kwargs).text  # type: ignore[arg-type]


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
    # A whole answer wrapped in quotes loses them; dialogue quotes inside the prose stay.
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and not any(q in text[1:-1] for q in _QUOTES):
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

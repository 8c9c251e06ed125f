"""Given sound into LTX-2's audio latents, held fixed while the video is denoised.

LTX-2 denoises video and audio together, each stream attending to the other. For an
audio-driven shot the audio stream is given instead of generated, as Lightricks'
audio-to-video recipe does: the track is read with PyAV, turned into the log-mel
spectrogram the audio VAE was trained on, encoded by the preset's audio VAE, and a
forward pre-hook on the transformer hands it those clean latents at timestep 0 on every
call, so the video tokens cross-attend to the real sound at each step. diffusers' LTX-2
pipelines take initial audio latents but re-noise and denoise them (and their step
callback cannot replace them), hence the hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.project.media import open_media

# Deferred imports: av, torch — the draft stage imports this module to build cache keys without them;
#   they load when a track is read or encoded

#: FFT size of LTX-2's audio processor (torchaudio MelSpectrogram: n_fft = win_length = 1024,
#: hop from the audio VAE config, Hann window, centred, magnitude, Slaney mel scale and norm, log
#: clamped at 1e-5), as SimpleTuner's port of Lightricks' audio VAE (helpers/models/ltxvideo2/
#: audio_autoencoder.py) has it; diffusers 0.42.1 ships no audio encoder front end.
N_FFT = 1024


def read_track(path: Path, start: float, samples_at: Any) -> tuple[np.ndarray, int]:
    """(stereo float32 (2, n), rate) of ``path`` from ``start`` seconds, at the file's own rate.

    ``samples_at(rate)`` says how many samples the shot needs; a track that ends sooner is
    padded with silence. Decoded from the beginning, so the first sample is exact (a seek
    lands on a packet boundary)."""
    import av

    with open_media(path) as container:
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        first, n = round(start * rate), int(samples_at(rate))
        # Mono stays mono here and is copied to both channels below: libswresample's
        # mono → stereo upmix would lower it by 3 dB, and the film keeps the track's own samples.
        mono = stream.codec_context.channels == 1
        resampler = av.AudioResampler(format="fltp", layout="mono" if mono else "stereo", rate=rate)
        chunks, have = [], 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                have += chunks[-1].shape[1]
            if have >= first + n:
                break
    wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)
    wave = wave[:, first:first + n].astype(np.float32)
    if wave.shape[0] == 1:
        wave = np.repeat(wave, 2, axis=0)
    if wave.shape[1] < n:
        wave = np.pad(wave, ((0, 0), (0, n - wave.shape[1])))
    return np.ascontiguousarray(wave), rate


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Stereo float audio to ``target`` Hz with libswresample (PyAV)."""
    if rate == target or wave.shape[1] == 0:
        return wave
    import av

    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=target)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave, dtype=np.float32), format="fltp", layout="stereo")
    frame.sample_rate = rate
    chunks = [f.to_ndarray() for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(chunks, axis=1).astype(np.float32)


def _slaney_mel(freqs: np.ndarray) -> np.ndarray:
    """Hz → Slaney mels: linear to 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mels = freqs / f_sp
    high = freqs >= min_log_hz
    mels[high] = min_log_mel + np.log(freqs[high] / min_log_hz) / logstep
    return mels


def _slaney_hz(mels: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * mels
    high = mels >= min_log_mel
    freqs[high] = min_log_hz * np.exp(logstep * (mels[high] - min_log_mel))
    return freqs


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the Slaney scale, Slaney-normalised (equal area)."""
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(np.array([0.0]))[0], _slaney_mel(np.array([rate / 2]))[0],
                                   n_mels + 2))
    fb = np.zeros((n_mels, bins.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m:m + 3]
        up, down = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(up, down)) * 2.0 / (hi - lo)
    return fb.astype(np.float32)


def log_mel(wave: np.ndarray, rate: int, hop: int, n_mels: int) -> Any:
    """(1, 2, frames, n_mels) log-mel spectrogram of stereo audio, as the audio VAE reads it."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    spec = torch.stft(x, N_FFT, hop_length=hop, win_length=N_FFT, window=torch.hann_window(N_FFT),
                      center=True, pad_mode="reflect", return_complex=True).abs()
    mel = torch.from_numpy(mel_filterbank(rate, N_FFT, n_mels)) @ spec
    return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2).unsqueeze(0)


def latent_frames(pipe: Any, frames: int, fps: int) -> int:
    """Audio latent frames of a shot, counted as the LTX-2 pipeline counts them."""
    per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
    return round(frames / fps * per_second)


def encode(pipe: Any, wave: np.ndarray, rate: int, length: int) -> Any:
    """The track's audio latents [1, C, length, M] (the pipeline's denormalized layout)."""
    import torch

    vae = pipe.audio_vae
    sr, hop = int(vae.config.sample_rate), int(vae.config.mel_hop_length)
    mel = log_mel(resample(wave, rate, sr), sr, hop, int(vae.config.mel_bins))
    with torch.no_grad():
        lat = vae.encode(mel.to(pipe._execution_device, vae.dtype)).latent_dist.mode().float()
    if lat.shape[2] >= length:
        return lat[:, :, :length]
    return torch.nn.functional.pad(lat, (0, 0, 0, length - lat.shape[2]))


def packed(pipe: Any, latents: Any) -> Any:
    """Denormalized [B, C, L, M] audio latents as the transformer reads them (packed, normalized)."""
    vae = pipe.audio_vae
    seq = pipe._pack_audio_latents(latents)
    return pipe._normalize_audio_latents(seq, vae.latents_mean.to(seq), vae.latents_std.to(seq))


@contextmanager
def held_fixed(transformer: Any, clean: Any) -> Iterator[None]:
    """Every transformer call in the ``with`` body sees ``clean`` (packed, normalized) as its audio,
    at timestep 0: the given sound conditions the video and is never denoised.

    A torch forward pre-hook, not a diffusers ModelHook: it must sit outside whatever offload
    hooks the memory plan put on the transformer, and come off with the stage."""
    import torch

    def pre(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        audio = kwargs.get("audio_hidden_states")
        if audio is None:
            return args, kwargs
        batch = audio.shape[0]
        kwargs["audio_hidden_states"] = clean.to(audio.device, audio.dtype).expand(batch, -1, -1)
        zero = torch.zeros(batch, device=audio.device, dtype=torch.float32)
        kwargs["audio_timestep"] = zero
        if kwargs.get("sigma") is not None:
            kwargs["audio_sigma"] = zero
        return args, kwargs

    handle = transformer.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()

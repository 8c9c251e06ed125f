"""``--engine ray``: the runner's per-segment methods pipelined over Ray actors.

A storyboard is a chain only through the draft: segment k+1's draft needs segment k's
last draft frame, nothing after it. So one *draft actor* drafts segment after segment
(in storyboard order; each call receives the previous call's chain state as an object
reference, so Ray itself orders them and a restarted actor still knows its anchor)
while *finish actors* refine, upscale and encode the segments already drafted (Ray's
``ActorPool`` hands each drafted segment to an idle one). Every actor owns a
:class:`pipeline.render.runner.Renderer`, so models stay loaded between segments and every
stage goes through the same content-addressed cache with the same keys as a local
render: a Ray render and a local render resume each other.

Faults: actors are created with ``max_restarts``/``max_task_retries``, so a crashed
actor (or a lost node) is restarted and its task retried; stages it had finished are
cache hits (``StageCached``), so only the stage it was running runs again.

Events: actors put the runner's typed events, tagged with the actor (``worker``: name,
host, GPU), on a ``ray.util.queue.Queue``; the driver emits them in order of arrival.

Cluster: every node must see the project folder (storyboard, renders, stage cache) at
the same absolute path, e.g. over NFS; artifacts travel through that shared cache.
"""

from __future__ import annotations

import copy
import math
import os
import queue as stdlib_queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.util.actor_pool import ActorPool
from ray.util.queue import Queue

from pipeline.memory.loaded import LoadedModels
from pipeline.memory.plan import PlanError
from pipeline.memory.planner import Budgets, plan_ladder
from pipeline.project.references import check_references
from pipeline.project.selection import segment_index, select_segments
from pipeline.project.storyboard import StoryboardError, load, with_segment
from pipeline.render.engines.settings import finishers_setting
from pipeline.render.errors import RenderError
from pipeline.render.job import Overrides, RenderJob, rounded_lengths
from pipeline.render.lora_audio import check_loras
from pipeline.render.outputs import OutputLock, refuse_blocked_folders
from pipeline.render.takes import record_takes, write_still
from pipeline.render.usage import after_render
from pipeline.stages.base import Cancelled
from pipeline.wire import protocol
from pipeline.wire.protocol import Event

# Deferred imports: torch, psutil, PIL, pipeline.render.runner — loaded inside the Ray actors, not in the driver

Emit = Callable[[Event], None]
NAMESPACE = "sulphur"
#: A crash (or ``ray.kill``) restarts the actor and retries its task this many times.
MAX_RESTARTS = 3
#: Environment variables forwarded from the driver to every actor (SULPHUR_HOME, test faults…).
FORWARD_PREFIX = "SULPHUR_"


# ------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Layout:
    """How many actors, what each asks Ray for, and the budgets each plans within."""

    draft_gpus: float
    finish_gpus: float
    finishers: int                  # separate finish actors; 0 = the draft actor finishes too
    draft_share_gb: float | None    # VRAM the draft actor plans within, when it shares a card
    finish_share_gb: float | None   # … and each finish actor
    draft_ram_gb: float | None = None   # host RAM the draft actor plans within (one node's RAM split)
    finish_ram_gb: float | None = None  # … and each finish actor

    def describe(self) -> str:
        ram = (f", RAM {self.draft_ram_gb:.0f} GB draft" + (f" / {self.finish_ram_gb:.0f} GB each finisher"
                                                            if self.finishers else "")) if self.draft_ram_gb else ""
        if self.draft_gpus == 0:
            return f"1 draft actor + {self.finishers} finish actor(s) on CPU{ram}"
        vram = f", {self.finish_share_gb:.1f} GB VRAM each" if self.finish_share_gb else ""
        return (f"1 draft actor ({self.draft_gpus:g} GPU) + {self.finishers} finish actor(s) "
                f"({self.finish_gpus:g} GPU each){vram}{ram}")


def shared_card_warning(gpus: float, layout: Layout, role: str = "finish") -> str | None:
    """What to tell a user whose render's actors share one card: they take turns on it and each loads
    its own models, so the single local worker, which already encodes behind the next draft, was faster
    (3 × 121 frames of the 19B stack on an H100: Ray 0.78× the local engine, bench/results/README.md).
    Nothing for takes (``role`` "take"): they have no local engine to suggest."""
    if role == "finish" and 0 < gpus < 2 and layout.finishers > 0:
        return ("ray: the draft and finish actors share one GPU and each loads its own models; "
                "on one card `--engine local` renders faster (Ray pays from two GPUs)")
    return None


def plan_layout(*, gpus: float, cpus: float, card_gb: float, budget_gb: float | None, segments: int,
                finishers: int | None = None, host_gb: float | None = None,
                host_need_gb: tuple[float, float] | None = None) -> Layout:
    """Actors for a cluster of ``gpus`` cards of ``card_gb`` (and ``cpus`` CPUs).

    One card: with a storyboard ``vram_budget_gb`` each actor asks for that share, so a
    draft and a finish actor share it (``finishers`` packs more); without one, two halves.
    Two or more cards: the draft actor (the chain's critical path) gets a card of its own
    and, by default, one finisher per other card — four finishers sharing one H200 each
    refined 2.5-3× slower than one alone (bench/results), and each loads its own models,
    so more per card mostly adds host RAM. ``finishers`` asks for more: they spread evenly (Ray fills one
    card with fractional requests before the next, so each asks for ``1/k`` of a card).
    Never more finishers than segments, than fit the cards, or (``host_gb`` on one node,
    where the draft and each finish actor need ``host_need_gb`` of host RAM) than the host
    RAM holds: every actor keeps its own models. A finisher gets at most twice its need;
    the draft actor the rest (kept between segments, its text encoder saves seconds each).
    """
    host_room = None
    if host_gb and host_need_gb:
        draft_need, finish_need = host_need_gb
        host_room = max(0, int((host_gb - draft_need) / finish_need + 1e-9))  # beside the draft actor

    def how_many(room: int) -> int:
        n = min(room if finishers is None else finishers, room, segments)
        return max(0, n if host_room is None else min(n, host_room))

    def with_ram(layout: Layout) -> Layout:
        if not (host_gb and host_need_gb and layout.finishers):
            return layout  # alone: it plans with the RAM as a local render would
        draft_need, finish_need = host_need_gb
        n = layout.finishers
        finish = min(2 * finish_need, finish_need * host_gb / (draft_need + n * finish_need))
        return replace(layout, draft_ram_gb=round(host_gb - n * finish, 1), finish_ram_gb=round(finish, 1))

    if gpus <= 0:
        n = how_many(max(0, int(cpus) - 1))
        return with_ram(Layout(0.0, 0.0, n, None, None))
    frac = 1.0
    if budget_gb and card_gb > 0:
        frac = min(1.0, math.ceil(budget_gb / card_gb * 100) / 100)
    cards = int(gpus + 1e-9)
    if cards >= 2:
        spare = cards - 1
        per_card = int(1 / frac + 1e-9) if budget_gb and finishers is not None else 1
        n = how_many(spare * per_card)
        k = max(1, math.ceil(n / spare))
        finish = math.floor(100 / k) / 100
        return with_ram(Layout(1.0, finish if n else 0.0, n, None,
                               None if budget_gb or k == 1 else round(card_gb * finish, 2)))
    if not budget_gb:
        frac = 0.5
    room = int((gpus - frac) / frac + 1e-9)
    # One finisher by default here too: with four packed beside the drafter on one H200 each
    # paid its own model load and they shared the card, 52-70 s per refine (13-16 s warm,
    # alone), so the last segment finished 70 s after the last draft (bench/results).
    n = how_many(room if finishers is not None else min(room, 1))
    if n == 0 and not budget_gb:
        return with_ram(Layout(1.0, 0.0, 0, None, None))  # alone on the card: all of it
    share = None if budget_gb or frac >= 1.0 else round(card_gb * frac, 2)
    return with_ram(Layout(frac, frac if n else 0.0, n, share, share if n else None))


def _planned_ltx2(sb: Any, preset: str | None) -> Any:
    """The render's preset when the memory planner sizes it (full-size LTX-2 stacks), else
    None: tiny presets take a few MB, the I2V families carry fixed recipes."""
    p = RenderJob.resolve(sb, Overrides(preset=preset)).preset
    if p.family != "ltx2" or (p.builder is not None and not p.extra.get("random_weights")):
        return None
    return p


def _ladder(stage: str, p: Any, sb: Any, vram_gb: float) -> list[Any]:
    """``stage``'s plans on a card of ``vram_gb``, host RAM left unbounded."""
    return plan_ladder(stage, p, sb.project, "cuda", budgets=Budgets.from_gb(vram_gb, 1 << 20))


def halving_slows(sb: Any, preset: str | None, card_gb: float) -> bool:
    """Whether half of a ``card_gb`` card would put the draft or the refine on a slower memory
    plan than the whole card: then two actors sharing it cost more than their overlap saves
    (an 8 GB card: the streamer keeps fewer blocks resident, the VAE tiles smaller)."""
    try:
        p = _planned_ltx2(sb, preset)
        if p is None:
            return False
        for stage in ("draft", "refine"):
            whole, half = (_ladder(stage, p, sb, gb)[0] for gb in (card_gb, card_gb / 2))
            if whole.name != half.name or whole.options.get("resident_blocks") != half.options.get("resident_blocks"):
                return True
    except (KeyError, PlanError):
        return True  # half the card cannot hold it at all
    return False


def actor_host_need_gb(sb: Any, preset: str | None, vram_gb: float) -> tuple[float, float] | None:
    """Host RAM (GiB) the draft actor and a finish actor need: the lowest of their stage's
    plans within ``vram_gb`` that still streams from RAM (reading weights from disk every
    step is what a user would rather not run two of). None when the planner cannot tell
    (tiny presets: a few MB; the I2V families carry fixed recipes)."""
    try:
        p = _planned_ltx2(sb, preset)
        if p is None:
            return None
        need = []
        for stage in ("draft", "refine"):
            ladder = _ladder(stage, p, sb, vram_gb)
            streamed = [plan for plan in ladder if not plan.options.get("mmap")] or ladder
            need.append(min(plan.host_bytes for plan in streamed) / 2**30)
    except (KeyError, PlanError):
        return None
    return need[0], need[1]


@ray.remote(num_cpus=0, num_gpus=0.01)
def _card_gb() -> float:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30


# ----------------------------------------------------------------------- actor


class StageActorBody:
    """One Renderer in one Ray actor: drafts, finishes or assembles segments."""

    def __init__(self, storyboard: str, preset: str | None, job_id: str, events: str, role: str,
                 share_gb: float | None, sweep: bool, user_threads: bool = False,
                 ram_gb: float | None = None, upscale_frames: int = 0) -> None:
        # As the CLI does for local renders (a remote node's actors do not inherit it).
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        # The event queue by name, not by handle: constructor arguments must outlive restarts.
        self.events = ray.get_actor(events, namespace=NAMESPACE)
        self.cancel = threading.Event()
        self.error: BaseException | None = None
        ctx = ray.get_runtime_context()
        gpus = ray.get_gpu_ids()
        self.actor_name = (f"{ctx.get_actor_name() or role}@{socket.gethostname()} "
                       + (f"GPU {','.join(str(g) for g in gpus)}" if gpus else "CPU"))
        try:
            if not user_threads:
                _local_threads()
            self.renderer = _renderer(storyboard, preset, job_id, share_gb, ram_gb, self._emit, self.cancel,
                                      upscale_frames)
            if sweep:
                self.renderer.cache.sweep_partials()
            self.first_chain = copy.deepcopy(self.renderer.chain)  # what segment 1 starts from
        except BaseException as exc:  # raised from ready(): an actor whose __init__ raises is just dead
            self.error = exc

    def _emit(self, event: Event) -> None:
        if hasattr(event, "actor") and not event.actor:
            event.actor = self.actor_name
        ray.get(self.events.put_nowait.remote(event))  # waited for: a task's events precede its result

    def ready(self) -> str:
        if self.error is not None:
            raise self.error
        return self.actor_name

    @ray.method(concurrency_group="control")
    def cancel_now(self) -> None:
        self.cancel.set()

    @ray.method(num_returns=3)
    def draft(self, index: int, chain: Any) -> tuple[Any, Any, Any]:
        """Draft segment ``index`` after the chain state the previous draft returned (None: first)."""
        self.ready()
        if chain is not None:
            self.renderer.chain = chain
        job, artifact = self.renderer.draft_segment(index)
        return job, artifact, self.renderer.chain

    def prompt(self, index: int) -> str:
        """The prompt segment ``index`` drafts from (enhanced with its own seed, as a render would)."""
        self.ready()
        return self.renderer.prompt_for(self.renderer.job_for(index))

    def take(self, index: int, chain: Any, seed: int, prompt: str, out: str) -> str:
        """One take of segment ``index``: draft with ``seed`` after ``chain``, finish, copy to ``out``.

        The prompt is fixed (locked) so every take differs only by its seed, and a picked
        take's stages are exactly what a render with that seed and prompt looks up.
        """
        from pipeline.render.runner import atomic_copy

        self.ready()
        r = self.renderer
        base = r.job
        seg_id = base.storyboard.segments[index].id
        self._emit(protocol.TakeStarted(segment=seg_id, seed=seed))
        take = with_segment(base.storyboard, seg_id, seed=seed, enhance_lock=True, enhanced_prompt=prompt)
        r.job = replace(base, storyboard=take)
        r.chain = copy.deepcopy(chain if chain is not None else self.first_chain)
        try:
            job, draft = r.draft_segment(index)
            encode = r.finish_stages(job, draft, preview=False)  # the shot's own preview stays
        finally:
            r.job = base
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(encode.file("segment.mp4"), target)
        still = write_still(target)
        self._emit(protocol.TakeFinished(segment=seg_id, seed=seed, path=str(target), still=str(still)))
        return str(target)

    def finish(self, job: Any, draft: Any) -> str:
        self.ready()
        return str(self.renderer.finish_segment(job, draft))

    def assemble(self, drafts: dict[str, Any]) -> str:
        self.ready()
        return str(self.renderer.assemble(drafts))

    @ray.method(concurrency_group="control")
    def used(self) -> list[str]:
        """The cache entries this actor found or built, for the driver's usage record (answered
        beside a running stage: a copy, as the stage may be adding one)."""
        renderer = getattr(self, "renderer", None)
        return sorted(renderer.cache.used.copy()) if renderer is not None else []


def _local_threads() -> None:
    """torch's CPU thread count as a plain process on this node has it (one per physical core).

    Ray caps OMP_NUM_THREADS at the actor's num_cpus (1), and float reductions depend on
    the thread count: a draft made with 1 thread differs from a local render's by 1 LSB,
    and the chain carries that into every later segment (measured on the tiny preset,
    2 segments × 9 frames). With torch's default here, a Ray render's frames equal a
    local render's. Set OMP_NUM_THREADS for the render to choose for both engines.
    """
    import psutil
    import torch

    torch.set_num_threads(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def _renderer(storyboard: str, preset: str | None, job_id: str, share_gb: float | None,
              ram_gb: float | None, emit: Emit, cancel: threading.Event, upscale_frames: int = 0) -> Any:
    """A Renderer as :func:`pipeline.render.runner.render` builds one, within this actor's VRAM and RAM shares.

    ``upscale_frames``: the frames this actor will upscale, which a local render's preflight
    sets (all it upscales): whether compiling the upscaler pays is decided per process."""
    from pipeline.render.runner import Renderer

    sb = load(storyboard)
    # Several actors share this card: each plans within its Ray share, not the free VRAM;
    # and every actor on this node keeps its own models: each plans within its part of the RAM.
    vram = share_gb if share_gb and sb.project.vram_budget_gb is None else None
    job = RenderJob.resolve(sb, Overrides(preset=preset, vram_budget_gb=vram, ram_budget_gb=ram_gb or None))
    renderer = Renderer.create(job, emit=emit, cancel=cancel, job_id=job_id, models=LoadedModels())
    renderer.upscale_frames = upscale_frames
    return renderer


def upscale_shares(frames: int, finishers: int, *, take_frames: int = 0) -> tuple[int, int]:
    """(frames the draft actor upscales, frames each finish actor upscales) of ``frames`` in all:
    the draft actor finishes alone when there is no finisher; else the pool spreads the
    segments over the finishers, so each is expected to upscale its even share.
    ``take_frames``: takes of that many frames each, and the draft actor is one of the pool
    (a busy actor upscales whole takes: its share is rounded up to one)."""
    if finishers <= 0:
        return frames, 0
    if take_frames:
        share = math.ceil(frames // take_frames / (finishers + 1)) * take_frames
        return share, share
    return 0, math.ceil(frames / finishers)


StageActor = ray.remote(concurrency_groups={"control": 1})(StageActorBody)


# ---------------------------------------------------------------------- driver


def _init(address: str | None) -> bool:
    """Connect to (or start) Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
    if address in (None, "", "local"):
        ray.init(include_dashboard=False, **kwargs)
        return True
    problem = address_problem(address)
    if not problem:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError) as exc:  # ValueError: a malformed address, ray:// without ray[client]
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if problem:
        raise RenderError("ray_unreachable", f"--address {address}: cannot reach the Ray cluster: {problem}")
    return True


def address_problem(address: str, timeout: float = 5.0) -> str:
    """Why ``address`` cannot be a Ray cluster's, or "". ``auto`` is Ray's to find. For
    ``HOST:PORT`` and ``ray://HOST:PORT`` a TCP connect is tried first: ray.init waits on an
    address nothing answers at for minutes, printing its own C++ log lines."""
    if address == "auto":
        return ""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "expected auto, HOST:PORT or ray://HOST:PORT"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})"
    return ""


def _available_ram_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def _env(extra: dict[str, str] | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIX) or k == "OMP_NUM_THREADS"}
    env.update(extra or {})
    return {"env_vars": env} if env else {}


def _unwrap(exc: BaseException) -> BaseException:
    """The runner's own exception out of Ray's wrapper, so callers see what `render` raises."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RenderError | Cancelled | StoryboardError):
            return cause
        return RenderError("stage_failed", f"{type(cause).__name__ if cause else 'task'} failed on a Ray "
                           f"worker: {cause or exc}")
    if isinstance(exc, ray.exceptions.RayActorError):
        return RenderError("worker_lost", f"a Ray stage actor died and could not be restarted: {exc}")
    return exc


@contextmanager
def _stage_actors(sb: Any, preset: str | None, job_id: str, emit: Emit, cancel: threading.Event,
                  address: str | None, actor_env: dict[str, dict[str, str]] | None, work: int,
                  finishers: int | None, helper_role: str = "finish",
                  upscale_frames: int = 0, take_frames: int = 0) -> Iterator[tuple[_Driver, Any, list[Any]]]:
    """Ray up, the event queue, a ready draft actor and the helpers beside it; all torn down after.

    Yields (driver, draft actor, helpers); helpers is ``[draft actor]`` when no other fits.
    ``upscale_frames``: the frames the helpers upscale in all; ``take_frames``: a take's, when
    they render takes (see :func:`upscale_shares`).
    """
    actor_env = actor_env or {}
    path = str(Path(sb.path).resolve())
    # OMP_NUM_THREADS set for this render is what a local render would use: pass it on.
    user_threads = "OMP_NUM_THREADS" in os.environ
    started = _init(address)
    queue_name = f"sulphur-{job_id}-events"
    d = _Driver(Queue(actor_options={"num_cpus": 0, "name": queue_name, "namespace": NAMESPACE}), emit, cancel)
    try:
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        card = ray.get(_card_gb.remote()) if gpus else 0.0
        single_node = sum(1 for n in ray.nodes() if n.get("Alive")) == 1
        host_gb = need_gb = None
        if single_node and gpus:
            # Every actor holds its own models in this node's RAM: split it (a cluster's nodes
            # differ; there each actor plans within what its node has free when it starts).
            host_gb = sb.project.ram_budget_gb or _available_ram_gb()
            vram = sb.project.vram_budget_gb or (card if gpus >= 2 else card / 2)
            need_gb = actor_host_need_gb(sb, preset, vram)
        if (finishers is None and 0 < gpus < 2 and not sb.project.vram_budget_gb
                and halving_slows(sb, preset, card)):
            finishers = 0  # one card too small to share: one actor with all of it, as a local render
        layout = plan_layout(gpus=gpus, cpus=float(resources.get("CPU", 1)), card_gb=card,
                             budget_gb=sb.project.vram_budget_gb, segments=work, finishers=finishers,
                             host_gb=host_gb, host_need_gb=need_gb)
        emit(protocol.Log(message=f"ray: {layout.describe()} on {gpus:g} GPU(s), {resources.get('CPU', 0):g} CPU(s)"))
        shared = shared_card_warning(gpus, layout, helper_role)
        if shared:
            emit(protocol.Log(level="warning", message=shared))

        def actor(role: str, i: int, gpu: float, share: float | None, ram: float | None, upscale: int,
                  sweep: bool = False) -> Any:
            handle = StageActor.options(
                name=f"sulphur-{job_id}-{role}-{i}", namespace=NAMESPACE, num_cpus=1, num_gpus=gpu,
                max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                runtime_env=_env(actor_env.get(role)),
            ).remote(path, preset, job_id, queue_name, role, share, sweep, user_threads, ram, upscale)
            d.actors.append(handle)
            return handle

        draft_frames, finish_frames = upscale_shares(upscale_frames, layout.finishers, take_frames=take_frames)
        drafter = actor("draft", 0, layout.draft_gpus, layout.draft_share_gb, layout.draft_ram_gb,
                        draft_frames, sweep=single_node)
        # The draft actor builds built-in models (tiny preset) first, so the others never race it.
        d.get([drafter.ready.remote()])
        helpers = [actor(helper_role, i, layout.finish_gpus, layout.finish_share_gb, layout.finish_ram_gb,
                         finish_frames) for i in range(layout.finishers)] or [drafter]
        yield d, drafter, helpers
    finally:
        for a in d.actors:
            ray.kill(a, no_restart=True)
        try:
            d.poll(0)
            d.events.shutdown()
        except Exception:  # pragma: no cover - Ray already going down
            pass
        if started:
            ray.shutdown()


def _drain_pool(d: _Driver, pool: ActorPool) -> list[Any]:
    """Every result of ``pool`` in completion order, emitting events meanwhile."""
    results = []
    while pool.has_next():
        d.poll()
        try:
            results.append(pool.get_next_unordered(timeout=0))
        except TimeoutError:
            continue
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            raise _unwrap(exc) from None
    return results


def _stamper(job_id: str, emit: Emit) -> Emit:
    def stamp(event: Event) -> None:
        event.job_id = job_id
        emit(event)
    return stamp


def render_ray(storyboard_path: str | os.PathLike[str], *, segments: Sequence[str] | None = None,
               from_segment: str | None = None, preset: str | None = None, emit: Emit = lambda e: None,
               cancel: threading.Event | None = None, job_id: str = "", models: Any = None,
               address: str | None = None, finishers: int | None = None,
               actor_env: dict[str, dict[str, str]] | None = None) -> Path:
    """Like :func:`pipeline.render.runner.render`, over Ray; returns ``final.mp4``.

    ``address``: None starts a local Ray (every GPU of this machine), ``auto`` joins the
    running cluster, ``ray://host:10001`` connects a client. ``models`` is ignored (the
    actors hold theirs). ``actor_env`` adds environment variables per role ("draft",
    "finish"). ``finishers``: finish actors beside the draft actor; None reads
    ``$SULPHUR_RAY_FINISHERS``, else the layout decides. If Ray is already initialised (a
    test, a notebook) it is used as is.
    """
    del models
    if finishers is None:  # the CLI's --finishers, else the environment's, else the layout's default
        finishers = finishers_setting()
    sb = load(storyboard_path)
    selected = select_segments(sb, segments, from_segment)
    ids = [s.id for s in sb.segments]
    last_needed = max(ids.index(s) for s in selected)
    check_references(sb, set(ids[:last_needed + 1]))  # every anchor usable before any actor starts
    refuse_blocked_folders(sb.path)
    # every shot's LoRAs here and fitting their model (and no LoRA or sound on a family without them)
    seg_jobs = RenderJob.resolve(sb, Overrides(preset=preset)).segment_jobs(selected)
    check_loras(seg_jobs)
    job_id = job_id or uuid.uuid4().hex[:12]
    stamp = _stamper(job_id, emit)
    t_job = time.perf_counter()
    stamp(protocol.JobStarted(storyboard=str(sb.path), segments=list(selected)))
    for line in rounded_lengths(seg_jobs):
        stamp(protocol.Log(message=line))
    upscale_frames = sum(j.frames for j in seg_jobs)  # as a local render's preflight counts them
    with (OutputLock.for_storyboard(sb, stamp, cancel) as lock,
          _stage_actors(sb, preset, job_id, stamp, cancel or threading.Event(), address, actor_env,
                        len(selected), finishers, upscale_frames=upscale_frames) as (d, drafter, finishers_)):
        complete, final = False, None
        try:
            # 1. Every draft, chained by object reference: Ray starts draft k+1 when draft k returns.
            chain = None
            jobs: dict[str, Any] = {}
            drafts: dict[str, Any] = {}
            for index in range(last_needed + 1):
                job, draft, chain = drafter.draft.remote(index, chain)
                jobs[ids[index]], drafts[ids[index]] = job, draft
            # 2. Each selected segment's refine → upscale → encode once its draft exists, on an idle finisher.
            pool = ActorPool(finishers_)
            for sid in selected:
                pool.submit(lambda a, v: a.finish.remote(*v), (jobs[sid], drafts[sid]))
            _drain_pool(d, pool)
            # 3. The film from every segment's cached stages (assemble only looks them up).
            artifacts = dict(zip(drafts, d.get(list(drafts.values())), strict=True))
            final = Path(d.get([finishers_[0].assemble.remote(artifacts)])[0])
            d.poll(0)
            complete = len(selected) == len(ids)  # only a whole film replaces the record
        finally:  # recorded like a local render's, so `sulphur cache --prune` keeps them
            after_render(sb, _used([drafter, *finishers_], failed=final is None), complete, stamp, lock)
    stamp(protocol.JobFinished(path=str(final), seconds=time.perf_counter() - t_job))
    return final


def render_takes(storyboard_path: str | os.PathLike[str], segment: str, seeds: Sequence[int], *,
                 preset: str | None = None, emit: Emit = lambda e: None, cancel: threading.Event | None = None,
                 job_id: str = "", address: str | None = None,
                 actor_env: dict[str, dict[str, str]] | None = None) -> dict[int, Path]:
    """Several takes (seeds) of one segment in parallel; returns {seed: MP4}.

    The segments before it are drafted once (cache hits after a render), its prompt is
    enhanced once, then every take drafts from the same anchor with its own seed and is
    finished on whichever actor is idle. Takes land in ``renders/<stem>/takes/<id>/``
    with ``takes.json``; :func:`pipeline.render.takes.pick_take` makes one the segment's.
    """
    sb = load(storyboard_path)
    index = segment_index(sb, segment)
    check_references(sb, {s.id for s in sb.segments[:index + 1]})  # as the local takes do, before Ray
    refuse_blocked_folders(sb.path)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    out_dir = sb.renders.takes(segment)
    job_id = job_id or uuid.uuid4().hex[:12]
    stamp = _stamper(job_id, emit)
    t_job = time.perf_counter()
    stamp(protocol.JobStarted(storyboard=str(sb.path), segments=[segment], seeds=seeds))
    # every take upscales the shot once, on whichever actor of the pool is idle
    frames = RenderJob.resolve(sb, Overrides(preset=preset)).segment_jobs([segment])[0].frames
    with (OutputLock.for_storyboard(sb, stamp, cancel) as lock,
          _stage_actors(sb, preset, job_id, stamp, cancel or threading.Event(), address, actor_env,
                        len(seeds) - 1, None, helper_role="take",
                        upscale_frames=frames * len(seeds), take_frames=frames) as (d, drafter, helpers)):
        text = None
        try:
            chain = None
            for i in range(index):
                _, _, chain = drafter.draft.remote(i, chain)
            prompt = drafter.prompt.remote(index)
            pool = ActorPool([drafter, *(h for h in helpers if h is not drafter)])
            for seed in seeds:
                pool.submit(lambda a, s: a.take.remote(index, chain, s, prompt, str(sb.renders.take(segment, s))),
                            seed)
            _drain_pool(d, pool)
            text = d.get([prompt])[0]
            d.poll(0)
            takes = {seed: sb.renders.take(segment, seed) for seed in seeds}
            record_takes(sb, segment, takes, text)  # under the lock, as a local takes job does
        finally:  # what the takes built is the storyboard's too (a picked take is its segment)
            after_render(sb, _used([drafter, *helpers], failed=text is None), False, stamp, lock)
    stamp(protocol.JobFinished(path=str(out_dir), seconds=time.perf_counter() - t_job))
    return takes


def _used(actors: Sequence[Any], *, failed: bool) -> set[str]:
    """Every cache entry the actors used, asked of all at once (their control lane answers
    beside a running stage). After a failure the others are told to stop first, as a cancel
    does. What a dead or silent actor used is not known: a later render builds it again if a
    prune took it. Never raises: the render's own outcome is what the caller reports."""
    used: set[str] = set()
    try:
        unique = list({id(a): a for a in actors}.values())
        if failed:
            for actor in unique:
                actor.cancel_now.remote()
        refs = [actor.used.remote() for actor in unique]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        for ref in ready:
            try:
                used.update(ray.get(ref))
            except ray.exceptions.RayError:
                pass  # that actor died
    except Exception:  # noqa: BLE001 - a lost connection: what was gathered is recorded
        pass
    return used


class _Driver:
    """The driver's side of one render: emits actors' events and passes a cancel on, once."""

    def __init__(self, events: Queue, emit: Emit, cancel: threading.Event) -> None:
        self.events, self.emit, self.cancel = events, emit, cancel
        self.actors: list[Any] = []
        self.cancel_sent = False

    def poll(self, timeout: float = 0.05) -> None:
        """Emit every queued event (waiting up to ``timeout`` for the first); pass on a cancel."""
        try:
            batch = [self.events.get(block=timeout > 0, timeout=timeout or None)]
            n = self.events.qsize()
            if n:
                batch += self.events.get_nowait_batch(n)
        except stdlib_queue.Empty:
            batch = []
        for event in batch:
            self.emit(event)
        if self.cancel.is_set() and not self.cancel_sent:
            self.cancel_sent = True  # the running stage of each actor raises Cancelled
            for a in self.actors:
                a.cancel_now.remote()

    def get(self, refs: list[Any]) -> list[Any]:
        """ray.get that keeps emitting events and honours a cancel meanwhile."""
        pending = list(refs)
        while pending:
            self.poll()
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
        try:
            return ray.get(refs)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            raise _unwrap(exc) from None


__all__ = ["Layout", "plan_layout", "render_ray", "render_takes", "StageActor"]

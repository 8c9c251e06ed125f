"""Mutation testing of Sulphur's core, one module at a time, with the tests that module has.

Not run in CI: it is slow (every mutant re-runs the module's tests). Each module is run in
its own copy of the checkout, with ``[tool.mutmut]`` rewritten to mutate only that module
and to select only its tests, so a module's mutants are never judged by the whole suite
(minutes) and the copies can be inspected afterwards (``cd <workdir>/<module>; mutmut show``).

Needs (all pure wheels; offline: ``pip install --no-index --find-links <wheels> mutmut==3.8.1``):
    mutmut==3.8.1 (libcst, coverage, click, rich, textual, setproctitle) and the project's own
    test dependencies (pytest, pytest-timeout, pytest-asyncio, msgspec, tomlkit, numpy, torch
    (the planner's OOM test), av (encode, film); diffusers for the slow stages/runner modules).

Usage:
    python bench/mutation.py -j 16 -m 2                     # the core modules (group "core", the default),
                                                            # two modules at a time, 8 children each
    python bench/mutation.py -j 2 wire storyboard           # some modules
    python bench/mutation.py -j 16 planner --mutants 'pipeline.memory.planner.x__refuse*'
                                                            # some mutants only (written to <module>_subset.json)
    timeout 570 python bench/mutation.py -j 16 -m 2 --resume slow
                                                            # stages + runner (~5,000 mutants, tiny-model runs
                                                            # in-process): repeat the call until it prints both
                                                            # modules' results (each call picks up where the
                                                            # last stopped)
    python bench/mutation.py --list                         # modules, their files and tests
    python bench/mutation.py --report bench/results/mutation_<date>.md --reasons bench/results/mutation_reasons.json

Modules and groups are listed under --help. ``-j`` is mutmut's ``--max-children``: mutants run
in that many forked pytest processes at once, so use the host's core count.

mutmut maps tests to mutants by tracing calls in the pytest process: code that only runs in a
child (``python -m pipeline.cli`` in the functional tests, ``encode_in_fresh_process``) counts as
"no tests" for the tests that spawn it, even though the child does run the mutant (the
MUTANT_UNDER_TEST variable is inherited and tests/functional/conftest.py's checkout_env puts the mutated copy
first on PYTHONPATH). Read "no tests" on the runner, encode and stages modules with that in mind.
The core encode/film modules are judged by unit tests that call the functions in-process.

Prints one JSON object per module (counts and kill rate) and writes
``<out>/<module>.json`` with every surviving mutant's name and diff, for the report
(``bench/results/mutation_<date>.md``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _pythonpath(dest: Path) -> str:
    """The copy first, then any PYTHONPATH already set (offline wheels unpacked with pip --target)."""
    rest = os.environ.get("PYTHONPATH", "")
    return str(dest) + (os.pathsep + rest if rest else "")


#: module -> (files mutmut mutates, the tests that judge them). Fast unit tests only, except
#: the "slow" group, which needs the tiny-model renders (16 cores).
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "wire": (["pipeline/wire/*"],
             ["tests/unit/test_wire.py", "tests/unit/test_cache_and_protocol.py"]),
    "storyboard": (["pipeline/project/storyboard.py"],
                   ["tests/unit/test_storyboard.py", "tests/unit/test_storyboard_bites.py",
                    "tests/unit/test_storyboard_checks.py", "tests/unit/test_storyboard_saves.py"]),
    "journal": (["pipeline/worker/journal.py"],
                ["tests/unit/test_journal.py", "tests/unit/test_journal_bites.py", "tests/unit/test_wire.py"]),
    "cache": (["pipeline/render/cache.py"],
              ["tests/unit/test_cache_and_protocol.py", "tests/unit/test_cache_bites.py",
               "tests/unit/test_cache_keys.py"]),
    # The stages' cache-key functions (params() and what it calls, ONLY below) and the job resolution
    # (the refusals of job.py, and the LoRA/track keys, are tested beside their features: those few, ~3 s).
    "keys": (["pipeline/stages/*", "pipeline/render/job.py"],
             ["tests/unit/test_cache_keys.py", "tests/unit/test_job_bites.py",
              "tests/unit/test_keyframes.py::test_other_families_refuse_the_keys_in_one_line",
              "tests/unit/test_ltx25.py::test_a_size_not_divisible_by_64_is_refused_in_one_line",
              "tests/unit/test_shot_loras_audio.py::"
              "test_the_lora_files_bytes_and_strength_reach_draft_and_refine_keys_its_name_does_not",
              "tests/unit/test_shot_loras_audio.py::test_the_tracks_bytes_and_start_reach_the_draft_key"]),
    "planner": (["pipeline/memory/planner.py"],
                ["tests/unit/test_memory.py", "tests/unit/test_planner_bites.py", "tests/unit/test_planner_bites2.py",
                 # the ladder tests of this file, not the ones that load the tiny models (30 s+)
                 "tests/unit/test_text_encoder_keep.py::test_the_planner_keeps_the_encoder_when_it_fits_beside_the_rest",
                 "tests/unit/test_text_encoder_keep.py::test_with_too_little_host_for_everything_a_ram_resident_encoder_is_evicted",
                 "tests/unit/test_text_encoder_keep.py::test_the_cpu_plan_keeps_it_and_the_lean_rung_does_not",
                 "tests/unit/test_planner_choices.py"]),
    # PyAV on tiny synthetic frames (about a minute for the whole selection on one core).
    "encode": (["pipeline/stages/encode.py"],
               ["tests/unit/test_encode.py", "tests/unit/test_encode_bites.py", "tests/unit/test_encode_mp4_as_probed.py",
                "tests/unit/test_film.py", "tests/unit/test_cache_keys.py",
                # it runs the encoder child from another folder, where mutmut's trampoline finds no config
                "--deselect", "tests/unit/test_encode_mp4_as_probed.py::"
                "test_the_encoder_child_imports_this_checkout_and_keeps_the_callers_path"]),  # the encode key (params)
    "film": (["pipeline/render/film.py"], ["tests/unit/test_film.py"]),
    # The slow group: the stages and the runner judged by tests that run them in this process on
    # the tiny models (mutmut only sees code the pytest process runs: the CLI end-to-end tests,
    # which render in a child, would leave every mutant "no tests"). Seconds to a minute per
    # mutant; encode, cache and film are their own modules above.
    "stages": ([f"pipeline/stages/{f}.py" for f in ("base", "conditions", "draft", "enhance", "family_draft",
                                                     "frame_files", "grade", "latent_preview", "phase_peaks", "prompt_embeds",
                                                     "refine", "resize_refine", "retake", "upscale")],
               ["tests/functional/test_draft_refine.py", "tests/unit/test_upscale.py", "tests/unit/test_drift.py",
                "tests/unit/test_enhancer.py", "tests/unit/test_keyframes.py", "tests/unit/test_sigmas.py",
                "tests/unit/test_shot_loras_audio.py", "tests/unit/test_cache_keys.py", "tests/unit/test_phase_peaks.py",
                "tests/unit/test_frames_on_device.py",
                # in-process renders: the only callers of GradeStage.run, the retake, family and
                # prompt-embedding stages (a subset run of grade.py left its run() "no tests" without them)
                "tests/functional/test_drift_guard_e2e.py", "tests/functional/test_retake.py",
                "tests/functional/test_families.py", "tests/functional/test_prompt_embeds.py",
                "tests/functional/test_keyframes.py"]),
    "runner": ([f"pipeline/render/{f}.py" for f in ("runner", "job", "extend", "fallback", "takes", "outputs",
                                                     "usage", "errors", "lora_audio")],
               ["tests/unit/test_fallback.py", "tests/unit/test_cache_keys.py", "tests/functional/test_outputs.py",
                "tests/functional/test_retake.py", "tests/functional/test_mixed_presets.py",
                "tests/functional/test_shot_loras_audio.py", "tests/functional/test_drift_guard_e2e.py",
                "tests/functional/test_prompt_embeds.py", "tests/functional/test_families.py"]),
}

#: Modules whose files hold much more than their tests aim at: only these mutants are run and
#: counted (mutmut names, globs). "keys" mutates pipeline/stages/* for the cache-key functions only.
ONLY: dict[str, list[str]] = {
    "keys": ["pipeline.stages.*ǁparams__mutmut_*", "pipeline.stages.*ǁcondition_params__mutmut_*",
             "pipeline.stages.*ǁseed__mutmut_*", "pipeline.stages.*.x_shot_control_params__mutmut_*",
             "pipeline.stages.*.x_model_identity__mutmut_*", "pipeline.stages.*.x_image_to_video__mutmut_*",
             "pipeline.stages.*.x__mmproj__mutmut_*", "pipeline.stages.*.x__mode__mutmut_*",
             "pipeline.stages.*.x__max_tokens__mutmut_*", "pipeline.stages.*.x__roles__mutmut_*",
             "pipeline.stages.*.x_span__mutmut_*", "pipeline.stages.*.x_repeats_anchor__mutmut_*",
             "pipeline.render.job.*"],
}

#: Names that stand for several modules on the command line.
GROUPS: dict[str, list[str]] = {
    "core": ["wire", "storyboard", "journal", "cache", "keys", "planner", "encode", "film"],
    "slow": ["stages", "runner"],
    "all": list(MODULES),
}

#: What each copy carries besides the mutated package.
ALSO_COPY = ["tests", "pyproject.toml", "storyboards", "sulphur_tui", "bench"]


def _checkout_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def _copy_checkout(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for rel in _checkout_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _write_config(dest: Path, mutate: list[str], tests: list[str]) -> None:
    """Replace the [tool.mutmut] section of the copy's pyproject with one scoped to a module."""
    py = dest / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", py.read_text(), flags=re.S)
    text += ("\n[tool.mutmut]\n"
             'source_paths = ["pipeline"]\n'
             f"only_mutate = {_toml_list(mutate)}\n"
             f"also_copy = {_toml_list(ALSO_COPY)}\n"
             f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not gpu"]\n')
    py.write_text(text)


def _mutmut(dest: Path, *args: str, log: Path | None = None) -> str:
    # The copy first on the path: the editable install may point at another checkout.
    env = dict(os.environ, PYTHONPATH=_pythonpath(dest), SULPHUR_TEST_HOME=os.environ.get("SULPHUR_TEST_HOME", ""))
    if not env["SULPHUR_TEST_HOME"]:
        env.pop("SULPHUR_TEST_HOME")
    # pytest's temporary folders inside the copy, removed after each call: a forked child that
    # is killed leaves its lock behind, and pytest keeps a locked folder for three days (tens
    # of GB over one full run once filled the disk that CI ran on).
    temp_root = dest / ".pytest-tmp"
    temp_root.mkdir(exist_ok=True)
    env["PYTEST_DEBUG_TEMPROOT"] = str(temp_root)
    # Its own session: a timeout that ends this script ends mutmut and its forked children too
    # (an orphan would go on writing verdicts into the copy that --resume picks up).
    proc = subprocess.Popen([sys.executable, "-m", "mutmut", *args], cwd=dest, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    _LIVE.add(proc)
    try:
        out, err = proc.communicate()
    finally:
        _LIVE.discard(proc)
        shutil.rmtree(temp_root, ignore_errors=True)
    if log is not None:
        log.write_text(out + err)
    return out


#: mutmut processes running now, ended with their process groups when this script is told to stop.
_LIVE: set[subprocess.Popen] = set()


def _stop(signum: int, _frame: object) -> None:
    for proc in list(_LIVE):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(128 + signum)  # now: the worker threads wait on the processes just killed


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name) for name in json.load(sys.stdin)}))
"""


def _diffs(dest: Path, names: list[str]) -> dict[str, str]:
    """Each mutant's diff, in one process (``mutmut show`` starts one per mutant)."""
    proc = subprocess.run([sys.executable, "-c", _DIFFS], cwd=dest, input=json.dumps(names), text=True,
                          capture_output=True, env=dict(os.environ, PYTHONPATH=_pythonpath(dest)))
    if proc.returncode:
        return {n: _mutmut(dest, "show", n) for n in names}
    return json.loads(proc.stdout)


def run_module(name: str, workdir: Path, out: Path, jobs: int, mutants: list[str] | None = None,
               resume: bool = False) -> dict:
    """Mutate one module in its own copy and judge it by its tests; ``mutants``: only these (globs).
    ``resume``: reuse the copy a timed-out run left (mutmut keeps each verdict as it goes and
    skips the mutants that have one), so a long module can run over several calls."""
    mutate, tests = MODULES[name]
    # pytest options (``--deselect``) pass as they are; a test file not in this checkout is dropped
    tests = [t for t in tests if t.startswith("-") or (ROOT / t.split("::")[0]).exists()]
    dest = workdir / name
    if not (resume and (dest / "mutants").is_dir()):
        _copy_checkout(dest)
        _write_config(dest, mutate, tests)
    t0 = time.perf_counter()
    stem = name + ("_subset" if mutants else "")
    mutants = mutants or ONLY.get(name)
    _mutmut(dest, "run", "--max-children", str(jobs), *(mutants or []), log=out / f"{stem}.log")
    listing = _mutmut(dest, "results", "--all", "true")
    status: dict[str, str] = {}
    for line in listing.splitlines():
        key, _, state = line.strip().rpartition(": ")
        if key and (not mutants or any(fnmatch.fnmatchcase(key, m) for m in mutants)):
            status[key] = state
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = _diffs(dest, [k for k, s in status.items() if s in ("survived", "no tests")])
    judged = sum(n for s, n in counts.items() if s in ("killed", "survived", "timeout", "no tests"))
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    if counts.get("not checked") == len(status):  # mutmut's first pass of the tests failed: say why
        sys.stderr.write(f"{name}: no mutant checked; see {out / (stem + '.log')}\n")
    summary = {"module": name, "files": mutate, "tests": tests, "mutants": len(status), "counts": counts,
               "kill_rate": round(killed / judged, 3) if judged else None,
               "seconds": round(time.perf_counter() - t0, 1), "jobs": jobs}
    (out / f"{stem}.json").write_text(json.dumps({**summary, "survivors": survivors}, indent=1))
    return summary


#: Survivors recognised by their diff, with the reason they need no test (equivalent mutants).
EQUIVALENT = [
    (re.compile(r'^[-+].*"(?:PRAGMA|SELECT|INSERT|UPDATE|WHERE|ALTER|pragma|select|insert|update|where|alter)\b',
                re.M),
     "equivalent: SQL keywords and column names are case-insensitive"),
]


#: In a report, the line below which --report rewrites the file; what is above it is kept
#: (the hand-written method, the named mutants of issue 24, findings).
MARKER = "<!-- generated by bench/mutation.py --report: everything below is rewritten -->"


def _survivor_line(name: str, diff: str, why: str) -> str:
    change = " → ".join(x[1:].strip() for x in diff.splitlines()
                        if x[:1] in "+-" and not x.startswith(("+++", "---")))[:160]
    return f"- `{name.rsplit('.', 1)[-1]}`: `{change}` — {why or 'TODO: no reason yet'}"


def report(out: Path, reasons: dict[str, str]) -> str:
    """Markdown: kill rate per module, then every survivor with its one-line reason."""
    lines = ["| module | mutants | killed | survived | no tests | equivalent | no reason yet | kill rate | "
             "kill rate w/o equivalent | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    body = []
    # <module>.json only: not the --mutants subsets, nor earlier runs kept under another name
    for path in sorted((p for p in out.glob("*.json") if p.stem in MODULES), key=lambda p: list(MODULES).index(p.stem)):
        data = json.loads(path.read_text())
        c = data["counts"]
        if c.get("not checked") == data["mutants"]:
            lines.append(f"| {data['module']} | {data['mutants']} | – | – | – | – | – | not checked: mutmut's "
                         f"first pass of the tests failed ({path.stem}.log) | | {data['seconds']} |")
            continue
        killed = c.get("killed", 0) + c.get("timeout", 0) + c.get("suspicious", 0)
        judged = data["mutants"] - c.get("skipped", 0)
        why = {k: reasons.get(k) or next((r for rx, r in EQUIVALENT if rx.search(d)), "") for k, d in
               data["survivors"].items()}
        eq = sum(1 for r in why.values() if r.startswith("equivalent"))
        todo = sum(1 for r in why.values() if not r)
        lines.append(f"| {data['module']} | {data['mutants']} | {killed} | {c.get('survived', 0)} | "
                     f"{c.get('no tests', 0)} | {eq} | {todo} | {killed / judged:.1%} | "
                     f"{killed / (judged - eq):.1%} | {data['seconds']} |")
        body += [f"\n### {data['module']} ({', '.join(data['files'])})\n", f"Tests: {', '.join(data['tests'])}\n"]
        body += [_survivor_line(k, d, why[k]) for k, d in data["survivors"].items()]
    return "\n".join(lines + body) + "\n"


def write_report(target: Path, out: Path, reasons: dict[str, str]) -> None:
    """Rewrite ``target`` below :data:`MARKER` (all of it when the marker is absent)."""
    head = target.read_text().split(MARKER)[0] if target.exists() and MARKER in target.read_text() else ""
    target.write_text(head + MARKER + "\n\n" + report(out, reasons))


def _epilog() -> str:
    lines = ["modules (files mutated <- the tests that judge them):"]
    for name, (mutate, tests) in MODULES.items():
        lines.append(f"  {name:10} {' '.join(mutate)}")
        if name in ONLY:
            lines.append(f"  {'':10}   only the mutants {' '.join(ONLY[name])}")
        lines.append(f"  {'':10}   <- {' '.join(tests)}")
    lines.append("groups:")
    lines += [f"  {g:10} {' '.join(ms)}" for g, ms in GROUPS.items()]
    lines.append("a 16-core host, every core module: python bench/mutation.py -j 16 -m 2 core")
    return "\n".join(lines)


def _modules(names: list[str]) -> list[str]:
    """Module names in the order given, groups expanded, each once; exits naming an unknown one."""
    out: list[str] = []
    for n in names or ["core"]:
        if n not in MODULES and n not in GROUPS:
            sys.exit(f"unknown module {n!r}; known: {', '.join(MODULES)}; groups: {', '.join(GROUPS)}")
        out += [m for m in GROUPS.get(n, [n]) if m not in out]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, epilog=_epilog(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules or groups (default: core)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="mutants run at once (mutmut --max-children; default: every core)")
    ap.add_argument("-m", "--modules-at-once", type=int, default=1, metavar="K",
                    help="run K modules side by side, each with JOBS/K children (each module starts with a "
                         "serial pass of its tests, so K=2 keeps 16 cores busier)")
    ap.add_argument("--mutants", nargs="+", metavar="GLOB",
                    help="run only these mutants (mutmut names, globs allowed); results go to <module>_subset.json")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sulphur-mutation"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mutation")
    ap.add_argument("--resume", action="store_true",
                    help="continue in the copies a timed-out run left in --workdir (the slow group needs several "
                         "10-minute calls)")
    ap.add_argument("--list", action="store_true", help="print the modules, their files and tests")
    ap.add_argument("--report", type=Path, help="write a markdown report of --out's results to this file")
    ap.add_argument("--reasons", type=Path, help="JSON {mutant name: one-line reason} for the report")
    args = ap.parse_args()
    if args.report:
        reasons = json.loads(args.reasons.read_text()) if args.reasons else {}
        write_report(args.report, args.out, reasons)
        return
    if args.list:
        print(_epilog())
        return
    modules = _modules(args.modules)
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)  # `timeout` sends it
    signal.signal(signal.SIGINT, _stop)
    at_once = max(1, min(args.modules_at_once, len(modules)))
    jobs = max(1, args.jobs // at_once)
    with ThreadPoolExecutor(at_once) as pool:  # each module is its own mutmut process; threads only wait
        runs = [pool.submit(run_module, name, args.workdir, args.out, jobs, args.mutants, args.resume)
                for name in modules]
        for run in runs:
            print(json.dumps(run.result()), flush=True)


if __name__ == "__main__":
    main()

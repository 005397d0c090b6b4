"""Run Stockade's model scanner beside ModelAudit, picklescan, ModelScan and fickling on
one labelled corpus: detection, false positives, scan errors, wall time, and MB/s on large files.

Run `python bench/model_scan/run.py [--json FILE]` after `bash bench/model_scan/setup_peers.sh`;
README.md beside it explains each number. Only standard library here: every tool runs as
its own process (Stockade from the project's .venv, the peers from bench/.peers/).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Throughput", "ToolRun", "Verdict", "main"]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEERS_VENV = ROOT / "bench" / ".peers" / "venv"
MODELSCAN_VENV = ROOT / "bench" / ".peers" / "modelscan-venv"
PROJECT_VENV = ROOT / ".venv"
DEFAULT_CORPUS = ROOT / "bench" / "out" / "model_corpus"
DEFAULT_LARGE = ROOT / "bench" / "out" / "model_large"
TOOLS = ("stockade", "stockade-j1", "modelaudit", "picklescan", "modelscan", "fickling")
LARGE_TOOLS = ("stockade", "picklescan", "modelaudit")
MB = 1_000_000
# Keep the peers offline and quiet: no telemetry, no hub look-ups, no progress bars; Keras
# on the torch backend in bench/.peers/venv, which has no TensorFlow (modelscan-venv does).
PEER_ENV = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "KERAS_BACKEND": "torch",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "NO_COLOR": "1",
    "TERM": "dumb",
}
# A boundary after a file path inside a tool's location text: "f.pt:archive/data.pkl",
# "f.pkl (pos 28)", "dir/f.zip!/inner", or the path alone.
_BOUNDARY = set(":/ !([#")


# -- records ----------------------------------------------------------------------------


@dataclass
class Verdict:
    """What one tool said about one file (or, aggregated, one sample)."""

    flagged: bool = False
    error: bool = False
    notes: list[str] = field(default_factory=list)

    def merge(self, other: Verdict) -> None:
        self.flagged |= other.flagged
        self.error |= other.error
        self.notes += other.notes


@dataclass
class ToolRun:
    """One tool over the whole corpus directory."""

    tool: str
    version: str
    command: list[str]
    wall_s: float | None
    exit_code: int | None
    files: dict[str, Verdict]
    problem: str = ""  # why the directory run did not give per-file results, if it did not
    fallback: str = ""  # how per-file results were obtained instead
    fallback_s: float | None = None  # and how long that took
    wall_note: str = ""  # set when wall_s comes from a rerun that compares (see picklescan)


@dataclass(frozen=True)
class Throughput:
    """One tool on one large file: best wall time of `repeat` runs."""

    tool: str
    kind: str
    path: str
    size: int
    wall_s: float | None
    verdict: str
    note: str = ""

    @property
    def mb_per_s(self) -> float | None:
        return self.size / MB / self.wall_s if self.wall_s else None


# -- helpers ----------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _env(executable: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PEER_ENV)
    env.pop("CI", None)
    if executable.startswith(str(MODELSCAN_VENV)):
        env.pop("KERAS_BACKEND")
    return env


def _run(
    command: Sequence[str], timeout: float, cwd: Path | None = None, log: Path | None = None
) -> tuple[int | None, str, float]:
    """Run a command; returns (exit code or None on timeout, stdout+stderr, wall seconds).
    With `log`, the output is also kept there."""
    code, output, wall = _run_quiet(command, timeout, cwd)
    if log is not None:
        log.write_text(f"$ {' '.join(command)}\n# exit {code}, {wall:.3f} s\n{output}")
    return code, output, wall


def _run_quiet(
    command: Sequence[str], timeout: float, cwd: Path | None
) -> tuple[int | None, str, float]:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(command[0]),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode(errors="replace") if exc.output else ""
        return None, output, time.perf_counter() - started
    return proc.returncode, proc.stdout.decode(errors="replace"), time.perf_counter() - started


def _version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


class Files:
    """The corpus files, and attribution of a tool's location text to one of them."""

    def __init__(self, corpus: Path, labels: dict[str, Any]) -> None:
        self.corpus = corpus.resolve()
        self.samples = labels["samples"]
        self.sample_of: dict[str, dict[str, Any]] = {}
        for sample in self.samples:
            for name in sample["files"]:
                self.sample_of[name] = sample
        self._by_abs = {str(self.corpus / name): name for name in self.sample_of}
        self._longest_first = sorted(self._by_abs, key=len, reverse=True)

    def attribute(self, text: str) -> str | None:
        """The corpus file a location string names (longest path at a boundary), or None."""
        text = text.strip()
        if not text:
            return None
        if not os.path.isabs(text):
            text = str(self.corpus / text)
        for path in self._longest_first:
            if text.startswith(path) and (len(text) == len(path) or text[len(path)] in _BOUNDARY):
                return self._by_abs[path]
        return None


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- per-tool runners -------------------------------------------------------------------


def _modelscan_bin() -> Path:
    """ModelScan's own venv (numpy<2, TensorFlow) when setup_peers.sh made it."""
    own = MODELSCAN_VENV / "bin"
    return own if (own / "modelscan").exists() else PEERS_VENV / "bin"


def _stockade_registered(python: Path) -> int:
    code = "from stockade.model.scan.formats import FORMAT_MODULES as m; print(len(m))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"cannot import stockade from {python}: {out.stderr.strip()[-300:]}")
    return int(out.stdout.strip())


def stockade_verdicts(report: dict[str, Any], files: Files) -> dict[str, Verdict]:
    found: dict[str, Verdict] = defaultdict(Verdict)
    for item in report.get("findings", ()):
        name = files.attribute(item["location"].get("path") or "")
        if name is None:
            continue
        if item["severity"] in ("medium", "high", "critical"):
            found[name].flagged = True
            found[name].notes.append(f"{item['rule_id']} {item['severity']}: {item['title']}")
    for item in report.get("errors", ()):
        name = files.attribute(item["location"].get("path") or "")
        if name is not None:
            found[name].error = True
            found[name].notes.append(f"error: {item.get('detail') or item['title']}")
    return dict(found)


def run_stockade(files: Files, jobs: int | None, timeout: float, scratch: Path) -> ToolRun:
    exe = PROJECT_VENV / "bin" / "stockade"
    report = scratch / f"stockade-{jobs or 'auto'}.json"
    command = [str(exe), "model", "scan", str(files.corpus), "--format", "json", "-o", str(report)]
    if jobs:
        command += ["--jobs", str(jobs)]
    tool = "stockade-j1" if jobs == 1 else "stockade"
    code, output, wall = _run(command, timeout, log=scratch / f"{tool}.out")
    version = _version(PROJECT_VENV / "bin" / "python", "stockade")
    if code is None or not report.exists():
        problem = (
            "timed out" if code is None else f"exit {code}, no report: {output.strip()[-300:]}"
        )
        return ToolRun(tool, version, command, wall, code, {}, problem)
    return ToolRun(
        tool, version, command, wall, code, stockade_verdicts(json.loads(report.read_text()), files)
    )


_MODELAUDIT_ERROR_KEYS = ("parsing_failed", "analysis_incomplete", "scan_error", "exception_type")


def modelaudit_verdicts(report: dict[str, Any], files: Files) -> dict[str, Verdict]:
    found: dict[str, Verdict] = defaultdict(Verdict)
    for issue in report.get("issues", ()):
        details = issue.get("details") or {}
        name = None
        for key in ("path", "pickle_source", "file_path", "zip_file"):
            if isinstance(details.get(key), str):
                name = files.attribute(details[key])
                if name:
                    break
        if name is None:
            name = files.attribute(str(issue.get("location") or ""))
        if name is None:
            continue
        severity = str(issue.get("severity", "")).lower()
        message = str(issue.get("message", ""))
        is_error = any(details.get(k) for k in _MODELAUDIT_ERROR_KEYS) or details.get(
            "category"
        ) in ("parse_error", "scan_error", "timeout")
        if is_error:
            found[name].error = True
            found[name].notes.append(f"error ({severity}): {message}")
        elif severity in ("critical", "warning"):
            found[name].flagged = True
            found[name].notes.append(f"{issue.get('rule_code', '')} {severity}: {message}")
    return dict(found)


def run_modelaudit(files: Files, timeout: float, scratch: Path) -> ToolRun:
    report = scratch / "modelaudit.json"
    command = [
        str(PEERS_VENV / "bin" / "modelaudit"),
        "scan",
        str(files.corpus),
        "--format",
        "json",
        "--output",
        str(report),
        "--no-cache",
    ]
    code, output, wall = _run(command, timeout, log=scratch / "modelaudit.out")
    version = _version(PEERS_VENV / "bin" / "python", "modelaudit")
    if code is None or not report.exists():
        problem = (
            "timed out" if code is None else f"exit {code}, no report: {output.strip()[-300:]}"
        )
        return ToolRun("modelaudit", version, command, wall, code, {}, problem)
    return ToolRun(
        "modelaudit",
        version,
        command,
        wall,
        code,
        modelaudit_verdicts(json.loads(report.read_text()), files),
    )


_PICKLESCAN_FOUND = re.compile(
    r"^(?P<where>.+?): (?P<level>dangerous) import '(?P<ref>[^']*)' FOUND"
)
_PICKLESCAN_ERRORS = (
    re.compile(r"^ERROR: parsing pickle in (?P<where>.+?): "),
    re.compile(r"^Invalid file (?P<member>.+?) in zip archive (?P<where>.+?): "),
    re.compile(r"^ERROR: .*? (?P<where>/\S+)"),
)


def picklescan_verdicts(output: str, files: Files) -> dict[str, Verdict]:
    found: dict[str, Verdict] = defaultdict(Verdict)
    for line in output.splitlines():
        match = _PICKLESCAN_FOUND.match(line)
        if match:
            name = files.attribute(match["where"])
            if name:
                found[name].flagged = True
                found[name].notes.append(f"dangerous {match['ref']}")
            continue
        for pattern in _PICKLESCAN_ERRORS:
            match = pattern.match(line)
            if match:
                name = files.attribute(match["where"])
                if name:
                    found[name].error = True
                    found[name].notes.append(line.strip()[:200])
                break
    return dict(found)


def _per_file(
    files: Files,
    command_for: Callable[[str], list[str]],
    parse: Callable[[str], dict[str, Verdict]],
    timeout: float,
) -> dict[str, Verdict]:
    """Fallback when a directory run dies part-way: one process per file."""
    found: dict[str, Verdict] = {}
    for name in sorted(files.sample_of):
        code, output, _ = _run(command_for(str(files.corpus / name)), timeout)
        verdict = parse(output).get(name, Verdict())
        if code is None:
            verdict.error = True
            verdict.notes.append("timed out")
        elif "Unhandled exception" in output or "Traceback (most recent call last)" in output:
            verdict.error = True
            verdict.notes.append("crashed: " + output.strip().splitlines()[-1][:200])
        found[name] = verdict
    return found


def run_picklescan(files: Files, timeout: float, per_file_timeout: float, scratch: Path) -> ToolRun:
    exe = str(PEERS_VENV / "bin" / "picklescan")
    command = [exe, "-p", str(files.corpus)]
    code, output, wall = _run(command, timeout, log=scratch / "picklescan.out")
    version = _version(PEERS_VENV / "bin" / "python", "picklescan")
    run = ToolRun("picklescan", version, command, wall, code, picklescan_verdicts(output, files))
    if code is None or "Unhandled exception" in output:
        last = output.strip().splitlines()[-1] if output.strip() else ""
        run.problem = "timed out" if code is None else f"directory scan aborted: {last[:200]}"
        run.fallback = "one picklescan process per file"
        began = time.perf_counter()
        run.files = _per_file(
            files,
            lambda p: [exe, "-p", p],
            lambda out: picklescan_verdicts(out, files),
            per_file_timeout,
        )
        run.fallback_s = time.perf_counter() - began
        # For a wall time that compares, scan the folder again leaving out what it dies on.
        crashed = [n for n, v in run.files.items() if any("crashed" in x for x in v.notes)]
        if code is not None and crashed:
            excludes = [a for n in crashed for a in ("--exclude", re.escape(str(files.corpus / n)))]
            again, output, rerun_wall = _run(
                [*command, *excludes], timeout, log=scratch / "picklescan-excluding.out"
            )
            if again is not None and "Unhandled exception" not in output:
                run.wall_s = rerun_wall
                run.wall_note = f"rerun without the {len(crashed)} file(s) it dies on"
    return run


def modelscan_verdicts(report: dict[str, Any], files: Files) -> dict[str, Verdict]:
    found: dict[str, Verdict] = defaultdict(Verdict)
    base = report.get("summary", {}).get("absolute_path") or str(files.corpus)
    for issue in report.get("issues") or ():
        source = str(issue.get("source", ""))
        name = files.attribute(source if os.path.isabs(source) else os.path.join(base, source))
        if name:
            found[name].flagged = True
            found[name].notes.append(f"{issue.get('severity')}: {issue.get('description')}")
    for error in report.get("errors") or ():
        source = str(error.get("source", ""))
        name = files.attribute(source if os.path.isabs(source) else os.path.join(base, source))
        if name:
            found[name].error = True
            found[name].notes.append(f"error: {error.get('description')}")
    return dict(found)


def run_modelscan(files: Files, timeout: float, scratch: Path) -> ToolRun:
    report = scratch / "modelscan.json"
    command = [
        str(_modelscan_bin() / "modelscan"),
        "scan",
        "-p",
        str(files.corpus),
        "-r",
        "json",
        "-o",
        str(report),
    ]
    # Run from the scratch folder: modelscan looks for ./modelscan-settings.toml.
    code, output, wall = _run(command, timeout, cwd=scratch, log=scratch / "modelscan.out")
    version = _version(_modelscan_bin() / "python", "modelscan")
    if code is None or not report.exists():
        problem = (
            "timed out" if code is None else f"exit {code}, no report: {output.strip()[-300:]}"
        )
        return ToolRun("modelscan", version, command, wall, code, {}, problem)
    return ToolRun(
        "modelscan",
        version,
        command,
        wall,
        code,
        modelscan_verdicts(json.loads(report.read_text()), files),
    )


# fickling has no directory mode; this applies, file by file, the rules its own CLI uses for
# a Hugging Face repository (zip archives member by member, pickles whole, others skipped).
FICKLING_DRIVER = r"""
import json, os, sys
from fickling.analysis import Severity
from fickling.loader import scan_file, scan_zip_archive
from fickling.polyglot import find_file_properties

ZIP_EXT = {".pt", ".pth"}
PICKLE_EXT = {".bin", ".pkl", ".pickle"}
out = []
for base, dirs, names in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(names):
        path = os.path.join(base, name)
        ext = os.path.splitext(name)[1].lower()
        rec = {"path": path, "flagged": False, "errors": [], "skipped": False, "notes": []}
        try:
            props = find_file_properties(path)
            if props["is_torch_zip"] or props["is_standard_zip"] or ext in ZIP_EXT:
                results = list(scan_zip_archive(path, graceful=True).values())
            elif props["is_valid_pickle"] or ext in PICKLE_EXT:
                results = [scan_file(path, graceful=True)]
            else:
                rec["skipped"] = True
                results = []
            for result in results:
                for analysis in result.results:
                    if analysis.severity > Severity.LIKELY_SAFE:
                        rec["flagged"] = True
                        rec["notes"].append(analysis.severity.name)
                rec["errors"] += result.errors
        except Exception as exc:
            rec["errors"].append(f"{type(exc).__name__}: {exc}"[:300])
        out.append(rec)
json.dump(out, sys.stdout)
"""


def run_fickling(files: Files, timeout: float, scratch: Path) -> ToolRun:
    driver = scratch / "fickling_driver.py"
    driver.write_text(FICKLING_DRIVER)
    command = [str(PEERS_VENV / "bin" / "python"), str(driver), str(files.corpus)]
    code, output, wall = _run(command, timeout, cwd=scratch, log=scratch / "fickling.out")
    version = _version(PEERS_VENV / "bin" / "python", "fickling")
    start = output.find("[")
    if code is None or code != 0 or start < 0:
        problem = "timed out" if code is None else f"exit {code}: {output.strip()[-300:]}"
        return ToolRun("fickling", version, command, wall, code, {}, problem)
    found: dict[str, Verdict] = {}
    for rec in json.loads(output[start:]):
        name = files.attribute(rec["path"])
        if name:
            notes = sorted(set(rec["notes"])) + [f"error: {e}" for e in rec["errors"]]
            notes += ["skipped (not a pickle or zip)"] if rec["skipped"] else []
            found[name] = Verdict(rec["flagged"], bool(rec["errors"]), notes)
    return ToolRun("fickling", version, command, wall, code, found)


# -- scoring ----------------------------------------------------------------------------


def score(run: ToolRun, files: Files) -> dict[str, Any]:
    """Per-sample verdicts (a sample is flagged when any of its files is) and the totals."""
    per_sample: dict[str, Verdict] = {}
    for sample in files.samples:
        verdict = Verdict()
        for name in sample["files"]:
            if name in run.files:
                verdict.merge(run.files[name])
        per_sample[sample["id"]] = verdict
    totals: dict[str, Any] = {}
    for label in ("malicious", "benign"):
        ids = [s["id"] for s in files.samples if s["label"] == label]
        totals[label] = {
            "total": len(ids),
            "flagged": sum(per_sample[i].flagged for i in ids),
            "errors": sum(per_sample[i].error for i in ids),
            "errors_only": sum(per_sample[i].error and not per_sample[i].flagged for i in ids),
        }
    families: dict[str, Counter[str]] = defaultdict(Counter)
    for sample in files.samples:
        key = f"{sample['label']}/{sample['family']}"
        families[key]["total"] += 1
        families[key]["flagged"] += per_sample[sample["id"]].flagged
        families[key]["errors_only"] += (
            per_sample[sample["id"]].error and not per_sample[sample["id"]].flagged
        )
    missed = [
        s["id"]
        for s in files.samples
        if s["label"] == "malicious" and not per_sample[s["id"]].flagged
    ]
    false_positives = [
        s["id"] for s in files.samples if s["label"] == "benign" and per_sample[s["id"]].flagged
    ]
    return {
        "totals": totals,
        "families": {k: dict(v) for k, v in families.items()},
        "missed": missed,
        "false_positives": false_positives,
        "samples": {i: dataclasses.asdict(v) for i, v in per_sample.items()},
    }


# -- large files ------------------------------------------------------------------------


def _warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


def _large_command(tool: str, path: Path, report: Path) -> list[str]:
    """The command that scans one file; tools with a report file write it to `report`."""
    peers = PEERS_VENV / "bin"
    stockade = str(PROJECT_VENV / "bin" / "stockade")
    commands = {
        "stockade": [stockade, "model", "scan", str(path), "--format", "json", "-o", str(report)],
        "picklescan": [str(peers / "picklescan"), "-p", str(path)],
        "modelaudit": [
            *(str(peers / "modelaudit"), "scan", str(path), "--format", "json"),
            *("--output", str(report), "--no-cache"),
        ],
        "modelscan": [
            *(str(_modelscan_bin() / "modelscan"), "scan", "-p", str(path)),
            *("-r", "json", "-o", str(report)),
        ],
        "fickling": [
            *(str(peers / "fickling"), "--check-safety", "--json-output", str(report)),
            str(path),
        ],
    }
    return commands[tool]


def _large_verdict(tool: str, code: int | None, output: str, report: Path) -> tuple[str, str]:
    """A short verdict on a benign file: clean / flagged / error / not inspected, and why."""
    if code is None:
        return "timed out", ""
    if tool == "stockade":
        data = json.loads(report.read_text())
        flagged = [f for f in data["findings"] if f["severity"] in ("medium", "high", "critical")]
        if data["errors"]:
            return "error", data["errors"][0].get("detail", "")[:120]
        if flagged:
            return "flagged", flagged[0]["title"][:120]
        if any(f["rule_id"] == "STK-MS-000" for f in data["findings"]):
            return "not inspected", "no format scanner recognised it"
        return "clean", ""
    if tool == "picklescan":
        if "could not parse" in output:
            return "not inspected", "not a pickle to picklescan"
        if "ERROR" in output or code == 2:
            return "error", output.strip().splitlines()[-1][:120] if output.strip() else ""
        return ("flagged" if code == 1 else "clean"), ""
    if tool == "modelaudit":
        if not report.exists():
            return "error", f"exit {code}, no report"
        issues = json.loads(report.read_text()).get("issues", ())
        serious = [
            i for i in issues if str(i.get("severity", "")).lower() in ("critical", "warning")
        ]
        if serious:
            return "flagged", str(serious[0].get("message", ""))[:120]
        if code == 2:
            return "error", (str(issues[0].get("message", ""))[:120] if issues else "")
        return "clean", ""
    return {0: "clean", 1: "flagged"}.get(code, "error"), ""


def _best_run(
    tool: str, path: Path, repeat: int, timeout: float, scratch: Path, label: str
) -> tuple[float | None, str, str]:
    """Best wall time of `repeat` runs of `tool` on `path`, and the last verdict."""
    best: float | None = None
    verdict, note = "", ""
    report = scratch / f"large-{tool}-{label}.json"
    for attempt in range(repeat):
        _log(f"large: {tool} on {path.name} ({attempt + 1}/{repeat})")
        code, output, wall = _run(
            _large_command(tool, path, report),
            timeout,
            cwd=scratch,
            log=scratch / f"large-{tool}-{label}.out",
        )
        verdict, note = _large_verdict(tool, code, output, report)
        if code is None:
            return None, verdict, f"over {timeout:.0f} s"
        best = wall if best is None else min(best, wall)
    return best, verdict, note


def run_large(
    paths: dict[str, str],
    tiny: Path,
    tools: Sequence[str],
    repeat: int,
    timeout: float,
    scratch: Path,
) -> list[Throughput]:
    """Each tool on a tiny benign pickle first (its start-up cost), then on each large file."""
    results: list[Throughput] = []
    for tool in tools:
        wall, verdict, note = _best_run(tool, tiny, repeat, timeout, scratch, "startup")
        results.append(
            Throughput(tool, "startup", str(tiny), tiny.stat().st_size, wall, verdict, note)
        )
    for kind, raw in paths.items():
        path = Path(raw)
        _warm(path)
        for tool in tools:
            wall, verdict, note = _best_run(tool, path, repeat, timeout, scratch, kind)
            results.append(
                Throughput(tool, kind, str(path), path.stat().st_size, wall, verdict, note)
            )
    return results


# -- rendering --------------------------------------------------------------------------


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.1f}%)" if total else "0/0"


def _table(rows: list[tuple[str, ...]], right: Iterable[int] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = set(right)
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def render(
    machine: dict[str, Any],
    corpus: dict[str, Any],
    runs: list[ToolRun],
    scores: dict[str, Any],
    skipped: dict[str, str],
    large: list[Throughput],
) -> str:
    lines = [
        f"Model scanner bench: nproc {machine['nproc']}, {machine['cpu']}, "
        f"python {machine['python']}, load average {machine['load_at_start'][0]:.1f} at start, "
        f"{machine['load_at_end'][0]:.1f} at end",
        f"corpus: {corpus['malicious']} malicious and {corpus['benign']} benign samples, "
        f"{corpus['files']} files, {corpus['bytes'] / MB:.1f} MB ({corpus['path']})",
        "flagged = the tool reported a security issue (Stockade: a finding at medium or above; "
        "ModelAudit: warning or critical; picklescan: a dangerous global; ModelScan: any issue; "
        "fickling: above LIKELY_SAFE).",
        "errors only = not flagged, but the tool said it could not fully scan it. "
        "ratio = Stockade's wall time / the tool's (0.50x = Stockade takes half as long).",
        "",
    ]
    # The ratio's reference: Stockade as a user runs it (parallel), else its one-process run.
    reference = next(
        (
            r
            for name in ("stockade", "stockade-j1")
            for r in runs
            if r.tool == name and not r.problem
        ),
        None,
    )
    if reference is not None:
        lines[-1:-1] = [f"ratio reference: {reference.tool}."]
    rows: list[tuple[str, ...]] = [
        (
            "tool",
            "version",
            "malicious flagged",
            "errors only",
            "benign flagged (FP)",
            "benign errors",
            "wall (dir)",
            "ratio",
        )
    ]
    for run in runs:
        totals = scores[run.tool]["totals"]
        mal, ben = totals["malicious"], totals["benign"]
        wall = f"{run.wall_s:.2f} s" if run.wall_s is not None else "-"
        if run.problem and not run.fallback:
            rows.append(
                (run.tool, run.version, f"failed: {run.problem[:60]}", "", "", "", wall, "")
            )
            continue
        ratio = ""
        comparable = not run.problem or run.wall_note
        if reference is not None and run is not reference and run.wall_s and comparable:
            ratio = _ratio(reference.wall_s / run.wall_s)
        if run.wall_note:
            wall += " (*)"
        elif run.problem:
            wall += " (aborted)"
        rows.append(
            (
                run.tool,
                run.version,
                _pct(mal["flagged"], mal["total"]),
                str(mal["errors_only"]),
                _pct(ben["flagged"], ben["total"]),
                str(ben["errors"]),
                wall,
                ratio,
            )
        )
    for tool in skipped:
        rows.append((tool, "", "pending (see notes)", "", "", "", "", ""))
    lines += _table(rows, right={6, 7})

    if scores:
        lines += ["", "detection by family (flagged/total; benign rows count false positives):"]
        tools = [r.tool for r in runs if not (r.problem and not r.fallback)]
        header = ("family", *tools)
        fam_rows: list[tuple[str, ...]] = [header]
        families = sorted(
            {k for t in tools for k in scores[t]["families"]},
            key=lambda k: (not k.startswith("malicious"), k),
        )
        for fam in families:
            cells = []
            for tool in tools:
                counts = scores[tool]["families"].get(fam, {})
                cell = f"{counts.get('flagged', 0)}/{counts.get('total', 0)}"
                if counts.get("errors_only"):
                    cell += f" (+{counts['errors_only']}e)"
                cells.append(cell)
            fam_rows.append((fam, *cells))
        lines += _table(fam_rows, right=range(1, len(header)))

    if large:
        lines += [
            "",
            "throughput on large benign files (best wall time of the whole process, page cache "
            "warm; net = after subtracting the tool's start-up, its time on a tiny pickle, "
            "'(start-up)' when within 50 ms of it; ratio = Stockade's time / the tool's):",
        ]
        startup = {i.tool: i.wall_s for i in large if i.kind == "startup"}
        rows = [("file", "size", "tool", "wall", "MB/s", "net MB/s", "ratio", "verdict")]
        by_kind: dict[str, list[Throughput]] = defaultdict(list)
        for item in large:
            by_kind[item.kind].append(item)
        for kind, items in by_kind.items():
            ours = next((i for i in items if i.tool == "stockade" and i.wall_s), None)
            for n, item in enumerate(items):
                ratio = ""
                if ours is not None and item is not ours and item.wall_s:
                    ratio = _ratio(ours.wall_s / item.wall_s)
                base = startup.get(item.tool)
                net = ""
                if kind != "startup" and item.wall_s and base:
                    # Within 50 ms of the start-up the difference is noise, not a rate.
                    work = item.wall_s - base
                    net = f"{item.size / MB / work:,.0f}" if work >= 0.05 else "(start-up)"
                first = n == 0
                rows.append(
                    (
                        ("start-up (tiny pickle)" if kind == "startup" else Path(item.path).name)
                        if first
                        else "",
                        f"{item.size / MB:,.0f} MB" if first and kind != "startup" else "",
                        item.tool,
                        f"{item.wall_s:.2f} s" if item.wall_s else "-",
                        f"{item.mb_per_s:,.0f}" if item.mb_per_s and kind != "startup" else "",
                        net,
                        ratio,
                        item.verdict + (f" ({item.note})" if item.note else ""),
                    )
                )
        lines += _table(rows, right={1, 3, 4, 5, 6})

    notes = [f"  {tool}: pending, {reason}" for tool, reason in skipped.items()]
    for run in runs:
        if run.problem:
            fallback = f"; {run.fallback}" if run.fallback else ""
            if run.fallback_s is not None:
                fallback += f" ({run.fallback_s:.1f} s in all)"
            notes.append(f"  {run.tool}: {run.problem}{fallback}")
            if run.wall_note:
                notes.append(f"  {run.tool} (*): the wall time is a {run.wall_note}")
            crashed = sorted(
                n for n, v in run.files.items() if any("crashed" in x for x in v.notes)
            )
            if crashed:
                notes.append(f"  {run.tool} crashes on: {', '.join(crashed)}")
        fps = scores.get(run.tool, {}).get("false_positives", [])
        if fps:
            notes.append(f"  {run.tool} false positives: {', '.join(fps)}")
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run Stockade and the peer model scanners over one labelled corpus.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the corpus first")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {', '.join(TOOLS)}")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per directory run")
    parser.add_argument(
        "--per-file-timeout",
        type=float,
        default=60,
        help="seconds per file when a directory run must be redone file by file",
    )
    parser.add_argument(
        "--large-dir",
        type=Path,
        default=DEFAULT_LARGE,
        help="where the large files are written (kept for reruns)",
    )
    parser.add_argument("--large-mib", type=int, default=1024, help="size of each large file")
    parser.add_argument(
        "--large-tools", default=",".join(LARGE_TOOLS), help="tools timed on the large files"
    )
    parser.add_argument("--no-large", action="store_true", help="skip the large-file runs")
    parser.add_argument("--repeat", type=int, default=2, help="runs per large file (best kept)")
    parser.add_argument(
        "--large-timeout", type=float, default=300, help="seconds per large-file run"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON"
    )
    parser.add_argument(
        "--raw-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep every tool's own report and output in DIR (default: a temp dir, removed)",
    )
    return parser


def _pick(text: str, allowed: Sequence[str], flag: str) -> list[str]:
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise SystemExit(f"error: unknown {flag} {', '.join(unknown)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tools = _pick(args.tools, TOOLS, "--tools")
    large_tools = _pick(args.large_tools, TOOLS, "--large-tools")
    if args.repeat < 1 or args.large_mib < 1:
        raise SystemExit("error: --repeat and --large-mib must be at least 1")
    peer_python = PEERS_VENV / "bin" / "python"
    if not peer_python.exists():
        raise SystemExit("error: no peers venv; run `bash bench/model_scan/setup_peers.sh` first")
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    corpus = args.corpus.resolve()
    if args.rebuild or not (corpus / "labels.json").exists():
        _log(f"building the corpus in {corpus}")
        code, output, _ = _run(
            [str(peer_python), str(HERE / "build_corpus.py"), "--out", str(corpus)], 900
        )
        if code != 0:
            raise SystemExit(f"error: build_corpus.py failed:\n{output[-2000:]}")
    labels = json.loads((corpus / "labels.json").read_text())
    files = Files(corpus, labels)
    corpus_facts = {
        "path": str(corpus),
        "malicious": labels["counts"]["malicious"],
        "benign": labels["counts"]["benign"],
        "files": len(files.sample_of),
        "bytes": sum((corpus / n).stat().st_size for n in files.sample_of),
        "versions": labels.get("versions", {}),
    }

    skipped: dict[str, str] = {}
    if any(t.startswith("stockade") for t in tools + large_tools):
        registered = _stockade_registered(PROJECT_VENV / "bin" / "python")
        if registered == 0:
            reason = "no format scanners registered yet (formats.FORMAT_MODULES is empty)"
            for tool in ("stockade", "stockade-j1"):
                if tool in tools:
                    skipped[tool] = reason
            tools = [t for t in tools if not t.startswith("stockade")]
            large_tools = [t for t in large_tools if t != "stockade"]

    runs: list[ToolRun] = []
    scores: dict[str, Any] = {}
    large: list[Throughput] = []
    with contextlib.ExitStack() as stack:
        if args.raw_dir is not None:
            scratch = args.raw_dir.resolve()
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="model-bench-")))
        for tool in tools:
            _log(f"{tool}: scanning {corpus}")
            if tool == "stockade":
                run = run_stockade(files, None, args.timeout, scratch)
            elif tool == "stockade-j1":
                run = run_stockade(files, 1, args.timeout, scratch)
            elif tool == "modelaudit":
                run = run_modelaudit(files, args.timeout, scratch)
            elif tool == "picklescan":
                run = run_picklescan(files, args.timeout, args.per_file_timeout, scratch)
            elif tool == "modelscan":
                run = run_modelscan(files, args.timeout, scratch)
            else:
                run = run_fickling(files, args.timeout, scratch)
            _log(f"{tool}: {run.wall_s:.2f} s" + (f" ({run.problem})" if run.problem else ""))
            runs.append(run)
            scores[run.tool] = score(run, files)
        if not args.no_large and large_tools:
            _log(f"large files: {args.large_mib} MiB each in {args.large_dir}")
            code, output, _ = _run(
                [
                    str(peer_python),
                    str(HERE / "build_corpus.py"),
                    "--large-only",
                    "--large",
                    str(args.large_dir.resolve()),
                    "--large-mib",
                    str(args.large_mib),
                ],
                1800,
            )
            if code != 0:
                raise SystemExit(f"error: writing the large files failed:\n{output[-2000:]}")
            paths = json.loads(output.strip().splitlines()[-1])
            tiny = scratch / "tiny.pkl"
            tiny.write_bytes(pickle.dumps({"weight": [0.5, 0.25], "bias": 0.1}, protocol=4))
            large = run_large(paths, tiny, large_tools, args.repeat, args.large_timeout, scratch)

    machine = _machine()
    machine["load_at_start"] = load_at_start
    machine["load_at_end"] = list(os.getloadavg())
    elapsed = time.perf_counter() - started
    print(render(machine, corpus_facts, runs, scores, skipped, large))
    print(f"\ntotal {elapsed:.0f} s")
    if args.json is not None:
        report = {
            "machine": machine,
            "corpus": corpus_facts,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "elapsed_s": elapsed,
            "skipped": skipped,
            "runs": [
                {
                    "tool": r.tool,
                    "version": r.version,
                    "command": r.command,
                    "wall_s": r.wall_s,
                    "exit_code": r.exit_code,
                    "problem": r.problem,
                    "fallback": r.fallback,
                    "fallback_s": r.fallback_s,
                    "wall_note": r.wall_note,
                    **scores[r.tool],
                }
                for r in runs
            ],
            "large": [{**dataclasses.asdict(t), "mb_per_s": t.mb_per_s} for t in large],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

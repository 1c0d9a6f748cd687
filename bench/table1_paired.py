"""Table 1 with paired intervals from `facexplain evaluate` runs made at different times on the same pairs.

Two subcommands:

``run``: one ``facexplain evaluate`` per method into ``OUT/<scenario>/<method>/`` (skipped when that
folder already holds an ``evaluation.json``, so an interrupted run resumes where it stopped)::

    .venv/bin/python bench/table1_paired.py run --out out/t1/dlib --pairs 40 \\
        --scenarios lfw,cfp-fp,lfw-occluded --methods corrrise-plus,lime,xface,minplus,corrrise,rise,gradcam,gradcampp

``report``: the Table 1 of AUC x100 with 95 % intervals, the forward passes per pair of each method,
and the paired differences of a reference method to every other method (t intervals over pairs),
from any evaluation folders (found recursively under the given paths)::

    .venv/bin/python bench/table1_paired.py report out/t1/dlib --reference corrrise-plus
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: The scenarios of Table 1 and their ``facexplain evaluate`` arguments (docs/benchmarks.md).
SCENARIOS: dict[str, list[str]] = {
    "lfw": ["--dataset", "lfw:../shared/data/lfw-dev"],
    "cfp-fp": ["--dataset", "cfp-fp-aligned:../shared/data/cfp-dev"],
    "lfw-occluded": ["--dataset", "lfw-aligned:../shared/data/lfw-dev", "--occlude"],
}


#: Runs ``facexplain`` from a source snapshot (argv[1]) instead of the installed (editable) package.
_FROM_SOURCE = (
    "import sys; src = sys.argv.pop(1); "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in str(getattr(f, '__module__', ''))]; "
    "sys.path.insert(0, src); from explainer_service.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run(out: Path, scenarios: list[str], methods: list[str], pairs: int, extra: list[str],
        source: Path | None = None) -> None:
    """Evaluate each method of each scenario into its own folder, skipping finished ones; with
    ``source``, the package from that folder (e.g. ``git archive COMMIT explainer_service``: a
    committed version while the working tree changes)."""
    exe = [str(Path(sys.executable).with_name("facexplain"))]
    if source is not None:
        exe = [sys.executable, "-c", _FROM_SOURCE, str(source)]
    for scen in scenarios:
        for method in methods:
            folder = out / scen / method
            if (folder / "evaluation.json").exists():
                print(f"{scen}/{method}: done before, skipped", flush=True)
                continue
            cmd = [*exe, "evaluate", *SCENARIOS[scen], "--methods", method, "--pairs", str(pairs),
                   "--engine", "local", "--no-progress", "--out", str(folder), *extra]
            t0 = time.time()
            print(f"{scen}/{method}: {' '.join(cmd)}", flush=True)
            (out / scen).mkdir(parents=True, exist_ok=True)
            with open(out / scen / f"{method}.log", "w") as log:  # the log grows as the run goes
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
            took = time.time() - t0
            print(f"{scen}/{method}: exit {proc.returncode} after {took:.0f} s; load {Path('/proc/loadavg').read_text().split()[:3]}",
                  flush=True)


#: Table 1's names of the scenarios' dataset specs (the report's column headers).
LABELS = {
    "lfw:../shared/data/lfw-dev": "LFW",
    "cfp-fp-aligned:../shared/data/cfp-dev": "CFP-FP",
    "lfw-aligned:../shared/data/lfw-dev (occluded)": "LFW-occluded",
}


def report(paths: list[str], reference: str, save: Path | None, skip_incomplete: bool = False) -> str:
    """The paired Table 1 of every evaluation under ``paths``; ``save``: also write the per-pair AUCs
    (compact JSON, one record per model, scenario and method). ``skip_incomplete``: leave out (with a
    note) each (model, scenario) that has no finished run of ``reference`` instead of refusing."""
    from explainer_service.paired import describe, load_runs, paired_report

    runs = load_runs(paths)
    note = ""
    if skip_incomplete:
        complete = {(r.model, r.scenario) for r in runs if r.method == reference}
        left = sorted({(r.model, r.scenario) for r in runs} - complete)
        runs = [r for r in runs if (r.model, r.scenario) in complete]
        if left:
            note = "\n".join(f"left out (no {reference} run): {m}, {LABELS.get(s, s)}" for m, s in left) + "\n\n"
    if save is not None:
        save.write_text(json.dumps([describe(r) for r in runs], separators=(",", ":")) + "\n")
    return note + paired_report(runs, reference, labels=LABELS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--pairs", type=int, default=40)
    r.add_argument("--scenarios", default=",".join(SCENARIOS))
    r.add_argument("--methods", required=True)
    r.add_argument("--source", type=Path, default=None,
                   help="run the package from this folder (a snapshot of a commit), not the installed one")
    r.add_argument("extra", nargs="*", help="further evaluate arguments after --, e.g. -- --model mfn-arcface")
    rp = sub.add_parser("report")
    rp.add_argument("paths", nargs="+", help="evaluation folders or evaluation.json files (searched recursively)")
    rp.add_argument("--reference", default="corrrise-plus")
    rp.add_argument("--save", type=Path, default=None, help="write the per-pair AUCs here (JSON)")
    rp.add_argument("--skip-incomplete", action="store_true",
                    help="leave out a (model, scenario) without a finished reference run instead of refusing")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out, args.scenarios.split(","), args.methods.split(","), args.pairs, args.extra, args.source)
    else:
        print(report(args.paths, args.reference, args.save, args.skip_incomplete))


if __name__ == "__main__":
    main()

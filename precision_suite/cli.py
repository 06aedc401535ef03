"""The ``precision-suite`` command line.

Subcommands: ``run`` (a profile's cases outside pytest), ``repro`` (rerun one case),
``save`` (add a case to the regression corpus), ``backends`` (availability and reasons),
``mutants`` (hunt the planted faults), ``report`` (HTML report) and ``e2e`` (GLM4 MoE
decoder-layer check). Invalid input prints one line and exits with status 2.
"""

import argparse
import glob
import importlib
import json
import os
import sys

from precision_suite.backends import default_backend_names, get_backend, list_backends, planted_faults
from precision_suite.backends.paddle_io import check_device
from precision_suite.budgets import budget_for
from precision_suite.corpus import default_corpus_dir, load_case_file, load_corpus, save_case
from precision_suite.dtypes import DTYPES, check_dtype
from precision_suite.errors import SpecError
from precision_suite.messages import describe_case, repro_command
from precision_suite.metrics import bitwise_equal, ulp_distance
from precision_suite.results import RunDirectory, new_run_id, summarize
from precision_suite.spec import CaseSpec
from precision_suite.strategies import DEFAULT_PROFILE, PROFILES, check_profile, register_profiles
from precision_suite.summary import format_summary

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

CORPUS_HELP = "cases/regressions in the current folder, else in the checkout the suite is installed from"


def _check_seed(seed):
    if seed < 0:
        raise SpecError(f"--seed: invalid value {seed}; expected a whole number >= 0")
    return seed


def _backend_names(names):
    names = names or default_backend_names()
    for name in names:
        get_backend(name)
    return names


def _dtype_names(names):
    return [check_dtype(name) for name in (names or DTYPES)]


# Finding a case by id


def _case_from_tables(case_id, search_dirs):
    """Return the spec of ``case_id`` from the cases tables of run directories, or None."""
    for directory in search_dirs:
        for path in sorted(glob.glob(os.path.join(directory, "**", "cases.jsonl"), recursive=True), reverse=True):
            rows, _ = RunDirectory(os.path.dirname(path)).read_rows("cases")
            for row in rows:
                if row.get("case_id") == case_id and row.get("spec"):
                    return CaseSpec.from_json(row["spec"])
    return None


def resolve_case(text, corpus_dir=None, run_dirs=("reports",)):
    """Return the `CaseSpec` that ``text`` names.

    ``text`` is a spec as JSON, a path to a corpus file, or a case id found in the corpus
    (``corpus_dir``, by default `default_corpus_dir`) or in the ``cases.jsonl`` of a run
    directory under ``run_dirs``.

    Raises
    ------
    SpecError
        When the JSON is invalid or the case id is found nowhere.
    """
    text = text.strip()
    if text.startswith("{"):
        return CaseSpec.from_json(text)
    if os.path.isfile(text):
        return load_case_file(text).spec
    if text.endswith(".json") or os.sep in text:
        raise SpecError(f"case: file {text!r} not found; pass an existing corpus file, spec JSON or a case id")

    corpus_dir = default_corpus_dir() if corpus_dir is None else corpus_dir
    corpus_cases, _ = load_corpus(corpus_dir)
    for case in corpus_cases:
        if case.spec.case_id == text:
            return case.spec
    spec = _case_from_tables(text, [directory for directory in run_dirs if os.path.isdir(directory)])
    if spec is None:
        searched = ", ".join([corpus_dir, *run_dirs])
        raise SpecError(f"case: id {text!r} not found in {searched}; pass the spec JSON from the "
                        "table's spec column, or --run DIR for the run directory that has it")
    return spec


# Subcommands


def _run_settings(args):
    """Return the validated settings of ``run`` as a dict; nothing is written yet.

    Raises
    ------
    SpecError
        For invalid options, a ``--resume`` folder without a run, or an ``--out`` folder that
        already contains one.
    """
    if args.resume:
        run_dir = RunDirectory.existing(args.resume)
        metadata = run_dir.read_metadata() if run_dir else {}
        if not metadata:
            raise SpecError(f"--resume: {args.resume} has no run.json; pass a directory written by precision-suite run")
        settings = {
            "path": run_dir.path, "run_id": metadata["run_id"], "profile": metadata.get("profile", args.profile),
            "seed": metadata.get("seed", args.seed), "backends": args.backend or metadata.get("backends"),
            "dtypes": args.dtype or metadata.get("dtypes"), "device": metadata.get("device", args.device),
            "complete": bool(metadata.get("complete")),
        }
    else:
        run_id = new_run_id()
        path = args.out or os.path.join("reports", run_id)
        RunDirectory.check_new(path, "--out", f"finish it with --resume {path}, or pass a new folder")
        settings = {"path": path, "run_id": run_id, "profile": args.profile, "seed": args.seed,
                    "backends": args.backend, "dtypes": args.dtype, "device": args.device}

    check_profile(settings["profile"])
    _check_seed(settings["seed"])
    settings["backends"] = _backend_names(settings["backends"])
    settings["dtypes"] = _dtype_names(settings["dtypes"])
    settings["device"] = check_device(settings["device"])
    if args.workers < 1:
        raise SpecError(f"--workers: invalid value {args.workers}; expected a whole number >= 1")
    return settings


def _load_replayed_corpus(directory):
    """Load the corpus that a run replays first, printing each broken file and a missing folder to stderr."""
    if not os.path.isdir(directory):
        print(f"precision-suite: note: no regression corpus at {os.path.abspath(directory)}, so none is replayed; "
              "pass --corpus DIR to name the corpus folder", file=sys.stderr)
    corpus_cases, corpus_errors = load_corpus(directory)
    for error in corpus_errors:
        print(f"precision-suite: error: {error}", file=sys.stderr)
    return corpus_cases, corpus_errors


def command_run(args):
    from precision_suite.batch import PairTask, Progress, count_noun, run_pairs, setup_logging
    from precision_suite.environment import collect_environment

    settings = _run_settings(args)
    profile, run_seed, device = settings["profile"], settings["seed"], settings["device"]
    backends, dtypes = settings["backends"], settings["dtypes"]
    run_dir = RunDirectory(settings["path"])
    if args.resume and settings["complete"] and not args.backend and not args.dtype:
        # Nothing is left to run, so run.json keeps the real finish time and duration.
        print(f"precision-suite: note: run {settings['run_id']} in {run_dir.path} is already complete; nothing "
              "was run. Name other backends or dtypes with --backend and --dtype to add them", file=sys.stderr)
        print(format_summary(summarize(run_dir.frame("cases"))))
        return EXIT_OK
    if args.resume:
        run_dir.end_partial_line("cases")

    corpus_cases, corpus_errors = _load_replayed_corpus(args.corpus)

    run_id = run_dir.start(run_id=settings["run_id"], profile=profile, seed=run_seed, device=device,
                           backends=backends, dtypes=dtypes, command="precision-suite run",
                           environment=collect_environment())
    run_dir.write_metadata(complete=False)
    setup_logging(run_dir)
    print(f"run {run_id}: profile {profile}, device {device}, {count_noun(len(backends), 'backend')} x "
          f"{count_noun(len(dtypes), 'dtype')}, "
          f"{len(corpus_cases)} corpus cases, output in {run_dir.path}", file=sys.stderr)

    tasks = [PairTask(backend, dtype, profile, device, run_seed, run_dir.path, run_id, args.corpus, bool(args.resume))
             for backend in backends for dtype in dtypes]
    progress = Progress()
    try:
        summaries = run_pairs(tasks, workers=args.workers, progress=progress)
    except KeyboardInterrupt:
        run_dir.finalize(complete=False)
        print(f"interrupted; finished rows are kept in {run_dir.path}. Continue with: "
              f"precision-suite run --resume {run_dir.path}", file=sys.stderr)
        return EXIT_INTERRUPTED
    progress.update(force=True, label="done")

    frames = run_dir.finalize(complete=True)
    if corpus_errors:
        run_dir.write_metadata(corpus_errors=[str(error) for error in corpus_errors])
    print(format_summary(frames.get("summary")) if "summary" in frames else "no cases ran")
    for summary in summaries:
        if summary.failure_message:
            print(f"\n{summary.failure_message}")

    if args.html:
        from precision_suite.report import write_report

        print(f"report: {write_report(run_dir.path)}")
    print(f"tables written to {run_dir.path}")

    failed = any(summary.failed or summary.errors for summary in summaries)
    if corpus_errors:
        print(f"precision-suite: error: {len(corpus_errors)} corpus file(s) in {args.corpus} failed to load "
              "(listed at the start); fix or remove them", file=sys.stderr)
    return EXIT_FAILED if failed or corpus_errors else EXIT_OK


def _agreement_lines(results):
    """Return lines comparing every pair of executed backends bit for bit."""
    executed = [result for result in results if result.output is not None]
    lines = []
    for index, first in enumerate(executed):
        for second in executed[index + 1:]:
            equal = bitwise_equal(first.output.out, second.output.out)
            distance = ulp_distance(first.output.out, second.output.out)
            lines.append(f"  {first.backend} vs {second.backend}: {equal.mean():.2%} bit-identical, "
                         f"max {float(distance.max(initial=0.0)):g} ulp apart")
    return lines


def command_repro(args):
    from precision_suite.runner import output_digest, run_backend

    spec = resolve_case(args.case, args.corpus, [args.run] if args.run else ["reports"])
    device = check_device(args.device)
    names = args.backend or default_backend_names()
    results = [run_backend(spec, get_backend(name), device, keep_output=True) for name in _backend_names(names)]

    print(describe_case(spec))
    print(f"spec: {spec.to_json()}")
    for result in results:
        print(f"\n{result.backend} on {device}: {result.status}")
        if result.record is None:
            print(f"  {result.message}")
            continue
        record = result.record
        print(f"  max {record.max_ulp_error:.4g} ulp (budget {result.ulp_budget:g}), p99 {record.p99_ulp_error:.4g}, "
              f"mean {record.mean_ulp_error:.4g}, max abs {record.max_abs_error:.4g}, "
              f"max rel {record.max_rel_error:.4g}, bit-identical to reference {record.bitwise_equal_frac:.2%}, "
              f"non-finite mismatches {record.nonfinite_mismatches}")
        print(f"  output sha256 {output_digest(result.output)}")
        for worst in record.worst:
            index = ", ".join(str(i) for i in worst.index)
            print(f"  {worst.output}[{index}]: actual {worst.actual!r}, reference {worst.reference!r}, "
                  f"{worst.ulp_error:.4g} ulp")

    agreement = _agreement_lines(results)
    if agreement:
        print("\nbackends against each other:")
        print("\n".join(agreement))
    return EXIT_FAILED if any(result.status in ("failed", "error") for result in results) else EXIT_OK


def command_save(args):
    spec = resolve_case(args.case, args.corpus, [args.run] if args.run else ["reports"])
    existing = {case.spec.case_id: case for case in load_corpus(args.corpus)[0]}.get(spec.case_id)
    if existing is not None and not args.note:
        print(f"case {spec.case_id} is already in the corpus at {existing.path}; kept its note: {existing.note}")
        return EXIT_OK

    note = args.note or f"saved from the command line: {describe_case(spec)}"
    path = save_case(spec, note, args.corpus)
    if existing is not None:
        print(f"replaced the note of case {spec.case_id} (was: {existing.note})")
    print(f"saved case {spec.case_id} to {path}")
    print(f"rerun it with: {repro_command(spec)}")
    return EXIT_OK


def command_backends(args):
    device = args.device
    backends = list_backends(include_all=args.all)
    print("ulp budget: n is the hidden size")
    print(f"{'backend':32} {'dtype':9} {'device':7} {'budget':>8}  status")
    for backend in backends:
        for dtype in DTYPES:
            availability = backend.probe(dtype, device)
            status = "available" if availability.available else "unavailable: " + availability.reason.splitlines()[0]
            try:
                budget = budget_for(backend, dtype)
            except KeyError:
                budget_text = "-"
            else:
                budget_text = f"{budget.ulp:g}" + (f"+n/{1 / budget.per_hidden:g}" if budget.per_hidden else "")
            print(f"{backend.name:32} {dtype:9} {device:7} {budget_text:>8}  {status}")
    return EXIT_OK


def command_mutants(args):
    from precision_suite.mutants import hunt_all
    from precision_suite.results import write_csv_atomic

    check_profile(args.profile)
    _check_seed(args.seed)
    device = check_device(args.device)
    dtypes = _dtype_names(args.dtype)
    corpus_cases, corpus_errors = _load_replayed_corpus(args.corpus)
    faults = planted_faults()
    if args.fault:
        faults = [get_backend(name) for name in args.fault]

    def show(result):
        verdict = "killed" if result.killed else "SURVIVED"
        where = f"by {result.dtype} case {result.case_id} ({result.status})" if result.killed else ""
        print(f"{result.fault:34} {verdict:8} after {result.examples:4d} examples {where}", flush=True)

    table = hunt_all(faults, profile=args.profile, dtypes=dtypes, device=device, run_seed=args.seed,
                     explicit_specs=[case.spec for case in corpus_cases], on_result=show)
    survived = table[~table["killed"]]
    print(f"\n{len(table) - len(survived)} of {len(table)} planted faults killed with the {args.profile} profile")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "mutants.csv")
        write_csv_atomic(table, path)
        print(f"table written to {path}")
    return EXIT_FAILED if len(survived) else EXIT_OK


def _add_module_parser(subparsers, name, help_text, module_name):
    """Add a subcommand whose options and handler live in ``module_name`` (``add_arguments``, ``main``).

    A module that cannot be imported (a missing dependency) leaves the subcommand in place,
    and running it prints why.
    """
    parser = subparsers.add_parser(name, help=help_text)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parser.set_defaults(handler=lambda args: _unavailable_command(name, error))
        return
    module.add_arguments(parser)
    parser.set_defaults(handler=module.main)


def _unavailable_command(name, error):
    raise SpecError(f"{name}: this installation cannot import it ({error}); reinstall with pip install -e '.[cpu]'")


def build_parser():
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="precision-suite", description="Precision checks of Paddle RMSNorm kernels and the GLM4 MoE layer.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = subparsers.add_parser("run", help="run a profile's generated cases and write the tables")
    run.add_argument("--profile", default=DEFAULT_PROFILE, help=f"Hypothesis profile: {', '.join(PROFILES)} "
                     f"(default: {DEFAULT_PROFILE})")
    run.add_argument("--backend", action="append", help="backend to run; repeat for several (default: all default backends)")
    run.add_argument("--dtype", action="append", help=f"dtype to run; repeat for several (default: {', '.join(DTYPES)})")
    run.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    run.add_argument("--out", help="run directory (default: reports/<run_id>)")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of Hypothesis' generation; every profile draws other cases for another seed (default: 0)")
    run.add_argument("--workers", type=int, default=1, help="processes running backend and dtype pairs (default: 1)")
    run.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR without redoing finished cases")
    run.add_argument("--html", action="store_true", help="also write index.html in the run directory")
    run.add_argument("--corpus", default=default_corpus_dir(), help=f"regression corpus folder (default: {CORPUS_HELP})")
    run.set_defaults(handler=command_run)

    repro = subparsers.add_parser("repro", help="rerun one case and print each backend's metrics and worst elements")
    repro.add_argument("case", help="case id, spec JSON, or a corpus file")
    repro.add_argument("--backend", action="append", help="backend to run; repeat for several (default: all default backends)")
    repro.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    repro.add_argument("--run", help="run directory to look the case id up in (default: every run under reports/)")
    repro.add_argument("--corpus", default=default_corpus_dir(), help=f"regression corpus folder (default: {CORPUS_HELP})")
    repro.set_defaults(handler=command_repro)

    save = subparsers.add_parser("save", help="add a case to the regression corpus")
    save.add_argument("case", help="case id from a run's table, or spec JSON")
    save.add_argument("--note", help="one line on what the case guards (default: the case description)")
    save.add_argument("--run", help="run directory to look the case id up in (default: every run under reports/)")
    save.add_argument("--corpus", default=default_corpus_dir(), help=f"regression corpus folder (default: {CORPUS_HELP})")
    save.set_defaults(handler=command_save)

    backends = subparsers.add_parser("backends", help="list backends with availability per dtype and the reason")
    backends.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default: cpu)")
    backends.add_argument("--all", action="store_true", help="include the planted faults and the NumPy control")
    backends.set_defaults(handler=command_backends)

    mutants = subparsers.add_parser("mutants", help="check that every planted fault is killed by the profile's cases")
    mutants.add_argument("--profile", default=DEFAULT_PROFILE, help=f"Hypothesis profile (default: {DEFAULT_PROFILE})")
    mutants.add_argument("--dtype", action="append", help="dtype to try, in order; repeat for several (default: all)")
    mutants.add_argument("--fault", action="append", help="planted fault to hunt; repeat for several (default: all)")
    mutants.add_argument("--device", default="cpu", help="device (default: cpu)")
    mutants.add_argument("--seed", type=int, default=0, help="seed of Hypothesis' generation (default: 0)")
    mutants.add_argument("--out", help="folder for mutants.csv (default: print only)")
    mutants.add_argument("--corpus", default=default_corpus_dir(),
                         help=f"regression corpus replayed before the generated cases (default: {CORPUS_HELP})")
    mutants.set_defaults(handler=command_mutants)

    _add_module_parser(subparsers, "report", "write index.html for a run directory", "precision_suite.report.command")
    _add_module_parser(subparsers, "e2e", "GLM4 MoE decoder-layer check against a float64 reference",
                       "precision_suite.e2e.command")
    return parser


def main(argv=None):
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    register_profiles()
    try:
        return args.handler(args)
    except SpecError as error:
        print(f"precision-suite: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of a pipe (head, less) closed it; stop quietly like other command-line tools.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

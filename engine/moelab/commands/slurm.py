"""`moelab slurm script|submit|status|cancel|log`: training runs as Slurm batch jobs.

`script` shows the sbatch script that `submit` would run, so it can be read and edited first;
`submit` records the job in the run directory (slurm.json) so later commands accept RUN_DIR as well
as a job id. Every Slurm command is run with an argument array, never through a shell.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from moelab.errors import ConfigError, MoELabError


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("slurm", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="slurm_command", metavar="ACTION", required=True)

    s = sub.add_parser(
        "script",
        help="print (or write) the sbatch script for a train config or experiment",
        description="Print the sbatch script for CONFIG.json; edit it, then `submit --script`.",
    )
    s.add_argument(
        "config",
        type=Path,
        metavar="CONFIG.json",
        help='a train config or an experiment (its optional "slurm" object gives defaults)',
    )
    _resource_options(s)
    s.add_argument("--out", type=Path, metavar="SCRIPT", help="write the script here instead of printing it")

    sb = sub.add_parser(
        "submit",
        help="submit a train config (or an edited script) with sbatch",
        description="Submit with sbatch; records runs/<id>/slurm.json and prints the job id.",
    )
    what = sb.add_mutually_exclusive_group(required=True)
    what.add_argument("config", nargs="?", type=Path, metavar="CONFIG.json", help="a train config")
    what.add_argument(
        "--script", type=Path, metavar="FILE", help="an sbatch script (e.g. from `moelab slurm script`)"
    )
    _resource_options(sb)
    sb.add_argument(
        "--run-dir",
        type=Path,
        help="with --script: where to record the job "
        "(default: the run directory the generated script names, else the script's directory)",
    )
    sb.add_argument("--json", action="store_true", help="print the slurm.json record instead of the job id")

    st = sub.add_parser(
        "status",
        help="state of a job, or of every submitted run under --runs",
        description="Job state from squeue, sacct, or scontrol (clusters without accounting).",
    )
    st.add_argument("target", nargs="?", metavar="JOBID|RUN_DIR")
    st.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory to list (default: runs)")
    st.add_argument("--json", action="store_true", help="JSON output (a list without a target)")

    c = sub.add_parser("cancel", help="cancel a job (scancel)")
    c.add_argument("target", metavar="JOBID|RUN_DIR")
    c.add_argument("--runs", type=Path, default=Path("runs"), help=argparse.SUPPRESS)

    lg = sub.add_parser("log", help="print the end of a job's log; --follow keeps printing until it ends")
    lg.add_argument("target", metavar="JOBID|RUN_DIR")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    lg.add_argument("-n", "--lines", type=int, default=50, help="lines from the end to print first (0 = all)")
    lg.add_argument("--runs", type=Path, default=Path("runs"), help="runs directory to look the job id up in")


def _resource_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('resources (override the config\'s "slurm" object)')
    g.add_argument("--nodes", type=int, help="nodes (default 1)")
    g.add_argument(
        "--gpus-per-node", type=int, help="GPUs per node; one torchrun worker each (default 0: CPU)"
    )
    g.add_argument(
        "--procs-per-node",
        type=int,
        help="torchrun workers per node (default: one per GPU, or 1 on CPU; e.g. 2 for CPU data parallelism)",
    )
    g.add_argument("--time", help="time limit, HH:MM:SS or D-HH:MM:SS")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--account", help="Slurm account")
    g.add_argument("--cpus-per-task", type=int, help="CPUs per node (one task per node)")


def run(args: argparse.Namespace) -> int:
    return {"script": _script, "submit": _submit, "status": _status, "cancel": _cancel, "log": _log}[
        args.slurm_command
    ](args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from moelab.launch.slurm_options import KEYS

    return {k: getattr(args, k, None) for k in KEYS}


def _render_for_config(args: argparse.Namespace):
    from moelab.launch import slurm_options, train_target
    from moelab.launch.sbatch_script import JobSpec, render

    target = train_target.load(args.config)
    opts = slurm_options.from_config(target.raw, target.config.name).merged(_overrides(args))
    if target.experiment and opts.nodes > 1:
        raise ConfigError(
            f"{target.config.name}: an experiment runs as one process on one node (--nodes {opts.nodes}); "
            "submit the stages' train configs for multi-node training"
        )
    spec = JobSpec(
        python=sys.executable,
        engine_args=target.engine_args,
        workdir=Path.cwd(),
        run_dir=target.run_dir,
        job_name=_job_name(target.run_id),
        source=str(target.config),
        single_process=target.experiment,
    )
    return target, opts, render(spec, opts)


def _job_name(run_id: str) -> str:
    # Job names show in squeue and land on an #SBATCH line: keep them plain.
    return "moelab-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:100]


def _script(args: argparse.Namespace) -> int:
    from moelab.io.atomic import write_text_atomic

    _, _, text = _render_for_config(args)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text)
    args.out.chmod(0o755)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from moelab.io.atomic import write_text_atomic
    from moelab.launch import job_record, slurm_cli, train_target
    from moelab.launch.sbatch_script import LOG_NAME, config_of_script, run_dir_of_script
    from moelab.launch.slurm_options import SlurmOptions, as_dict
    from moelab.train import rundir

    extra: list[str] = []
    if args.script is None:
        target, opts, text = _render_for_config(args)
        run_dir, config = target.run_dir, target.config
        run_dir.mkdir(parents=True, exist_ok=True)  # sbatch does not create the log's directory
        script = run_dir / "slurm-job.sbatch"
        write_text_atomic(script, text)
    else:
        script = args.script.expanduser().resolve()
        try:
            text = script.read_text()
        except OSError as e:
            raise MoELabError(f"{args.script}: cannot read the script ({e.strerror or e})") from None
        run_dir = (args.run_dir or run_dir_of_script(text) or script.parent).expanduser().resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        config, target = None, None
        made_from = config_of_script(text)
        if made_from is not None and made_from.is_file():
            # A generated (maybe edited) script: its config says what the queued run is.
            target = train_target.load(made_from)
            config = target.config
        if args.procs_per_node is not None:
            # Not an sbatch option: the worker count is written in the script's torchrun line.
            raise ConfigError("--procs-per-node: not with --script; edit the script's --nproc-per-node")
        opts = SlurmOptions().merged(_overrides(args))
        # Command-line options override the script's #SBATCH lines; only the ones given are passed.
        for key, value in _overrides(args).items():
            if value is not None:
                extra.append(f"--{key.replace('_', '-')}={value}")

    job_id = slurm_cli.sbatch(script, extra, cwd=Path.cwd())
    job = slurm_cli.show_job(job_id) or {}
    # Slurm expands %j (and friends) in StdOut; fall back to our own template when it is not known.
    log = Path(job.get("StdOut") or str(run_dir / LOG_NAME).replace("%j", job_id))
    record = job_record.write(run_dir, job_id, script, log, as_dict(opts), config)
    if target is not None and not target.experiment:
        rundir.mark_queued(run_dir, target.raw, target.run_id, job_id)
    if args.json:
        print(json.dumps(record))
    else:
        print(job_id)
        print(f"moelab: submitted job {job_id}: run dir {run_dir}, log {log}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from moelab.launch import job_record, slurm_cli

    if args.target is None:
        rows = []
        for rec in job_record.records(args.runs):
            st = slurm_cli.status(str(rec["job_id"]))
            rows.append({**st.to_dict(), "run_dir": rec.get("run_dir"), "log": rec.get("log")})
        if args.json:
            print(json.dumps(rows))
        elif not rows:
            print(f"no runs submitted to Slurm under {args.runs}")
        else:
            for row in rows:
                print(
                    f"{row['job_id']:>10}  {row['state']:<12} {Path(str(row['run_dir'])).name}  {row.get('reason') or ''}".rstrip()
                )
        return 0
    job_id, found = job_record.resolve(args.target, args.runs)
    st = slurm_cli.status(job_id)
    row = {
        **st.to_dict(),
        "run_dir": found.get("run_dir") if found else None,
        "log": found.get("log") if found else None,
    }
    if args.json:
        print(json.dumps(row))
    else:
        details = ", ".join(
            f"{k} {row[k]}" for k in ("reason", "exit_code", "elapsed", "nodes") if row.get(k)
        )
        print(f"job {job_id}: {st.state}" + (f" ({details})" if details else ""))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from moelab.launch import job_record, slurm_cli
    from moelab.train import rundir

    job_id, rec = job_record.resolve(args.target, args.runs)
    slurm_cli.scancel(job_id)
    if rec and rec.get("run_dir"):
        rundir.mark_cancelled(Path(rec["run_dir"]), job_id)
    print(f"moelab: cancel requested for job {job_id}", file=sys.stderr)
    return 0


def _log(args: argparse.Namespace) -> int:
    from moelab.launch import job_record, slurm_cli
    from moelab.launch.log_tail import tail

    job_id, rec = job_record.resolve(args.target, args.runs)
    log = rec.get("log") if rec else None
    if not log:
        job = slurm_cli.show_job(job_id)
        if job is None or not job.get("StdOut"):
            raise MoELabError(
                f"job {job_id}: log unknown (not in a run's slurm.json, and Slurm no longer knows the job)"
            )
        log = job["StdOut"]
    return tail(Path(log), args.lines, args.follow, lambda: slurm_cli.status(job_id).active)

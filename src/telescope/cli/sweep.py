"""``telescope sweep``: grids × seeds of one experiment on a local pool or Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from telescope.cli.errors import friendly, log_errors_in
from telescope.cli.study_help import StudyCommand
from telescope.errors import ConfigError
from telescope.experiments.base import parse_overrides

EXIT_RUNS_FAILED = 1


@click.command("sweep", cls=StudyCommand)
@click.argument("experiment")
@click.option("--preset", default="tiny", show_default=True, help="tiny | quick | paper, or a study's own preset (e.g. quick-all, full); `telescope list` shows them")
@click.option("--grid", "grids", multiple=True, metavar="KEY=V1,V2,...",
              help="A grid axis (repeatable; product of all). For tuple fields separate values with ';'.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds per grid point.")
@click.option("--seed-start", type=int, default=0, show_default=True, help="First seed.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field in every run.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=int, default=None, help="Parallel runs (default: the cores available).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray instance).")
@click.option("--gpus-per-run", type=float, default=None, help="Ray: GPUs declared per run (default 1 with cuda).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Folder that receives the sweep directory.")
@click.option("--name", default=None, help="Sweep directory name (default: sweep-EXPERIMENT-<hash of the spec>).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda")
@click.option("--data-dir", default=None, help="Data folder (default: $TELESCOPE_DATA or ~/.cache/telescope).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs recorded FAILED.")
@click.option("--tensorboard", is_flag=True, help="Export finished runs to SWEEP_DIR/tensorboard.")
@click.option("--mlflow", "mlflow_uri", is_flag=False, flag_value="mlruns", default=None, metavar="[URI]",
              help="Export finished runs to MLflow: SWEEP_DIR/mlruns, or a folder / sqlite:///file.db.")
@click.option("--report/--no-report", default=False, help="Write the sweep's report.html at the end.")
@friendly
def sweep_cmd(experiment, preset, grids, seeds, seed_start, sets, backend, workers, address, gpus_per_run,
              out, name, device, data_dir, retry_failed, tensorboard, mlflow_uri, report) -> None:
    """Run EXPERIMENT over the product of --grid values × --seeds in one sweep directory.

    Finished runs are skipped, interrupted ones resume; a failing run is recorded (FAILED
    with its traceback and config) and does not stop the others. Exits 1 if any run failed.
    """
    from telescope.store.sinks import MLflowSink, TensorBoardSink
    from telescope.sweeps import SweepSpec, parse_grid, run_sweep

    if workers is not None and workers < 1:
        raise ConfigError(f"telescope sweep --workers {workers}: need at least 1 worker "
                          "(leave it out to use every core available)")
    log_errors_in(out)
    spec = SweepSpec(experiment, preset, parse_grid(grids), seeds, seed_start, parse_overrides(sets))
    sweep_dir = out / name if name else spec.default_dir(out)
    trackers = []
    if tensorboard:
        trackers.append(TensorBoardSink(sweep_dir / "tensorboard"))
    if mlflow_uri:
        uri = sweep_dir / "mlruns" if mlflow_uri == "mlruns" else mlflow_uri
        trackers.append(MLflowSink(uri, experiment=f"{experiment}/{sweep_dir.name}"))
    total = len(spec.points()) * seeds
    finished = [0]

    def on_event(kind: str, info: dict) -> None:
        label = f"{info['name']} {_point(info)}"
        if kind in ("done", "failed", "skipped"):
            finished[0] += 1
        prefix = f"[{finished[0]}/{total}]"
        if kind == "done":
            click.echo(f"{prefix} done     {label} ({info.get('seconds', 0):.1f} s)")
        elif kind == "skipped":
            click.echo(f"{prefix} skipped  {label} (finished earlier)")
        elif kind == "failed":
            earlier = " (recorded earlier; --retry-failed to run it again)" if info.get("earlier") else ""
            click.echo(f"{prefix} FAILED   {label}: {info.get('error')}{earlier}")
        elif kind == "retry":
            click.echo(f"{prefix} retry    {label}: {info.get('error')}; attempt {info['attempt']}")

    click.echo(f"sweep directory: {sweep_dir}  ({total} runs, backend {backend})")
    if sweep_dir.is_dir():
        log_errors_in(sweep_dir)
    result = run_sweep(spec, out, sweep_dir=sweep_dir, backend=backend, workers=workers, address=address,
                       device=device, data_dir=data_dir, retry_failed=retry_failed, trackers=trackers,
                       on_event=on_event, gpus_per_run=gpus_per_run)
    click.echo(f"summary: {len(result.ran)} ran, {len(result.skipped)} skipped (finished earlier), "
               f"{len(result.failed)} failed, {len(result.retried)} retried after a worker died; "
               f"{result.seconds:.1f} s")
    for run_name, error in result.failed.items():
        click.echo(f"  FAILED {run_name}: {error}  (details: {result.path / run_name / 'FAILED'})")
    if report:
        from telescope.report import build_report

        click.echo(f"report: {build_report(result.path)}")
    if not result.ok:
        sys.exit(EXIT_RUNS_FAILED)


def _point(info: dict) -> str:
    point = info.get("point") or (info.get("meta") or {}).get("point") or {}
    parts = [f"{k}={v}" for k, v in point.items()] + [f"seed={info.get('seed')}"]
    return "(" + ", ".join(parts) + ")"

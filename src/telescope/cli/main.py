"""``telescope list | run | report | demo | data``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Callable

import click

from telescope.cli.errors import friendly, log_errors_in
from telescope.cli.study_help import StudyCommand
from telescope.cli.sweep import sweep_cmd
from telescope.errors import ConfigError
from telescope.experiments.base import parse_overrides
from telescope.experiments.units import CUDA_WORKERS
from telescope.report.numbers import number

HEADLINE_VALUES = 8  # summary values printed after a run; the rest stay in summary.json
# studies whose units go through telescope.experiments.units.run_units (--workers K)
PARALLEL_STUDIES = ("grokking-mnist", "grokking-control", "approximation", "double-descent", "grokking-poly", "deep-grokking",
                    "lazy-rich")


def progress_lines() -> Callable[[str], None] | None:
    """Where progress goes as plain lines: stdout when it is not a terminal (a log, a batch job)."""
    return None if sys.stdout.isatty() else click.echo


def headline(run_dir: Path, first: tuple[str, ...] = ()) -> list[str]:
    """A few lines of a finished run's results and where the rest are: the summary values whose
    keys match the ``fnmatch`` patterns ``first`` (a study's ``HEADLINE``), then the others."""
    from fnmatch import fnmatch

    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    scalars = [(k, v) for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    scalars.sort(key=lambda kv: not any(fnmatch(kv[0], pattern) for pattern in first))   # stable
    lines = [f"results ({path}):"]
    for key, value in scalars[:HEADLINE_VALUES]:
        lines.append(f"  {key} = {number(value, 6)}")
    if len(summary) > HEADLINE_VALUES:
        lines.append(f"  ... {len(summary) - min(len(scalars), HEADLINE_VALUES)} more in summary.json")
    return lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """telescope: the telescoping lens on neural-network training."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@cli.command("list")
@friendly
def list_cmd() -> None:
    """Name every experiment and its presets, one line each."""
    from telescope import experiments

    for name in experiments.names():
        exp = experiments.get(name)
        presets = ", ".join(getattr(exp.config_cls, "PRESETS", {}))
        click.echo(f"{name:<18} {exp.description}  [presets: {presets}]")


def execute(name: str, preset: str, seed: int | None, sets: dict[str, str], out: Path,
            device: str, data_dir: str | None, *, force: bool = False, quiet: bool = False,
            workers: int | None = None) -> Path:
    """Resolve, run and store one experiment (see :func:`telescope.sweeps.runner.run_one`).

    Unless ``quiet``: a progress bar on a terminal, plain progress lines otherwise, and the
    run's headline results at the end.
    """
    from telescope.sweeps.runner import run_one

    log_errors_in(out)
    outcome = run_one(name, preset, seed, sets, out, device, data_dir, force=force, show_progress=not quiet,
                      emit=None if quiet else progress_lines(), workers=workers)
    log_errors_in(outcome.path)
    if not quiet:
        if outcome.status == "skipped":
            click.echo(f"already done (same config): {outcome.path}")
        from telescope.experiments import get

        for line in headline(outcome.path, get(name).headline):
            click.echo(line)
    return outcome.path


@cli.command("run", cls=StudyCommand)
@click.argument("experiment")
@click.option("--preset", default="quick", show_default=True, help="tiny | quick | paper, or a study's own preset (e.g. quick-all, full); `telescope list` shows them")
@click.option("--seed", type=int, default=None, help="Base seed (part of the run's identity).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Folder that receives the run directory.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda")
@click.option("--data-dir", default=None, help="Data folder (default: $TELESCOPE_DATA or ~/.cache/telescope).")
@click.option("--workers", type=int, default=None, metavar="K",
              help="Train K of the study's units (settings × seeds) at once, one process each; same results "
                   f"for every K, not part of the run's identity. Default: 1 on cpu, {CUDA_WORKERS} on cuda. Used by "
                   f"{', '.join(PARALLEL_STUDIES)}; other studies run their units one by one.")
@click.option("--force", is_flag=True, help="Discard a finished run of the same config and run again.")
@click.option("--report/--no-report", default=False, help="Write figures and report.html when done.")
@friendly
def run_cmd(experiment, preset, seed, sets, out, device, data_dir, workers, force, report) -> None:
    """Run EXPERIMENT and store its results in a run directory."""
    if workers is not None and workers < 1:
        raise ConfigError(f"telescope run --workers {workers}: need at least 1 worker process "
                          "(or leave --workers out for the device's default)")
    path = execute(experiment, preset, seed, parse_overrides(sets), out, device, data_dir, force=force,
                   workers=workers)
    click.echo(f"run directory: {path}")
    if report:
        from telescope.report import build_report

        click.echo(f"report: {build_report(path)}")


@cli.command("report")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--all", "index_all", is_flag=True, help="Index every run and sweep under DIRECTORY.")
@friendly
def report_cmd(directory: Path, index_all: bool) -> None:
    """Write figures (PNG) and a self-contained report.html for a run directory."""
    from telescope.report import build_index, build_report

    log_errors_in(directory)
    path = build_index(directory) if index_all else build_report(directory)
    click.echo(f"report: {path}")


# scikit-learn's digits hold 365 images of 3 and 5: train on 250, test on 100
DEMO_WITHOUT_MNIST = {"dataset": "digits", "n_train": "250", "n_test": "100"}


@cli.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
@click.option("--data-dir", default=None)
@friendly
def demo_cmd(out: Path, data_dir: str | None) -> None:
    """The default main job: the approximation study's demo preset on CPU, then its report.

    The demo preset (NOTE [approximation demo preset]) trains the five settings once each
    at their smallest γ: about 2 minutes, and it shows that f̃ is far closer to the
    network than the linearization around initialization.
    """
    from telescope.data import data_dir as resolve_dir
    from telescope.report import build_report

    sets: dict[str, str] = {}
    mnist = resolve_dir(data_dir) / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists():
        click.echo(f"MNIST not found under {mnist}; the demo uses scikit-learn's 8x8 digits instead "
                   "(set TELESCOPE_DATA for the paper's data).")
        sets = dict(DEMO_WITHOUT_MNIST)
    click.echo("running: telescope run approximation --preset demo  (about 2 minutes on 2 CPU cores; "
               "--preset quick for every γ and 2 seeds)")
    path = execute("approximation", "demo", None, sets, out, "cpu", data_dir)
    report = build_report(path)
    click.echo(f"run directory: {path}")
    click.echo(f"report: {report}")


@cli.group("data")
def data_group() -> None:
    """Datasets: where they are looked for, and downloads on request."""


@data_group.command("download")
@click.argument("dataset", type=click.Choice(["mnist"]))
@click.option("--data-dir", default=None)
@friendly
def data_download(dataset: str, data_dir: str | None) -> None:
    """Download DATASET's canonical files (checksums verified)."""
    from telescope.data.images import download_mnist

    click.echo(f"downloaded to {download_mnist(data_dir)}")


@data_group.command("where")
@click.option("--data-dir", default=None)
def data_where(data_dir: str | None) -> None:
    """Print the data folder in use."""
    from telescope.data import data_dir as resolve_dir

    click.echo(str(resolve_dir(data_dir)))


cli.add_command(sweep_cmd)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="telescope", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()

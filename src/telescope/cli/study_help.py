"""``telescope run STUDY --help`` and ``telescope sweep STUDY --help``: the study's config keys.

The keys, their types, bounds, defaults and preset values come from the study's ``Config``
declaration (NOTE [typed configs] in :mod:`telescope.experiments.base`).
"""

from __future__ import annotations

from typing import Any

import click


class StudyCommand(click.Command):
    """A command whose first argument is a STUDY: its ``--help`` lists the config keys (NOTE [typed configs])."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in ("-h", "--help") for a in args):
            ctx.meta["telescope.study"] = self._study(args)
        return super().parse_args(ctx, args)

    def _study(self, args: list[str]) -> str | None:
        takes_value = {name for p in self.params if isinstance(p, click.Option) and not p.is_flag
                       for name in p.opts}
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg in takes_value:
                skip = True
            elif not arg.startswith("-"):
                return arg
        return None

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        study = ctx.meta.get("telescope.study")
        if not study:
            formatter.write_paragraph()
            formatter.write_text("`telescope run STUDY --help` lists STUDY's config keys; `telescope list` names "
                                 "the studies.")
            return
        from telescope import experiments
        from telescope.errors import TelescopeError

        try:
            exp = experiments.get(study)
        except TelescopeError as exc:
            formatter.write_paragraph()
            formatter.write_text(str(exc))
            return
        with formatter.section(f"Config keys of {study} (--set KEY=VALUE; tuples comma-separated)"):
            formatter.write_dl(_key_rows(exp.config_cls))


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) if value else "(empty)"
    return repr(value) if isinstance(value, str) else str(value)


def _key_rows(config_cls: type) -> list[tuple[str, str]]:
    from telescope.experiments.base import describe

    rows = []
    for row in describe(config_cls):
        kind = row["type"] + (f" ({row['bounds']})" if row["bounds"] else "")
        presets = "; ".join(f"{p}: {_show(v)}" for p, v in row["presets"].items())
        text = f"{kind}; default {_show(row['default'])}" + (f"; {presets}" if presets else "")
        rows.append((row["key"], text))
    return rows

"""`webssl status OUT`: progress, failures, fingerprint and active claims of an output folder."""
from __future__ import annotations

import json
import sys

import typer

from .errors import exit_on_error
from .options import opt


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status(
    out: str = typer.Argument(..., metavar="OUT", help="Output folder of `webssl extract` (the --out value)."),
    as_json: bool = opt(False, "--json", help="Print the report as JSON."),
    manifest_name: str = opt("_webssl", "--manifest-name",
                             help="Name of the manifest folder inside OUT."),
) -> None:
    """Report how far an extraction got: units done/total, rows, failed rows, the
    settings fingerprint, units claimed by a rank but not finished (owner and
    heartbeat age), units a rank gave up on (and why), interrupted commits and missing
    files. Reads only; safe while ranks are running. Exit 2 if OUT does not exist, is a file, or has no webssl manifest.

    Example: webssl status /data/feats --json
    """
    from rich.console import Console
    from rich.table import Table

    from ..store import get_status

    with exit_on_error():
        report = get_status(out, manifest_name)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    console = Console()
    summary = Table(title=f"webssl status: {report.out_dir}", show_header=False)
    summary.add_column("what")
    summary.add_column("value", overflow="fold")
    summary.add_row("units done", f"{report.units_done} / {report.units_total}"
                    + ("  (complete)" if report.complete else ""))
    summary.add_row("rows", str(report.rows))
    summary.add_row("failed rows", f"{report.failed_rows} in {report.units_with_failures} units"
                    f" (ledgers: {report.manifest_dir}/failures/)")
    summary.add_row("bytes", str(report.bytes))
    summary.add_row("fingerprint", report.fingerprint or "-")
    summary.add_row("created", report.created or "-")
    for name, value in sorted(report.fields.items()):
        summary.add_row(f"  {name}", json.dumps(value))
    console.print(summary)
    if report.claims:
        claims = Table(title="claimed, not finished")
        for col in ("unit", "owner", "heartbeat age", "stale"):
            claims.add_column(col, overflow="fold")
        for c in report.claims:
            claims.add_row(c.unit_id, c.owner, _age(c.age_seconds),
                           "yes (its process is gone)" if c.owner_gone
                           else "yes (may be taken over)" if c.stale else "no")
        console.print(claims)
    if report.failed_units:
        failed = Table(title="units given up, not done since (rerun the extraction to retry)")
        for col in ("unit", "name", "reason", "rank", "at"):
            failed.add_column(col, overflow="fold")
        for f in report.failed_units:
            failed.add_row(f.unit_id, f.unit_name, f.reason, f.owner, f.failed_at)
        console.print(failed)
    if report.pending_commits:
        print(f"interrupted or in-flight commits (finished by the next run): "
              f"{', '.join(report.pending_commits)}")
    if report.missing_files:
        print("missing or changed files of finished units:\n  " + "\n  ".join(report.missing_files),
              file=sys.stderr)
    if report.repair:
        print(report.repair, file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("status")(status)

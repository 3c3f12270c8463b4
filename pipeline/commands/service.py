"""``photostyle service install``: write (or print) the systemd unit and say how to enable it.

Warnings (a folder the sandbox hides, weights the service account cannot find) go
to stderr, so ``--dry-run``'s output stays a unit file.
"""

from __future__ import annotations

import sys

from pipeline.app import App
from pipeline.service import install, plan_install


def service_install(app: App, *, user: bool, dry_run: bool) -> str:
    plan = plan_install(app.config, app.config_path, user=user)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if dry_run:
        header = f"# {plan.path} (dry run: not written)\n" + "".join(f"# {note}\n" for note in plan.notes)
        return header + plan.text + "\n# then:\n" + "\n".join(f"#   {c}" for c in plan.commands)
    install(plan)
    notes = "".join(f"{note}\n" for note in plan.notes)
    return f"wrote {plan.path}\n{notes}now run:\n" + "\n".join(f"  {c}" for c in plan.commands)

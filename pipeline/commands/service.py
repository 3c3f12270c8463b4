"""``photostyle service install``: write (or print) the systemd unit and say how to enable it.

A unit that cannot work (a folder its sandbox hides, weights its account cannot read)
is refused with exit status 2 and one line naming each cause and its fix; ``--force``
writes it anyway. Warnings go to stderr, before the unit, so ``--dry-run``'s output
stays a unit file; it also opens with a comment for each cause, so a reader of the
unit alone (``--dry-run | less``) sees them first.
"""

from __future__ import annotations

import sys

from pipeline.app import App
from pipeline.service.install import UnitRefused, install, plan_install


def service_install(app: App, *, user: bool, dry_run: bool, force: bool = False) -> str:
    plan = plan_install(app.config, app.config_path, user=user)
    if plan.problems and not (dry_run or force):
        raise UnitRefused(f"not writing {plan.path}, it could not work: {'; '.join(plan.problems)}; "
                          "--force writes it anyway")
    for warning in plan.problems + plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stderr.flush()  # before the unit, wherever the two streams end up
    if dry_run:
        header = f"# {plan.path} (dry run: not written)\n"
        header += "".join(f"# cannot work, so install refuses it (--force writes it anyway): {problem}\n"
                          for problem in plan.problems)
        header += "".join(f"# {note}\n" for note in plan.notes)
        return header + plan.text + "\n# then:\n" + "\n".join(f"#   {c}" for c in plan.commands)
    install(plan)
    notes = "".join(f"{note}\n" for note in plan.notes)
    return f"wrote {plan.path}\n{notes}now run:\n" + "\n".join(f"  {c}" for c in plan.commands)

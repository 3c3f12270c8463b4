"""``photostyle service install``: write (or print) the systemd unit and say how to enable it."""

from __future__ import annotations

from pipeline.app import App
from pipeline.service import install, plan_install


def service_install(app: App, *, user: bool, dry_run: bool) -> str:
    plan = plan_install(app.config, app.config_path, user=user)
    if dry_run:
        header = f"# {plan.path} (dry run: not written)\n"
        return header + plan.text + "\n# then:\n" + "\n".join(f"#   {c}" for c in plan.commands)
    install(plan)
    return f"wrote {plan.path}\nnow run:\n" + "\n".join(f"  {c}" for c in plan.commands)

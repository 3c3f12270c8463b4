"""The README stays true: every picture and file it links to exists, every in-page link has its heading.

A newcomer decides by the pictures at the top and follows the links; a renamed file or
section would leave them a broken image or a dead link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: The pictures are small JPEGs: a few hundred KB in all keeps the checkout light.
FIGURES_MAX_BYTES = 600_000


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def links() -> list[str]:
    # Code blocks may hold text that looks like a link; they are not links.
    prose = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    return LINK.findall(prose)


def test_every_file_the_readme_links_to_exists() -> None:
    local = [target for target in links() if not re.match(r"[a-z]+:", target) and not target.startswith("#")]
    assert local, "the README links to files (the pictures at its top, at least)"
    missing = [target for target in local if not (REPO / target.split("#", 1)[0]).exists()]
    assert missing == []


def test_every_in_page_link_has_its_heading() -> None:
    headings = {github_slug(line.lstrip("#")) for line in README.splitlines() if line.startswith("#")}
    anchors = [target[1:] for target in links() if target.startswith("#")]
    assert anchors
    assert [anchor for anchor in anchors if anchor not in headings] == []


def test_the_readme_opens_with_the_pictures_and_they_stay_small() -> None:
    top = README.split("\n## ", 1)[0]
    pictures = [target for target in LINK.findall(top) if target.startswith("docs/figures/")]
    assert len(pictures) >= 7  # the photo, six styles, one with the photo's colours
    total = sum((REPO / picture).stat().st_size for picture in pictures)
    assert total <= FIGURES_MAX_BYTES, f"{total} bytes of pictures"


def test_where_things_live_names_every_module_of_the_core() -> None:
    section = README.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    core = REPO / "pipeline"
    modules = {path.name for path in core.rglob("*.py") if path.name not in ("__init__.py", "__main__.py")}
    rooms = {f"{path.name}/" for path in core.rglob("*") if (path / "__init__.py").is_file() and path != core}
    assert sorted(name for name in modules | rooms if f"`{name}`" not in section) == []


#: System paths the README may name: where systemd, Ray and the service sandbox keep things, which every
#: machine has. An entry ending in "/" allows everything under it; any other entry allows that exact path.
SYSTEM_PATHS = (
    "/etc/systemd/",  # where `service install` writes a system-wide unit
    "/usr/",  # /usr/bin/env and other system programs
    "/var/",  # /var/tmp, which PrivateTmp=yes hides
    "/bin/sh",  # how a unit starts a Python whose path systemd would refuse
    "/dev/",  # the NVIDIA device nodes a DevicePolicy must allow, /dev/shm
    "/srv",  # a place to keep the project outside /tmp
    "/tmp",  # named bare: what PrivateTmp=yes hides (no file under it)
    "/tmp/ray",  # Ray's own socket folder
    "~/.ray/auth_token",  # Ray's token file
)
#: A path starts after a space, a quote, a bracket, `=` or the start of a line (so `.../ray`, URLs and
#: relative paths such as `docs/figures/x.jpg` are not paths outside the repository).
OUTSIDE_PATH = re.compile(r"(?:^|(?<=[\s`'\"(\[=]))(?:\.\./|~/|\$HOME\b|/)[^\s`'\")\]<>,;]*", re.MULTILINE)


def paths_outside_the_repository(text: str) -> list[str]:
    """Paths in ``text`` that point outside the repository and are not allowed system paths."""
    found = []
    for match in OUTSIDE_PATH.finditer(text):
        path = match.group(0).rstrip(".:")
        if path in ("/", "~/"):
            continue
        allowed = any(path.startswith(entry) if entry.endswith("/") else path == entry for entry in SYSTEM_PATHS)
        if not allowed:
            found.append(path)
    return found


def test_the_readme_names_no_path_outside_the_repository() -> None:
    """A reader has a clone, nothing else: no ../shared, /tmp, /work or home folder of ours."""
    assert paths_outside_the_repository(README) == []


@pytest.mark.parametrize("planted", [
    "Build it with `python ../shared/tools/hed_vgg19.py`.",
    "the weights at /tmp/vgg19-hed.pth are",
    "(see /work/shared/images/README.md)",
    "    --weights ~/models/vgg19.pth \\",
    "cp x $HOME/styles/",
    "stored in /home/alice/photos or",
    "--out=/root/figures",
    "--out /tmp/figures",
])
def test_a_path_outside_the_repository_is_caught(planted: str) -> None:
    assert paths_outside_the_repository(f"Some prose.\n{planted}\nMore prose.") != []


def test_system_paths_and_repository_paths_pass() -> None:
    text = ("`/etc/systemd/system/photostyle.service`, `/usr/bin/env`, `/var/tmp`, under `/tmp` or `/srv`, "
            "`/tmp/ray`, `~/.ray/auth_token`, DeviceAllow=/dev/nvidia0 rw, `.../ray start`, "
            "https://download.pytorch.org/whl/cpu, docs/figures/astronaut.jpg, inbox/<preset>/, and/or")
    assert paths_outside_the_repository(text) == []

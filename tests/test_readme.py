"""The README stays true: every picture and file it links to exists, every in-page link has its heading.

A newcomer decides by the pictures at the top and follows the links; a renamed file or
section would leave them a broken image or a dead link.
"""

from __future__ import annotations

import re
from pathlib import Path

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

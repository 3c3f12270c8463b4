"""The gallery: ``outbox/index.html`` kept current by the plugin, rebuilt by ``photostyle gallery``."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo, write_config
from pipeline.cli import main

CHROMIUM = Path("/usr/bin/chromium")
NAMES = ("one.jpg", "a&b<c>.jpg", "big.png")


@dataclass
class Card:
    name: str = ""
    labels: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    missing: int = 0


class GalleryPage(HTMLParser):
    """Cards as a reader sees them: name, figure labels, thumbnail sources, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cards: list[Card] = []
        self._field: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "article" and "card" in classes:
            self.cards.append(Card())
        elif not self.cards:
            return
        elif tag == "img":
            self.cards[-1].images.append(attributes["src"] or "")
        elif tag == "a":
            self.cards[-1].links.append(attributes["href"] or "")
        elif "missing" in classes:
            self.cards[-1].missing += 1
        elif tag == "figcaption" or "name" in classes:
            self._field = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._field:
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field == "figcaption":
            self.cards[-1].labels.append(data)
        elif self._field == "div":
            self.cards[-1].name += data


@dataclass
class Project:
    config: Path
    photos: list[Path]
    outputs: list[Path]
    cards_after_first_run: int

    @property
    def outbox(self) -> Path:
        return self.config.parent / "outbox"

    @property
    def index(self) -> Path:
        return self.outbox / "index.html"


def _make_photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"big.png": (600, 400)}  # a thumbnail of this one must be smaller than the photo
    photos = []
    for seed, name in enumerate(NAMES):
        path = folder / name
        synthetic_photo(sizes.get(name, (64, 48)), seed=seed).save(path)
        photos.append(path)
    return photos


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Three photos processed, then the first one again: four results, the gallery kept by the plugin."""
    root = tmp_path_factory.mktemp("gallery")
    config = write_config(root / "project")
    photos = _make_photos(root / "photos")
    assert main(["process", *map(str, photos), "-c", str(config)]) == 0
    index = config.parent / "outbox" / "index.html"
    first = len(GalleryPage(index.read_text()).cards)
    assert main(["process", str(photos[0]), "-c", str(config)]) == 0
    tiny = config.parent / "outbox" / "tiny"
    outputs = [tiny / "one.jpg", tiny / "a&b<c>.jpg", tiny / "big.jpg", tiny / "one-1.jpg"]
    return Project(config, photos, outputs, first)


def _thumbnail_file(outbox: Path, src: str) -> Path:
    assert not src.startswith(("/", "file:", "http")), src
    return outbox / unquote(src)


def test_gallery_is_updated_after_each_job_and_lists_every_result_newest_first(project: Project) -> None:
    assert project.cards_after_first_run == 3
    cards = GalleryPage(project.index.read_text()).cards
    assert [card.name for card in cards] == [output.name for output in reversed(project.outputs)]
    for card in cards:
        assert card.labels == ["Original", "Style", "Result"]
        assert len(card.images) == 3 and card.missing == 0


def test_thumbnails_are_small_files_beside_not_instead_of_the_results(project: Project) -> None:
    cards = GalleryPage(project.index.read_text()).cards
    outputs = {output.resolve() for output in project.outputs}
    for card in cards:
        for src in card.images:
            thumbnail = _thumbnail_file(project.outbox, src)
            assert thumbnail.is_file(), src
            assert ".thumbs" in thumbnail.parts and thumbnail.resolve() not in outputs
            with Image.open(thumbnail) as image:
                assert image.format == "JPEG" and max(image.size) <= 256
        [link] = card.links  # the result thumbnail opens the full result
        assert (project.outbox / unquote(link)).resolve() in outputs
    big = next(card for card in cards if card.name == "big.jpg")
    with Image.open(_thumbnail_file(project.outbox, big.images[0])) as original:
        assert original.size == (256, 171)  # the 600x400 photo, shrunk


def test_page_is_self_contained_and_escapes_file_names(project: Project) -> None:
    text = project.index.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert "a&b<c>" not in text
    assert "a&amp;b&lt;c&gt;.jpg" in text
    assert "a%26b%3Cc%3E.jpg" in text  # and in URLs, percent-encoded
    assert "<style>" in text


def test_gallery_command_rebuilds_from_sidecars_after_the_originals_are_gone(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "project"
    shutil.copytree(project.config.parent, copy)
    # the sidecars name the first project's style image: the copy's config uses it too, so it may be read
    write_config(copy, preset={"style": str(project.config.parent / "style.png")})
    index = copy / "outbox" / "index.html"
    index.unlink()
    photos_dir = project.photos[0].parent  # the daemon moves originals away; here they go, for this test
    shutil.move(photos_dir, tmp_path / "photos-away")
    try:
        assert main(["gallery", "-c", str(copy / "config.yaml")]) == 0
        assert capsys.readouterr().out.strip() == f"{index} (4 results)"
        cards = GalleryPage(index.read_text()).cards
        assert [card.name for card in cards] == [output.name for output in reversed(project.outputs)]
        assert all(card.missing == 0 for card in cards), "thumbnails made at job time survive the originals"

        shutil.rmtree(copy / "outbox" / ".thumbs")  # lost thumbnails: remade from what still exists
        (copy / "outbox" / "tiny" / "big.jpg").unlink()  # a result deleted by hand leaves the gallery
        assert main(["gallery", "-c", str(copy / "config.yaml")]) == 0
        assert capsys.readouterr().out.strip() == f"{index} (3 results)"
        cards = GalleryPage(index.read_text()).cards
        assert [card.name for card in cards] == ["one-1.jpg", "a&b<c>.jpg", "one.jpg"]
        for card in cards:
            assert card.labels == ["Original", "Style", "Result"]
            assert len(card.images) == 2 and card.missing == 1  # the original is gone: a placeholder
            assert all(_thumbnail_file(copy / "outbox", src).is_file() for src in card.images)
    finally:
        shutil.move(tmp_path / "photos-away", photos_dir)


def test_results_outside_the_outbox_are_not_in_the_gallery(photo: Path, config_file: Path, tmp_path: Path) -> None:
    assert main(["process", str(photo), "-c", str(config_file), "-o", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "holiday.jpg.json").is_file()  # the sidecar still travels with it
    assert not (config_file.parent / "outbox").exists()


def test_a_gallery_that_cannot_be_written_does_not_fail_the_job(
    photo: Path, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = config_file.parent / "outbox"
    (outbox / "index.html").mkdir(parents=True)  # cannot be replaced by a file
    (outbox / ".thumbs").write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert main(["process", str(photo), "-c", str(config_file)]) == 0
    assert (outbox / "tiny" / "holiday.jpg").is_file()
    assert "thumbnail not written" in caplog.text and "gallery not updated" in caplog.text


def test_an_empty_outbox_gets_an_empty_gallery(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gallery", "-c", str(config_file)]) == 0
    index = config_file.parent / "outbox" / "index.html"
    assert capsys.readouterr().out.strip() == f"{index} (0 results)"
    assert "No results yet" in index.read_text()


# Test-only probe added to a copy of the page (the gallery itself has no script). In the copy the images
# load eagerly, so the load event waits for every one; the probe then writes each image's decoded size and
# on-screen box into the DOM that --dump-dom prints. (Boxes do not depend on loading: CSS sizes the frames.)
PROBE = """<script>
addEventListener("load", () => {
  const found = [...document.images].map(img => {
    const box = img.getBoundingClientRect();
    return {src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth,
            height: img.naturalHeight, box: [box.left, box.top, box.right, box.bottom]};
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(found);
  document.body.append(out);
});
</script>"""


def _chromium(page: Path, profile: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium at a fixed window, scale and colour profile, so two runs lay the page out alike."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--force-color-profile=srgb", "--virtual-time-budget=10000",
        f"--user-data-dir={profile}", "--window-size=1200,900", *options, page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _as_drawn(thumbnail: Path, width: int, height: int) -> np.ndarray:
    """The thumbnail as CSS ``object-fit: cover`` draws it into a ``width`` x ``height`` box."""
    with Image.open(thumbnail) as image:
        image = image.convert("RGB")
        scale = max(width / image.width, height / image.height)
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float64)


def test_headless_chromium_renders_the_gallery(project: Project, tmp_path: Path) -> None:
    import html
    import json
    import os
    import re

    if not CHROMIUM.exists():
        if os.environ.get("PHOTOSTYLE_REQUIRE_CHROMIUM"):  # .ci/run installed it: a skip would hide a failure
            pytest.fail(f"{CHROMIUM} is missing although PHOTOSTYLE_REQUIRE_CHROMIUM is set")
        pytest.skip(f"needs {CHROMIUM} (Debian's chromium package; .ci/run installs it)")
    shot = tmp_path / "shot.png"
    _chromium(project.index, tmp_path / "profile", f"--screenshot={shot}")
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 10, "a blank page"

    probed = project.outbox / ".probe.html"  # beside index.html, so the thumbnails' relative paths hold
    probed.write_text(project.index.read_text().replace(' loading="lazy"', "").replace("</body>", PROBE + "</body>"))
    try:
        dumped = _chromium(probed, tmp_path / "profile", "--dump-dom")
    finally:
        probed.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, f"the probe did not run: {dumped.stdout[-500:]} {dumped.stderr[-500:]}"
    images = json.loads(html.unescape(found.group(1)))
    cards = GalleryPage(project.index.read_text()).cards
    assert [entry["src"] for entry in images] == [src for card in cards for src in card.images]
    assert len(images) == 3 * len(project.outputs), "three thumbnails a card"
    for entry in images:  # every thumbnail loaded, at its file's size, and is drawn where the page lays it out
        assert entry["complete"] and entry["width"] > 0, f"{entry['src']} did not load"
        thumbnail = _thumbnail_file(project.outbox, entry["src"])
        with Image.open(thumbnail) as image:
            assert (entry["width"], entry["height"]) == image.size, entry
        left, top, right, bottom = (round(value) for value in entry["box"])
        assert right - left > 50 and bottom - top > 50 and bottom <= 900, f"{entry['src']} not in view: {entry}"
        inset = 8  # the frame's rounded corners
        drawn = pixels[top + inset:bottom - inset, left + inset:right - inset]
        expected = _as_drawn(thumbnail, right - left, bottom - top)[inset:-inset, inset:-inset]
        mismatch = np.abs(drawn - expected).mean()
        assert mismatch < 6, f"{entry['src']} is not what the screenshot shows there (mean difference {mismatch:.1f})"


# --- hostile outboxes: the outbox is a synced folder others write ----------------------------------


def _jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_photo((40, 30), seed=seed).save(path, format="JPEG")
    return path


def _sidecar(output: Path, minute: int, source: Path | None = None, style: Path | None = None) -> Path:
    """A sidecar as photostyle writes it (only the keys the gallery reads)."""
    record = {
        "sidecar_format": 1, "photostyle": "test", "job_id": f"job{minute}", "preset": "tiny",
        "input": str(source or output.with_name("original.jpg")), "output": str(output), "seconds": 1.5,
        "settings": {"style": str(style) if style else None},
        "created": f"2030-01-01T00:{minute:02d}:00+00:00",
    }
    path = Path(f"{output}.json")
    path.write_text(json.dumps(record))
    return path


def test_odd_entries_in_the_outbox_are_skipped_never_followed_never_fatal(tmp_path: Path) -> None:
    """Seen: a symlinked result made ``photostyle gallery`` raise ValueError."""
    config = write_config(tmp_path / "project")
    tiny = config.parent / "outbox" / "tiny"
    private = _jpeg(tmp_path / "private" / "secret.jpg", seed=7)  # readable by the user, not in any photostyle folder
    good = _jpeg(tiny / "good.jpg")
    _sidecar(good, 1)
    latin = Path(os.fsdecode(os.fsencode(tiny) + b"/caf\xe9.jpg"))
    _jpeg(latin, seed=1)
    _sidecar(latin, 2)
    spy = _jpeg(tiny / "spy.jpg", seed=2)  # a planted sidecar naming a private file as its original and style
    _sidecar(spy, 3, source=private, style=private)
    (tiny / "link.jpg").symlink_to(private)  # a result that is a link out of the outbox
    _sidecar(tiny / "link.jpg", 4)
    (tiny / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    _sidecar(tiny / "dangling.jpg", 5)
    os.mkfifo(tiny / "fifo.jpg")  # a result that is a FIFO: opening it would block
    _sidecar(tiny / "fifo.jpg", 6)
    _jpeg(tiny / "pipe.jpg")
    os.mkfifo(tiny / "pipe.jpg.json")  # a sidecar that is a FIFO
    _jpeg(tiny / "linked-sidecar.jpg")
    (tiny / "linked-sidecar.jpg.json").symlink_to(_sidecar(_jpeg(tmp_path / "private" / "x.jpg"), 7))
    _jpeg(tiny / "garbled.jpg")
    (tiny / "garbled.jpg.json").write_bytes(b'{"sidecar_format": 1, "created": \xff')
    _jpeg(tiny / "no-date.jpg")
    (tiny / "no-date.jpg.json").write_text('{"sidecar_format": 1}')
    outside = tmp_path / "private" / "folder"
    _sidecar(_jpeg(outside / "elsewhere.jpg"), 8)
    (config.parent / "outbox" / "linked-folder").symlink_to(outside, target_is_directory=True)

    run = subprocess.run([sys.executable, "-m", "pipeline", "gallery", "-c", str(config)], capture_output=True,
                         timeout=120, check=False)
    stderr = run.stderr.decode("utf-8")
    assert run.returncode == 0, stderr
    assert run.stdout.decode().strip().endswith("(3 results)") and "Traceback" not in stderr
    for skipped in ("link", "dangling", "fifo", "pipe", "linked-sidecar", "garbled", "no-date"):
        assert re.search(rf"gallery: skipping \S*/{skipped}\.jpg\.json: ", stderr), (skipped, stderr)
    page = (config.parent / "outbox" / "index.html").read_text(encoding="utf-8")
    cards = GalleryPage(page).cards
    assert [card.name for card in cards] == ["spy.jpg", "caf\\xe9.jpg", "good.jpg"]
    assert cards[1].links[0] == "tiny/caf%E9.jpg", "the link holds the name's exact bytes"
    assert os.path.samefile(os.fsencode(config.parent / "outbox") + b"/" + unquote_to_bytes(cards[1].links[0]), latin)
    spy_card = cards[0]
    assert len(spy_card.images) == 1 and spy_card.missing == 2, "nothing outside photostyle's folders is read"
    thumbs = [p.name for p in (config.parent / "outbox" / ".thumbs").rglob("*.jpg")]
    assert not [name for name in thumbs if name.startswith(("link.", "dangling.", "fifo.", "spy.jpg.original",
                                                            "spy.jpg.style", "elsewhere."))], thumbs


def test_each_job_adds_its_card_without_reading_older_sidecars(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Seen: every job re-read every sidecar (0.06 -> 0.34 s a job as the outbox grew)."""
    config = write_config(tmp_path / "project")
    outbox = config.parent / "outbox"
    tiny = outbox / "tiny"
    private = _jpeg(tmp_path / "private.jpg")
    tiny.mkdir(parents=True)
    (tiny / "planted.jpg").symlink_to(private)  # before the index exists: the first job rebuilds around it
    _sidecar(tiny / "planted.jpg", 1)
    photos = [_jpeg(tmp_path / "photos" / name, seed) for seed, name in enumerate(("a.jpg", "d.jpg", "b.jpg"))]
    with caplog.at_level(logging.WARNING):
        assert main(["process", str(photos[0]), str(photos[1]), "-c", str(config)]) == 0
    assert "gallery not updated" not in caplog.text
    assert [card.name for card in GalleryPage((outbox / "index.html").read_text()).cards] == ["d.jpg", "a.jpg"]

    (tiny / "a.jpg.json").write_text("{garbled")  # indexed already: the next job must not need it
    (tiny / "d.jpg").unlink()  # a result deleted by hand leaves the page at the next job
    assert main(["process", str(photos[2]), "-c", str(config)]) == 0
    cards = GalleryPage((outbox / "index.html").read_text()).cards
    assert [card.name for card in cards] == ["b.jpg", "a.jpg"]
    assert all(card.missing == 0 for card in cards)

    assert main(["gallery", "-c", str(config)]) == 0  # the command still rebuilds from the sidecars
    assert [card.name for card in GalleryPage((outbox / "index.html").read_text()).cards] == ["b.jpg"]


def test_a_damaged_or_hostile_index_is_rebuilt_or_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.gallery.page import CARDS_NAME, add_to_gallery, write_gallery

    outbox = tmp_path / "outbox"
    first = _sidecar(_jpeg(outbox / "tiny" / "first.jpg"), 1)
    write_gallery(outbox)
    index = outbox / ".thumbs" / CARDS_NAME
    data = json.loads(index.read_text())
    secret = _jpeg(tmp_path / "secret.jpg")
    data["cards"] += [{"output": "../secret.jpg", "created": "2030-01-01T00:09:00+00:00"},
                      {"output": str(secret), "created": "2030-01-01T00:09:00+00:00"}, "junk"]
    index.write_text(json.dumps(data))
    second = _sidecar(_jpeg(outbox / "tiny" / "second.jpg"), 2)
    with caplog.at_level(logging.WARNING):
        add_to_gallery(outbox, second)
    assert "secret" in caplog.text  # entries naming files outside the outbox are dropped, with a warning
    names = [card.name for card in GalleryPage((outbox / "index.html").read_text()).cards]
    assert names == ["second.jpg", "first.jpg"]

    index.write_bytes(b"\x00garbage")
    third = _sidecar(_jpeg(outbox / "tiny" / "third.jpg"), 3)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        add_to_gallery(outbox, third)
    assert "rebuilding it from the sidecars" in caplog.text
    names = [card.name for card in GalleryPage((outbox / "index.html").read_text()).cards]
    assert names == ["third.jpg", "second.jpg", "first.jpg"] and first.exists()


def test_a_planted_index_entry_cannot_link_out_of_the_outbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Seen: ``{"output": "evil/secret.jpg"}`` with ``outbox/evil`` a link out was put on the page by the next job.

    The per-job update checks every entry exactly as the full rebuild checks what it walks: no hidden part,
    every folder a real folder (never a link to one), the result a regular file.
    """
    from pipeline.gallery.page import CARDS_NAME, add_to_gallery, write_gallery

    outbox = tmp_path / "outbox"
    _sidecar(_jpeg(outbox / "tiny" / "first.jpg"), 1)
    write_gallery(outbox)
    private = tmp_path / "private"
    _jpeg(private / "secret.jpg", seed=7)
    _jpeg(private / "deeper" / "secret.jpg", seed=8)
    (outbox / "evil").symlink_to(private, target_is_directory=True)  # a folder link out of the outbox
    (outbox / "tiny" / "inner").symlink_to(private / "deeper", target_is_directory=True)
    _jpeg(outbox / ".hidden" / "h.jpg")
    index = outbox / ".thumbs" / CARDS_NAME
    data = json.loads(index.read_text())
    planted = ["evil/secret.jpg", "tiny/inner/secret.jpg", ".hidden/h.jpg", ".thumbs/tiny/first.jpg.result.jpg"]
    data["cards"] += [{"output": name, "created": "2030-01-01T00:09:00+00:00", "thumbnails": ["result"]}
                      for name in planted]
    index.write_text(json.dumps(data))
    second = _sidecar(_jpeg(outbox / "tiny" / "second.jpg"), 2)
    thumbs = outbox / ".thumbs" / "tiny"
    thumbs.mkdir(parents=True, exist_ok=True)
    (thumbs / "second.jpg.original.jpg").symlink_to(private / "secret.jpg")  # a planted thumbnail link

    with caplog.at_level(logging.WARNING):
        add_to_gallery(outbox, second)
    page = (outbox / "index.html").read_text()
    cards = GalleryPage(page).cards
    assert [card.name for card in cards] == ["second.jpg", "first.jpg"], page
    assert "secret" not in page and "evil" not in page and ".hidden" not in page
    assert cards[0].images == [] and cards[0].missing == 3, "a linked thumbnail is not shown"
    for name in planted:
        assert name in caplog.text, (name, caplog.text)  # each dropped with a warning naming it
    kept = [card["output"] for card in json.loads(index.read_text())["cards"]]
    assert sorted(kept) == ["tiny/first.jpg", "tiny/second.jpg"], "the planted entries leave the index too"

    write_gallery(outbox)  # the full rebuild shows the same
    assert [card.name for card in GalleryPage((outbox / "index.html").read_text()).cards] == ["second.jpg", "first.jpg"]

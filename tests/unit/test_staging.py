"""staging: the staged output folder, committed whole or merged, and its background writer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from trinity.errors import ConfigError, ResourceError
from trinity.manifest import MANIFEST_FILE
from trinity.staging import MARKER_DIR, BackgroundWriter, StagedOutput, check_output_dir


def files_under(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    """An output folder a previous build wrote."""
    out = tmp_path / "output"
    (out / MARKER_DIR).mkdir(parents=True)
    (out / "index.html").write_text("old home")
    (out / "gone" / "index.html").parent.mkdir()
    (out / "gone" / "index.html").write_text("old page")
    return out


def siblings(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_commit_swaps_in_the_new_tree(tmp_path: Path, previous: Path) -> None:
    with StagedOutput(previous) as staged:
        staged.write_text("index.html", "new home")
        staged.write_text("about/index.html", "about")
        assert (previous / "index.html").read_text() == "old home"  # untouched until commit
        staged.commit()
    assert files_under(previous) == {"index.html": "new home", "about/index.html": "about"}
    assert (previous / MARKER_DIR).is_dir()
    assert siblings(tmp_path) == ["output"]  # no staging or retired folder left behind


def test_a_commit_that_keeps_pages_moves_in_only_what_changed(
    tmp_path: Path, previous: Path
) -> None:
    (previous / "keep" / "index.html").parent.mkdir()
    (previous / "keep" / "index.html").write_text("kept page")
    (previous / "stray.txt").write_text("not part of the site")
    (previous / "link").symlink_to(tmp_path)
    (previous / MANIFEST_FILE).write_text("old manifest")
    kept_inode = (previous / "keep" / "index.html").stat().st_ino
    with StagedOutput(previous, manifest=MANIFEST_FILE) as staged:
        assert staged.keep("keep/index.html", len("kept page"))
        staged.write_text("index.html", "new home")
        staged.write_text("new/index.html", "new page")
        staged.write_text(MANIFEST_FILE, "new manifest")
        staged.commit()
    assert files_under(previous) == {
        "index.html": "new home",
        "keep/index.html": "kept page",
        "new/index.html": "new page",
        MANIFEST_FILE: "new manifest",
    }
    assert (previous / "keep" / "index.html").stat().st_ino == kept_inode  # never rewritten
    assert not (previous / "gone").exists()  # the emptied folder of a removed page
    assert not (previous / "link").is_symlink()
    assert siblings(tmp_path) == ["output"]


@pytest.mark.parametrize(
    ("content", "size"), [("edited by hand", len("kept page")), ("kept page", 3)]
)
def test_keep_refuses_a_file_of_another_size(
    tmp_path: Path, previous: Path, content: str, size: int
) -> None:
    (previous / "page.html").write_text(content)
    with StagedOutput(previous) as staged:
        assert staged.keep("page.html", size) is (len(content) == size)
        assert not staged.keep("missing.html", 1)
        assert not staged.keep("gone", 0)  # a folder, not a file
        with pytest.raises(ValueError, match="outside the output folder"):
            staged.keep("../output/page.html", len(content))


def test_a_merge_cut_short_leaves_no_manifest_to_trust(tmp_path: Path, previous: Path) -> None:
    (previous / "keep.html").write_text("kept")
    (previous / MANIFEST_FILE).write_text("old manifest")
    (previous / "blocker" / "index.html").mkdir(parents=True)  # a folder where a file goes
    with StagedOutput(previous, manifest=MANIFEST_FILE) as staged:
        assert staged.keep("keep.html", len("kept"))
        staged.write_text("blocker/index.html", "new page")
        staged.write_text(MANIFEST_FILE, "new manifest")
        with pytest.raises(ResourceError, match="may hold part of the new site") as raised:
            staged.commit()
        assert isinstance(raised.value.__cause__, IsADirectoryError)
    # The next build renders every page, since no manifest vouches for what is on disk.
    assert not (previous / MANIFEST_FILE).exists()
    assert (previous / "keep.html").read_text() == "kept"


@pytest.mark.parametrize("blocker", ["link", "file"])
def test_a_link_or_a_file_in_the_way_makes_the_commit_a_swap(
    tmp_path: Path, previous: Path, blocker: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (previous / "keep.html").write_text("kept")
    if blocker == "link":
        (previous / "new").symlink_to(outside)  # a page's folder, led elsewhere
    else:
        (previous / "new").write_text("a file where the page's folder goes")
    with StagedOutput(previous) as staged:
        assert staged.keep("keep.html", len("kept"))
        staged.write_text("new/index.html", "new page")
        staged.commit()
    assert files_under(previous) == {"keep.html": "kept", "new/index.html": "new page"}
    assert not (previous / "new").is_symlink()
    assert not any(outside.iterdir()), "nothing was written through the link"
    assert siblings(tmp_path) == ["output", "outside"]


def test_commit_into_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with StagedOutput(out) as staged:
        staged.write_text("index.html", "hi")
        staged.commit()
    assert files_under(out) == {"index.html": "hi"}
    assert (out / MARKER_DIR).is_dir()


def test_an_empty_existing_folder_may_be_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with StagedOutput(out) as staged:
        staged.write_text("index.html", "hi")
        staged.commit()
    assert files_under(out) == {"index.html": "hi"}


def test_discard_leaves_the_previous_output_untouched(tmp_path: Path, previous: Path) -> None:
    before = files_under(previous)
    staged = StagedOutput(previous)
    staged.write_text("index.html", "new home")
    staged.discard()
    assert files_under(previous) == before
    assert siblings(tmp_path) == ["output"]


def test_leaving_the_block_with_an_error_discards(tmp_path: Path, previous: Path) -> None:
    before = files_under(previous)
    with pytest.raises(RuntimeError), StagedOutput(previous) as staged:
        staged.write_text("index.html", "half a build")
        raise RuntimeError("build failed")
    assert files_under(previous) == before
    assert siblings(tmp_path) == ["output"]


def test_a_failed_swap_puts_the_old_output_back(
    tmp_path: Path, previous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = files_under(previous)
    staged = StagedOutput(previous)
    staged.write_text("index.html", "new")
    original_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:
        if self == staged.staging:
            raise OSError("cross-device link")
        return original_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(ResourceError, match=r"cross-device.*previous site was left as it was"):
        staged.commit()
    monkeypatch.undo()
    staged.discard()
    assert files_under(previous) == before


def test_refuses_to_replace_a_folder_trinity_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError) as caught:
        StagedOutput(out)
    assert caught.value.key == "build.output_dir"
    assert str(caught.value).startswith(
        "build.output_dir: precious is not empty and was not written by Trinity"
    )
    assert MARKER_DIR in str(caught.value)
    assert (out / "thesis.tex").read_text() == "years of work"
    assert siblings(tmp_path) == ["precious"]


def test_a_refused_output_folder_outside_the_working_folder_is_shown_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError) as caught:
        check_output_dir(out)
    assert f"build.output_dir: {out} is not empty" in str(caught.value)


def test_check_output_dir_accepts_a_missing_an_empty_or_a_trinity_folder(
    tmp_path: Path, previous: Path
) -> None:
    check_output_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    check_output_dir(previous)
    assert not (tmp_path / "missing").exists()


def test_refuses_a_file_as_output(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(ConfigError) as caught:
        StagedOutput(out)
    assert caught.value.key == "build.output_dir"
    assert str(caught.value) == "build.output_dir: file exists and is not a folder"


def test_a_marker_file_is_not_a_marker_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER_DIR).write_text("fake")
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError):
        StagedOutput(out)


@pytest.mark.parametrize(
    "relative",
    ["../escape.html", "a/../../escape.html", "/etc/passwd", "../output/x", "./../x"],
)
def test_path_refuses_to_escape(tmp_path: Path, relative: str) -> None:
    with StagedOutput(tmp_path / "output") as staged:
        with pytest.raises(ValueError, match="outside the output folder"):
            staged.path(relative)
        with pytest.raises(ValueError):
            staged.write_text(relative, "x")
    assert not (tmp_path / "escape.html").exists()


def test_path_refuses_a_symlink_that_leads_out(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "output") as staged:
        (staged.staging / "link").symlink_to(tmp_path)
        with pytest.raises(ValueError):
            staged.path("link/x.html")


def test_write_text_refuses_a_symlinked_folder_even_after_writing_beside_it(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with StagedOutput(tmp_path / "output") as staged:
        staged.write_text("a/index.html", "first")
        (staged.staging / "a" / "link").symlink_to(outside)
        with pytest.raises(ValueError, match="outside the output folder"):
            staged.write_text("a/link/x.html", "x")
        with pytest.raises(ValueError, match="outside the output folder"):
            staged.write_text("a/", "x")
        staged.write_text("a/second.html", "second")
        staged.commit()
    assert files_under(tmp_path / "output" / "a") == {
        "index.html": "first",
        "second.html": "second",
    }
    assert not any(outside.iterdir())


@pytest.mark.parametrize("relative", ["index.html", "a/b/index.html", "a/../b.html"])
def test_path_inside_is_allowed(tmp_path: Path, relative: str) -> None:
    with StagedOutput(tmp_path / "output") as staged:
        assert staged.path(relative).is_relative_to(staged.staging.resolve())


def test_copy_static_later_folders_override(tmp_path: Path) -> None:
    parent, child = tmp_path / "parent", tmp_path / "child"
    (parent / "img").mkdir(parents=True)
    child.mkdir()
    (parent / "style.css").write_text("parent")
    (parent / "img" / "a.svg").write_text("svg")
    (child / "style.css").write_text("child")
    with StagedOutput(tmp_path / "output") as staged:
        assert staged.copy_static([parent, child]) == {
            "static/style.css": len("child"),
            "static/img/a.svg": len("svg"),
        }
        staged.commit()
    assert files_under(tmp_path / "output" / "static") == {
        "style.css": "child",
        "img/a.svg": "svg",
    }


# --------------------------------------------------------------------------- BackgroundWriter


class GatedOutput(StagedOutput):
    """Writes only while `gate` is set, and counts the files it was asked for."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(output_dir)
        self.gate = threading.Event()
        self.entered = threading.Event()  # the first file is in the writer's hands
        self.asked = 0

    def write_text(self, relative: str, text: str) -> None:
        self.asked += 1
        self.entered.set()
        self.gate.wait(timeout=30)
        super().write_text(relative, text)


def test_background_writer_writes_every_file_before_close_returns(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "output") as staged:
        with BackgroundWriter(staged, backlog=4) as files:
            for n in range(50):
                files.write_text(f"p{n % 5}/{n}.html", f"page {n}")
            files.close()
        staged.commit()
    written = files_under(tmp_path / "output")
    assert {k: v for k, v in written.items() if not k.startswith(MARKER_DIR)} == {
        f"p{n % 5}/{n}.html": f"page {n}" for n in range(50)
    }
    assert files.busy_time > 0


def test_background_writer_raises_the_first_error(tmp_path: Path) -> None:
    with StagedOutput(tmp_path / "output") as staged:
        files = BackgroundWriter(staged)
        files.write_text("../escape.html", "x")
        files.write_text("fine.html", "y")
        with pytest.raises(ValueError, match="outside the output folder"):
            files.close()
        with pytest.raises(ValueError, match="outside the output folder"):
            files.write_text("later.html", "z")
        assert not (staged.staging / "fine.html").exists(), "nothing after the error"
    assert not (tmp_path / "escape.html").exists()


def test_background_writer_holds_at_most_its_backlog(tmp_path: Path) -> None:
    with GatedOutput(tmp_path / "output") as staged:
        files = BackgroundWriter(staged, backlog=2)
        producer = threading.Thread(
            target=lambda: [files.write_text(f"{n}.html", "x") for n in range(10)]
        )
        producer.start()
        assert staged.entered.wait(timeout=30)
        producer.join(timeout=0.5)
        # One file in the writer's hands, two waiting: the producer waits for room.
        assert producer.is_alive()
        assert staged.asked == 1
        staged.gate.set()
        producer.join(timeout=30)
        files.close()
        assert len(list(staged.staging.glob("*.html"))) == 10


def test_abandoning_the_writer_drops_what_waits(tmp_path: Path) -> None:
    with GatedOutput(tmp_path / "output") as staged:
        files = BackgroundWriter(staged, backlog=20)
        for n in range(10):
            files.write_text(f"{n}.html", "x")
        assert staged.entered.wait(timeout=30)
        stopper = threading.Thread(target=files.abandon)
        stopper.start()
        assert files.abandoned.wait(timeout=30)
        staged.gate.set()
        stopper.join(timeout=30)
        assert not stopper.is_alive()
        assert staged.asked == 1  # the one in the writer's hands when it was abandoned
        assert len(list(staged.staging.glob("*.html"))) == staged.asked

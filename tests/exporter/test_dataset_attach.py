"""Bring your own labelled set: every task's layout attached from a folder and a zip, and every
hostile case refused with one line while the workspace stays byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from exporter.dataset_attach import attach_dataset
from exporter.datasets import digest
from exporter.errors import DatasetError
from exporter.workspace import Workspace
from tests.helpers import cli

LAYOUTS = {"demo-classification": "imagefolder", "demo-regression": "images+targets.csv",
           "demo-anomaly": "mvtec", "demo-detection": "coco", "demo-instance-segmentation": "coco",
           "demo-segmentation": "images+masks", "demo-oriented": "dota"}


@pytest.fixture
def small_ws(demo_full_template, tmp_path) -> Path:
    """The demo's projects and experiments described (json only, no checkpoints, no data)."""
    ws = tmp_path / "ws"
    for project_json in (demo_full_template / "projects").glob("*/project.json"):
        target = ws / "projects" / project_json.parent.name
        target.mkdir(parents=True)
        shutil.copyfile(project_json, target / "project.json")
        for experiment_json in project_json.parent.glob("experiments/*/experiment.json"):
            (target / "experiments" / experiment_json.parent.name).mkdir(parents=True)
            shutil.copyfile(experiment_json, target / "experiments" / experiment_json.parent.name / "experiment.json")
    return ws


def tree(root: Path) -> dict[str, str]:
    """Every file's and folder's relative path → its content's sha256 ("dir" for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def val_of(template: Path, project: str) -> Path:
    return template / "projects" / project / "data" / "val"


def zip_folder(folder: Path, target: Path, prefix: str = "", extra: Callable[[zipfile.ZipFile], None] | None = None,
               skip: Callable[[Path], bool] = lambda _: False) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not skip(path):
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        if extra:
            extra(zf)
    return target


def test_each_task_layout_attaches_from_a_folder_or_a_zip(small_ws, demo_full_template, tmp_path):
    workspace = Workspace(small_ws)
    for n, (project, layout) in enumerate(LAYOUTS.items()):
        source = val_of(demo_full_template, project)
        if n % 2:  # a zip of the set inside a folder of its own, as archivers make them
            source = zip_folder(source, tmp_path / f"{project}.zip", prefix="my-set/")
        info = attach_dataset(workspace, project, source)
        assert (info["layout"], info["images"], info["replaced"]) == (layout, 100, False), project
        assert info["digest"] == digest(val_of(demo_full_template, project))  # the same files, nothing else
    again = attach_dataset(workspace, "demo-segmentation", val_of(demo_full_template, "demo-segmentation"))
    assert again["replaced"] and not [p for p in (small_ws / "projects/demo-segmentation").iterdir()
                                      if p.name.startswith(".")]


def _zip_with(name: str, data: bytes = b"x", attr: int | None = None) -> Callable[[zipfile.ZipFile], None]:
    def add(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        if attr is not None:
            info.external_attr = attr << 16
        zf.writestr(info, data)
    return add


def _edited(template: Path, project: str, tmp_path: Path, edit: Callable[[Path], None]) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(val_of(template, project), folder)
    edit(folder)
    return folder


def _json_edit(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))
    return edit


def _damaged(archive: Path) -> Path:
    """Flip bytes inside the first entry's compressed data (its CRC no longer matches)."""
    data = bytearray(archive.read_bytes())
    for i in range(200, 260):
        data[i] ^= 0xFF
    archive.write_bytes(bytes(data))
    return archive


def _resize_first_mask(folder: Path) -> None:
    mask = sorted((folder / "masks").iterdir())[0]
    Image.open(mask).resize((20, 20)).save(mask)


HOSTILE = {
    "dot-dot entry": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip", extra=_zip_with("../escape.png")), "outside its folder"),
    "absolute entry": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip", extra=_zip_with("/tmp/escape.png")), "outside its folder"),
    "symlink entry": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip",
        extra=_zip_with("circle/link.png", b"/etc/passwd", stat.S_IFLNK | 0o777)), "symbolic link"),
    "zip bomb (ratio)": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip", extra=_zip_with("circle/huge.png", bytes(64 << 20))),
        "zip bomb"),
    "non-image file": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip", extra=_zip_with("circle/run.exe")), "neither an image"),
    "empty set": ("demo-classification", lambda t, tmp: zip_folder(tmp / "nothing", tmp / "a.zip"), "empty"),
    "corrupt image": ("demo-classification", lambda t, tmp: zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip", extra=_zip_with("square/cut.png", b"\x89PNG\r\n\x1a\nhalf")),
        "not a readable image"),
    "class folder not in class_names": ("demo-classification", lambda t, tmp: _edited(
        t, "demo-classification", tmp, lambda f: shutil.copytree(f / "circle", f / "hexagon")), "hexagon"),
    "missing annotations.json": ("demo-detection", lambda t, tmp: zip_folder(
        val_of(t, "demo-detection"), tmp / "a.zip", skip=lambda p: p.name == "annotations.json"),
        "annotations.json"),
    "unknown category id": ("demo-detection", lambda t, tmp: _edited(t, "demo-detection", tmp, _json_edit(
        "annotations.json", lambda d: d["annotations"][0].update(category_id=99))), "category_id 99"),
    "broken polygon": ("demo-instance-segmentation", lambda t, tmp: _edited(
        t, "demo-instance-segmentation", tmp, _json_edit(
            "annotations.json", lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]))),
        "broken segmentation"),
    "mask size differs from its image": ("demo-segmentation", lambda t, tmp: _edited(
        t, "demo-segmentation", tmp, _resize_first_mask), "but its image is"),
    "label outside the classes": ("demo-oriented", lambda t, tmp: _edited(t, "demo-oriented", tmp, lambda f: (
        f / "labelTxt" / "val_000.txt").write_text("1 1 9 1 9 9 1 9 ship 0\n")), "'ship'"),
    "damaged zip": ("demo-classification", lambda t, tmp: _damaged(zip_folder(
        val_of(t, "demo-classification"), tmp / "a.zip")), "damaged"),
    "neither folder nor zip": ("demo-oriented", lambda t, tmp: Path(shutil.copyfile(
        val_of(t, "demo-oriented") / "labelTxt" / "val_000.txt", tmp / "val.zip")), "neither a folder nor a .zip"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_sets_are_refused_and_change_nothing(case, small_ws, demo_full_template, tmp_path):
    project, build, expected = HOSTILE[case]
    (tmp_path / "nothing").mkdir()
    source = build(demo_full_template, tmp_path)
    before = tree(small_ws)
    with pytest.raises(DatasetError, match=expected) as refused:
        attach_dataset(Workspace(small_ws), project, source)
    assert "\n" not in refused.value.message
    assert tree(small_ws) == before


def test_total_size_cap(small_ws, demo_full_template, tmp_path, monkeypatch):
    monkeypatch.setenv("AISTUDIO_MAX_DATASET_MB", "0.1")
    before = tree(small_ws)
    source = zip_folder(val_of(demo_full_template, "demo-regression"), tmp_path / "set.zip")
    with pytest.raises(DatasetError, match="AISTUDIO_MAX_DATASET_MB"):
        attach_dataset(Workspace(small_ws), "demo-regression", source)
    assert tree(small_ws) == before


def test_cli_data_add(small_ws, demo_full_template, tmp_path):
    source = zip_folder(val_of(demo_full_template, "demo-anomaly"), tmp_path / "set.zip")
    done = cli("data", "add", "--project", "demo-anomaly", str(source), workspace=small_ws)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Attached demo-anomaly/data/val: 100 images (mvtec)")
    refused = cli("data", "add", "--project", "demo-regression", str(source), "--json", workspace=small_ws)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "targets.csv" in refused.stderr

"""Zips that users send — labelled sets, saved model folders, model code, exports to verify — unpacked entry by
entry, refusing unsafe names, links and bombs before each file is written."""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from exporter.errors import ExportError, UsageError

MAX_RATIO = 100  # an entry that unpacks to more than 100× its compressed size is refused (zip bomb)
MAX_ENTRIES = 200_000


def unpack(archive: Path, target: Path, *, limit: int, error: type[ExportError] = UsageError, hint: str = "",
           skip: Callable[[tuple[str, ...]], bool] | None = None,
           check: Callable[[PurePosixPath], None] | None = None) -> None:
    """Extract ``archive`` into ``target``: at most ``limit`` bytes, raising ``error`` (``hint`` says how to
    raise the limit); entries ``skip`` names are left out, ``check`` may refuse an entry by its name."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            if len(entries) > MAX_ENTRIES:
                raise error(f"{archive.name} holds {len(entries)} entries, over the {MAX_ENTRIES} limit.")
            if (declared := sum(e.file_size for e in entries)) > limit:
                raise error(f"{archive.name} unpacks to {declared / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB "
                            f"limit{f' ({hint})' if hint else ''}.")
            written = 0
            for entry in entries:
                name = PurePosixPath(entry.filename.replace("\\", "/"))
                if entry.filename.startswith(("/", "\\")) or name.is_absolute() or ".." in name.parts or (
                        name.parts and ":" in name.parts[0]):
                    raise error(f"{archive.name} has an entry outside its folder ({entry.filename}); re-create the "
                                "zip from inside the folder.")
                if stat.S_ISLNK(entry.external_attr >> 16):
                    raise error(f"{archive.name} holds a symbolic link ({entry.filename}); zip the files themselves.")
                if entry.is_dir() or (skip and skip(name.parts)):
                    continue
                ratio = entry.file_size // max(entry.compress_size, 1)
                if entry.file_size > (1 << 20) and ratio > MAX_RATIO:
                    raise error(f"{archive.name}: {entry.filename} unpacks {ratio}× its compressed size (over "
                                f"{MAX_RATIO}×); this looks like a zip bomb.")
                if check:
                    check(name)
                path = target.joinpath(*name.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(entry) as src, open(path, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limit:
                            raise error(f"{archive.name} unpacks to more than its declared size and the "
                                        f"{limit / 2**20:.0f} MB limit; this looks like a zip bomb.")
                        dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise error(f"{archive.name} is a damaged or unsupported zip ({exc}); zip the folder again.") from None


@contextmanager
def unpacked(path: Path, *, limit: int, error: type[ExportError] = UsageError, hint: str = "") -> Iterator[Path]:
    """A folder as it is, or a zip unpacked into a scratch folder that is removed afterwards."""
    if path.is_dir():
        yield path
        return
    if not zipfile.is_zipfile(path):
        raise error(f"{path.name} is neither a folder nor a zip.")
    scratch = Path(tempfile.mkdtemp(prefix="aistudio-unzip-"))
    try:
        unpack(path, scratch, limit=limit, error=error, hint=hint)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

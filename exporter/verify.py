"""``verify``: is this the file that was validated? On an export folder, a download's zip or a deploy bundle:
the signature (with the given public key, else the workspace's), every file's digest against the signed ones (a
changed, missing or added file named), the passport against the signed passport (an edited field named), and with
``rerun`` the golden inputs through the file in its own runtime against the golden outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exporter import passport
from exporter.errors import UsageError

MAX_UNZIPPED_BYTES = 64 << 30


def verify(path: Path, public_key: bytes | None = None, rerun: bool = False,
           workspace_root: Path | None = None) -> dict[str, Any]:
    """``{"valid", "path", "folders": [{"folder", "valid", "checks": [{"check", "passed", "detail"}]}]}``.

    Raises:
        UsageError: no such path, not a folder or zip, no ``model.sig`` under it, no public key to check with.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist.")
    key = public_key or _workspace_key(workspace_root)
    with opened(path) as root:
        signed = sorted(p.parent for p in root.rglob(passport.SIGNATURE_FILE))
        if not signed:
            raise UsageError(f"No {passport.SIGNATURE_FILE} under {path}: export folders, downloads with their "
                             "passport and deploy bundles carry one.")
        folders = [{"folder": str(f.relative_to(root)) or ".", **_verify_folder(f, key, rerun)} for f in signed]
    return {"valid": all(f["valid"] for f in folders), "path": str(path),
            "key_fingerprint": passport.fingerprint(_public(key)), "folders": folders}


def _workspace_key(workspace_root: Path | None) -> bytes:
    from exporter.workspace import Workspace

    root = Path(workspace_root) if workspace_root else Workspace().root
    pem = root / passport.KEY_DIR / passport.PUBLIC_KEY
    if not pem.is_file():
        raise UsageError("Give the signer's public key with --public-key PEM (this workspace has signed nothing).")
    return pem.read_bytes()


def _public(pem: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise UsageError(f"The public key is not a PEM public key: {exc}") from None


@contextmanager
def opened(path: Path) -> Iterator[Path]:
    """A folder as it is, or a zip unpacked into a scratch folder (names checked, size bounded)."""
    from exporter.archives import unpacked

    with unpacked(path, limit=MAX_UNZIPPED_BYTES) as folder:
        yield folder


def _verify_folder(folder: Path, key: bytes, rerun: bool) -> dict[str, Any]:
    checks = []
    try:
        signed = passport.signed_statement(folder / passport.SIGNATURE_FILE, key)
    except ValueError as exc:
        return {"valid": False, "checks": [_check("signature", False, str(exc))]}
    checks.append(_check("signature", True, f"model-signing v1.0, key {passport.fingerprint(_public(key))}"))
    checks.append(_files(folder, signed))
    checks.append(_passport(folder, signed))
    if rerun:
        checks.append(_rerun(folder))
    return {"valid": all(c["passed"] for c in checks), "checks": checks}


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "passed": passed, "detail": detail}


def _files(folder: Path, signed: dict[str, Any]) -> dict[str, Any]:
    expected = {r["name"]: r["digest"] for r in signed["predicate"]["resources"]}
    actual = passport.manifest(folder)
    changed = sorted(n for n in expected if n in actual and actual[n] != expected[n])
    missing, added = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    problems = ([f"changed: {', '.join(changed)}"] if changed else []) + (
        [f"missing: {', '.join(missing)}"] if missing else []) + ([f"added: {', '.join(added)}"] if added else [])
    return _check("files", not problems, "; ".join(problems) or f"{len(expected)} files, every sha256 as signed")


def _passport(folder: Path, signed: dict[str, Any]) -> dict[str, Any]:
    try:
        content = json.loads((folder / passport.PASSPORT_FILE).read_text())
    except (OSError, ValueError) as exc:
        return _check("passport", False, f"{passport.PASSPORT_FILE} unreadable: {exc}")
    original = signed["predicate"].get("passport")
    if original is not None and content != original:
        fields = _differences(original, content)
        return _check("passport", False, "edited since signing: " + "; ".join(fields[:5]))
    listed = {f["name"]: f["sha256"] for f in content.get("files", [])}
    actual = passport.manifest(folder)
    wrong = [n for n, digest in listed.items() if actual.get(n) != digest]
    if wrong:
        return _check("passport", False, f"the passport's sha256 of {', '.join(wrong)} is not the file's")
    return _check("passport", True, f"{content.get('format')} export {content.get('export_id')} of "
                                    f"{content['source']['experiment_id']} ({content['verdict']['verdict']}), files "
                                    "as listed")


def _differences(signed: Any, found: Any, where: str = "") -> list[str]:
    if isinstance(signed, dict) and isinstance(found, dict):
        return [d for key in sorted(set(signed) | set(found))
                for d in _differences(signed.get(key), found.get(key), f"{where}.{key}" if where else key)]
    if isinstance(signed, list) and isinstance(found, list) and len(signed) == len(found):
        return [d for i, (a, b) in enumerate(zip(signed, found, strict=True))
                for d in _differences(a, b, f"{where}[{i}]")]
    return [] if signed == found else [f"{where}: signed {json.dumps(signed)[:60]}, now {json.dumps(found)[:60]}"]


def _rerun(folder: Path) -> dict[str, Any]:
    """The golden inputs through the file in its own runtime, against the golden outputs."""
    import numpy as np

    from exporter.formats import get_format

    content = json.loads((folder / passport.PASSPORT_FILE).read_text())
    x, golden = passport.read_golden(folder)
    if golden is None:
        return _check("rerun", False, "no golden outputs: the file could not run where it was made")
    fmt = get_format(content["format"], require_available=False)
    if why := fmt.runs_here():
        return _check("rerun", False, f"{fmt.display_name} files cannot run on this machine: {why}")
    primary = folder / content["files"][0]["name"]
    runner = fmt.load(primary, content["model"])
    try:
        outputs = runner.run({content["model"]["inputs"][0]["name"]: x})
    finally:
        runner.close()
    tolerance = float(content["golden"]["tolerance"] or fmt.tolerance)
    names = content["golden"]["outputs"] or [str(i) for i in range(len(golden))]
    worst = []
    for name, got, want in zip(names, outputs, golden, strict=True):
        diff = np.abs(np.asarray(got, np.float64) - want) / np.maximum(1.0, np.abs(want))
        worst.append((float(diff.max(initial=0.0)) if np.shape(got) == np.shape(want) else float("inf"), name))
    bad = [(d, n) for d, n in worst if d > tolerance]
    if bad:
        return _check("rerun", False, "; ".join(f"output {n} differs by {d:.3g} (tolerance {tolerance:g})"
                                                for d, n in bad))
    return _check("rerun", True, f"{len(x)} golden inputs in {fmt.display_name}'s runtime: every output within "
                                 f"{tolerance:g} (worst {max(d for d, _ in worst):.2g})")

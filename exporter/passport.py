"""The export's passport: ``passport.json`` (what the file is, where it came from, the evidence), ``golden/`` (a few
inputs and the file's outputs for them) and ``model.sig`` (an OpenSSF model-signing signature over all of them).

The signature is the model-signing v1.0 format, signed offline with an elliptic-curve key: a Sigstore bundle (v0.3)
whose DSSE envelope carries an in-toto statement — one resource per file (its sha256), the subject's digest over
them, the serialization (``files``, sha256, the ignored paths) — so ``model_signing``'s own verifier accepts it. The
predicate also carries the passport itself (v1.0 verifiers ignore extra predicate fields), so ``verify`` can name the
field of an edited passport. The key is the workspace's (made on first use, ``<workspace>/.signing/``, the private
key mode 600, outside every export folder and download) or ``$AISTUDIO_SIGNING_KEY`` (a PEM private key or its path).

Sealing (passport + signature) happens whenever a completed record's evidence changes (``ExportStore.update``), on
the machine that owns the workspace; golden samples are written by the export itself (``write_golden``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from exporter.record import ExportRecord

PASSPORT_FILE, SIGNATURE_FILE, GOLDEN_DIR = "passport.json", "model.sig", "golden"
GOLDEN_INPUTS, GOLDEN_OUTPUTS = "inputs.npy", "outputs.npz"
GOLDEN_COUNT = 2  # images (a file whose batch is fixed gets its batch)
PASSPORT_VERSION = 1
KEY_ENV = "AISTUDIO_SIGNING_KEY"
KEY_DIR, PRIVATE_KEY, PUBLIC_KEY = ".signing", "key.pem", "public.pem"
# What an export folder holds beside the signed files: the record and the worker's log change after sealing, the
# gallery belongs to the evaluation. The verifier ignores these (as model-signing's own default ignores .git).
IGNORED = (SIGNATURE_FILE, "export.json", "worker.log", "gallery", ".partial", ".git", ".gitattributes", ".github",
           ".gitignore")
EVIDENCE = frozenset({"status", "files", "validation", "evaluation", "benchmarks", "diagnosis"})
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


# -- golden samples (written by the export, wherever it runs) -------------------------------------------------------

def signed_by(folder: Path) -> str | None:
    """The fingerprint of the key ``folder``'s signature names (None when unsigned); not a verification."""
    try:
        hint = json.loads((folder / SIGNATURE_FILE).read_text())["verificationMaterial"]["publicKey"]["hint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(hint)[:16]


def golden_inputs(pool: Any, batch: int | None) -> np.ndarray:
    """The validation pool's first images: ``GOLDEN_COUNT`` of them, or the file's fixed ``batch``."""
    x = pool.numpy() if hasattr(pool, "numpy") else np.asarray(pool)
    count = batch or GOLDEN_COUNT
    return np.ascontiguousarray(np.resize(x, (count, *x.shape[1:])) if len(x) < count else x[:count],
                                dtype=np.float32)


def write_golden(folder: Path, x: np.ndarray, outputs: list[Any] | None) -> None:
    """``folder/inputs.npy`` and ``folder/outputs.npz`` (the file's outputs for them by position ``0``, ``1``…;
    none when no runtime here runs the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / GOLDEN_INPUTS, x)
    if outputs is not None:
        np.savez(folder / GOLDEN_OUTPUTS, **{str(i): np.asarray(o) for i, o in enumerate(outputs)})


def read_golden(folder: Path) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """The golden inputs and outputs (in output order; None when the file could not run where it was made)."""
    x = np.load(folder / GOLDEN_DIR / GOLDEN_INPUTS)
    path = folder / GOLDEN_DIR / GOLDEN_OUTPUTS
    if not path.is_file():
        return x, None
    with np.load(path) as data:
        return x, [data[str(i)] for i in range(len(data.files))]


# -- the passport ---------------------------------------------------------------------------------------------------

def passport(record: ExportRecord, folder: Path) -> dict[str, Any]:
    """The passport of a completed export (every file with size and sha256, the golden samples, the evidence)."""
    from exporter.version import __version__

    model = record.model
    benchmark = record.benchmark
    outcome = record.decide()
    evaluation = record.evaluation
    return {
        "passport_version": PASSPORT_VERSION, "export_id": record.id, "created_at": record.finished_at,
        "tool": {"name": "AI Studio Export", "version": __version__},
        "source": {"project_id": record.project_id, "experiment_id": record.experiment_id,
                   "checkpoint": record.checkpoint, "checkpoint_path": record.checkpoint_path,
                   "checkpoint_sha256": record.checkpoint_sha256},
        "format": record.format, "options": record.options, "environment": record.environment,
        "model": {"task": model.task, "architecture": model.architecture, "input_size": model.input_size,
                  "input_shape": model.input_shape, "normalization": model.normalization,
                  "class_names": model.class_names, "inputs": [t.model_dump() for t in model.inputs],
                  "outputs": [t.model_dump() for t in model.outputs]},
        "files": [f.model_dump() for f in record.files],
        "golden": _golden_entry(folder, record),
        "verdict": {"verdict": outcome.verdict, "gate": outcome.gate, "reason": outcome.reason},
        "validation": record.validation.model_dump(include={"verdict", "passed", "max_diff", "tolerance",
                                                            "batch_sizes", "inputs", "referee"})
        if record.validation else None,
        "evaluation": evaluation.model_dump(include={"verdict", "dataset", "primary_metric", "pytorch", "file",
                                                     "delta", "drop", "max_metric_drop"})
        if evaluation and evaluation.status == "completed" else None,
        "benchmark": {**benchmark.headline(), "machine": benchmark.machine} if benchmark else None,
        "diagnosis": (record.diagnosis.model_extra or {}).get("first_above") if record.diagnosis else None,
    }


def _golden_entry(folder: Path, record: ExportRecord) -> dict[str, Any] | None:
    golden = folder / GOLDEN_DIR
    if not (golden / GOLDEN_INPUTS).is_file():
        return None
    tolerance = record.validation.tolerance if record.validation else None
    files = sorted(p.name for p in golden.iterdir() if p.is_file())
    return {"files": [f"{GOLDEN_DIR}/{name}" for name in files], "tolerance": tolerance,
            "outputs": [o.name for o in record.model.outputs] if GOLDEN_OUTPUTS in files else None,
            "note": "inputs normalised as the model expects; outputs are the file's own, in its runtime, where "
                    "it was made"}


def sealing_due(record: ExportRecord, changed: set[str]) -> bool:
    """Whether a store write should (re)seal the export: completed, evidence changed, no job still filling it."""
    if record.status != "completed" or not changed & EVIDENCE or not record.files:
        return False
    parts = [record.evaluation, record.diagnosis, *record.benchmarks]
    return not any(getattr(p, "status", None) in ("queued", "running") for p in parts if p is not None)


def seal(record: ExportRecord, folder: Path, workspace_root: Path) -> dict[str, Any]:
    """Write ``passport.json`` and sign the folder into ``model.sig``; returns the passport."""
    content = passport(record, folder)
    _atomic(folder / PASSPORT_FILE, json.dumps(content, indent=2, default=str).encode())
    key = signing_key(workspace_root)
    # the model files are signed with the digests taken when they were published, not read again: a resealing
    # after a later evaluation still vouches for the file that was validated, never for one swapped since
    published = {f.name: (f.size_bytes, f.sha256) for f in record.files}
    _atomic(folder / SIGNATURE_FILE, sign(folder, key, content, published).encode())
    return content


def _atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


# -- keys -------------------------------------------------------------------------------------------------------------

def signing_key(workspace_root: Path) -> Any:
    """The private key: ``$AISTUDIO_SIGNING_KEY`` (PEM text or a path to it), else the workspace's, made on first use.

    Raises:
        UsageError: ``$AISTUDIO_SIGNING_KEY`` is not an elliptic-curve private key in PEM.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from exporter.errors import UsageError

    given = os.environ.get(KEY_ENV, "").strip()
    if given:
        pem = given.encode() if given.startswith("-----BEGIN") else Path(given).expanduser().read_bytes()
        try:
            key = serialization.load_pem_private_key(pem, None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{KEY_ENV} is not a PEM private key without a password: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"{KEY_ENV} must be an elliptic-curve key (P-256, P-384 or P-521), as model-signing "
                             "signs with.")
        return key
    folder = Path(workspace_root) / KEY_DIR
    path = folder / PRIVATE_KEY
    if not path.is_file():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        descriptor = os.open(folder / f".{PRIVATE_KEY}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        os.replace(folder / f".{PRIVATE_KEY}.tmp", path)
        (folder / PUBLIC_KEY).write_bytes(public_pem(key))
    return serialization.load_pem_private_key(path.read_bytes(), None)


def public_pem(key: Any) -> bytes:
    """The public key (of a private or public key) as PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Any) -> str:
    """The key's fingerprint as model-signing writes it (sha256 of the public PEM), first 16 hex digits."""
    return hashlib.sha256(public_pem(key)).hexdigest()[:16]


def workspace_public_key(workspace_root: Path) -> bytes:
    """The public key exports of this workspace are signed with (made on first use)."""
    return public_pem(signing_key(workspace_root))


# -- the signature (OpenSSF model-signing v1.0, elliptic-curve key) ---------------------------------------------------

def manifest(folder: Path, known: dict[str, tuple[int, str]] | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but the ignored ones, in model-signing's order
    (``known``: ``{relative path: (size, sha256)}`` taken for files of that size instead of hashing them)."""
    from exporter.checkpoint import file_sha256

    found = {}
    for path in folder.rglob("*"):
        relative = PurePosixPath(path.relative_to(folder).as_posix())
        if any(relative.parts[0] == ignored or str(relative) == ignored for ignored in IGNORED):
            continue
        if path.is_symlink():
            raise ValueError(f"{relative} is a link; a signed folder holds plain files")
        if path.is_file():
            size, digest = (known or {}).get(str(relative), (None, None))
            found[relative] = digest if size == path.stat().st_size else file_sha256(path)
    return {str(name): found[name] for name in sorted(found)}


def statement(folder: Path, passport_content: dict[str, Any] | None = None,
              known: dict[str, tuple[int, str]] | None = None) -> dict[str, Any]:
    """The in-toto statement over ``folder``: one resource per file, the subject's digest over their digests."""
    resources = manifest(folder, known)
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for d in resources.values())).hexdigest()
    predicate: dict[str, Any] = {
        "resources": [{"name": name, "digest": digest, "algorithm": "sha256"} for name, digest in resources.items()],
        "serialization": {"method": "files", "hash_type": "sha256", "ignore_paths": list(IGNORED),
                          "allow_symlinks": False}}
    if passport_content is not None:
        predicate["passport"] = passport_content  # ignored by v1.0 verifiers; ours names an edited field with it
    return {"_type": STATEMENT_TYPE, "subject": [{"name": folder.name, "digest": {"sha256": root}}],
            "predicateType": PREDICATE_TYPE, "predicate": predicate}


def pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of ``payload`` (what is signed)."""
    return b" ".join([f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)}".encode(), payload])


def sign(folder: Path, key: Any, passport_content: dict[str, Any] | None = None,
         known: dict[str, tuple[int, str]] | None = None) -> str:
    """``model.sig`` for ``folder``: a Sigstore bundle holding the DSSE-signed statement (``known``: see
    ``manifest``)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    payload = json.dumps(statement(folder, passport_content, known), indent=2).encode()
    signature = key.sign(pae(payload), ec.ECDSA(_hash_for(key.public_key())))
    return json.dumps({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hashlib.sha256(public_pem(key)).hexdigest()},
                                 "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                         "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}})


def _hash_for(public_key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[public_key.curve.key_size]


def signed_statement(signature_file: Path, public_key_pem: bytes) -> dict[str, Any]:
    """The statement inside ``model.sig`` once its signature verifies with the public key.

    Raises:
        ValueError: not a model-signing bundle, another key, or a signature that does not verify.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        bundle = json.loads(signature_file.read_text())
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{SIGNATURE_FILE} is not a model-signing signature bundle ({exc})") from None
    public = serialization.load_pem_public_key(public_key_pem)
    hint = (bundle.get("verificationMaterial", {}).get("publicKey") or {}).get("hint")
    if hint and hint != hashlib.sha256(public_pem(public)).hexdigest():
        raise ValueError(f"{SIGNATURE_FILE} was signed with another key (fingerprint {hint[:16]}, this key "
                         f"{fingerprint(public)})")
    try:
        from cryptography.hazmat.primitives.asymmetric import ec

        public.verify(signature, pae(payload), ec.ECDSA(_hash_for(public)))
    except InvalidSignature:
        raise ValueError(f"the signature in {SIGNATURE_FILE} does not verify with this key") from None
    return json.loads(payload)

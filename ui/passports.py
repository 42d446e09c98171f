"""Passports in the dashboard: the result view's "signed" line (fingerprint, the signed download, the public key)
and History's "Verify a file" box, its result drawn as a checklist."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from urllib.parse import quote

import streamlit as st

from exporter import passport, queries
from exporter.errors import ExportError
from exporter.record import ExportRecord
from exporter.verify import verify
from exporter.workspace import Workspace
from ui.transfers import api_url, session_ticket


def signed_line(record: ExportRecord) -> None:
    """"🔏 signed · key …", the signed zip (files, passport, signature, golden samples) and the public key."""
    workspace = Workspace()
    folder = queries.export_folder(workspace, record)
    if not (folder / passport.SIGNATURE_FILE).is_file():
        st.caption("Not signed yet: the passport and its signature are written once the export completes.")
        return
    key = passport.signing_key(workspace.root)
    href = api_url(f"export/{record.id}/download") + "?passport=true" + (
        f"&ticket={quote(ticket)}" if (ticket := session_ticket()) else "")
    left, right = st.columns([4, 1])
    left.html(f'<span class="aistudio-signed">🔏 signed · key <code>{passport.fingerprint(key)}</code> · '
              f'OpenSSF model-signing</span> &nbsp; <a href="{html.escape(href)}" download>⬇️ with its passport '
              f'(.zip: files, passport.json, model.sig, golden/)</a>')
    right.download_button("Public key", passport.public_pem(key), file_name="aistudio-signing-key.pem",
                          mime="application/x-pem-file", key=f"pubkey-{record.id}", icon=":material/key:")
    st.caption(f"Check it anywhere: `python -m exporter verify {record.id}-{record.format}-signed.zip "
               "--public-key aistudio-signing-key.pem --rerun`")


def verify_box() -> None:
    """Drop a signed zip (a download with its passport, or a deploy bundle): the checklist of what holds."""
    with st.expander("🔏 Verify a file", expanded=False):
        upload = st.file_uploader("A download with its passport, or a deploy bundle (.zip)", type=["zip"],
                                  key="verify-upload")
        key_file = st.file_uploader("The signer's public key (.pem; default: this workspace's)", type=["pem"],
                                    key="verify-key")
        rerun = st.checkbox("Also run the golden samples through the file", key="verify-rerun")
        if upload is None or not st.button("Verify", key="verify-go", type="primary"):
            return
        with tempfile.TemporaryDirectory(prefix="aistudio-verify-upload-") as scratch:
            path = Path(scratch) / "upload.zip"
            path.write_bytes(upload.getvalue())
            try:
                result = verify(path, key_file.getvalue() if key_file else None, rerun, Workspace().root)
            except ExportError as exc:
                st.error(exc.message)
                return
        _checklist(result)


def _checklist(result: dict) -> None:
    with st.container(key="verify-result"):
        (st.success if result["valid"] else st.error)(
            f"{'Valid' if result['valid'] else 'Not valid'} — key {result['key_fingerprint']}")
        for folder in result["folders"]:
            st.markdown(f"**{folder['folder']}**")
            st.markdown("\n".join(f"- {'✅' if c['passed'] else '❌'} **{c['check']}**: {c['detail']}"
                                  for c in folder["checks"]))

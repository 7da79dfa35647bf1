"""The demo's sample monthly report: key, bundle and an independent verify, in one call."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from agent import keys
from agent.report.run import run_report
from agent.report.verify import verify_bundle
from agent.settings import AgentSettings
from agent.site import load_site_for

__all__ = ["write_demo_report"]


def write_demo_report(settings: AgentSettings, month: str, *, console: Console) -> Path:
    """Sign a report bundle for ``month`` from the demo's store, verify it, return the zip.

    Raises:
        RuntimeError: if the freshly written bundle does not verify (a bug, never expected).
    """
    try:
        key = keys.load_signing_key(settings)
    except keys.SigningKeyError:
        key = keys.init_key(settings)
    out_dir = settings.state_dir / "reports"
    result, _ = run_report(settings, month, out_dir=out_dir, overwrite=True)
    bundle = result.zip_path or result.directory
    site = load_site_for(settings)
    assert site is not None, "the demo always has a site model"
    # Verify as an auditor would: with the public key handed over as a file.
    public_file = out_dir / f"{site.id}-signing-key.pub.pem"
    public_file.write_text(keys.public_key_pem(key.public), encoding="utf-8")
    checked = verify_bundle(bundle, pubkey=public_file, journal=settings.journal_path)
    if not checked.ok:
        failure = checked.first_failure
        raise RuntimeError(f"sample report does not verify: {failure}")
    console.print(
        f"verified: {len(checked.checks)} checks passed (signature, hashes, KPIs re-computed, "
        f"intervals re-derived from the journal); signed by {key.fingerprint}"
    )
    return bundle

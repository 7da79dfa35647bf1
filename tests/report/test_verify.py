"""``verify`` passes on an untouched bundle and names the problem for each tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from agent.cli import app as agent_app
from agent.keys import SigningKey, public_key_pem
from agent.report.bundle import BundleResult
from agent.report.manifest import sign_manifest
from agent.report.verify import VerifyResult, verify_bundle


def _pem(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "site.pub.pem"
    path.write_text(public_key_pem(key.public), encoding="ascii")
    return path


def _failure(result: VerifyResult) -> tuple[str, str]:
    failure = result.first_failure
    assert failure is not None, [c.detail for c in result.checks]
    return failure.name, failure.detail


def _rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    (bundle / "manifest.json").write_text(text, encoding="utf-8")


def test_untouched_bundle_and_zip_verify(
    good_bundle: BundleResult, signing_key: SigningKey, tmp_path: Path
) -> None:
    pem = _pem(tmp_path, signing_key)
    for target in (good_bundle.directory, good_bundle.zip_path):
        assert target is not None
        result = verify_bundle(target, pubkey=pem)
        assert result.ok, [c.detail for c in result.checks]
        outcomes = {c.name: c.outcome for c in result.checks}
        assert outcomes["signature"] == "ok" and outcomes["hashes"] == "ok"
        assert outcomes["kpis"] == "ok"
        kpi_check = next(c for c in result.checks if c.name == "kpis")
        assert "re-computed" in kpi_check.detail


def test_without_pubkey_signature_is_only_a_warning(good_bundle: BundleResult) -> None:
    result = verify_bundle(good_bundle.directory)
    assert result.ok
    signature = next(c for c in result.checks if c.name == "signature")
    assert signature.outcome == "warning" and "--pubkey" in signature.detail


def test_one_byte_in_parquet(bundle_copy: Path, signing_key: SigningKey, tmp_path: Path) -> None:
    path = bundle_copy / "data/intervals.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key))
    name, detail = _failure(result)
    assert name == "hashes" and "data/intervals.parquet" in detail
    # The checks that passed before the failing one are still listed (the console shows them).
    outcomes = {c.name: c.outcome for c in result.checks}
    assert outcomes["signature"] == "ok" and outcomes["files"] == "ok"


def _edit_pue(bundle: Path) -> tuple[float, float]:
    path = bundle / "data/kpis.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    row = next(r for r in document["kpis"] if r["metric"] == "pue" and r["period_kind"] == "month")
    old = row["value"]
    row["value"] = round(old - 0.02, 2)  # the 1.19 -> 1.17, on this site's figure
    path.write_text(
        json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return old, row["value"]


def test_pue_edited_with_manifest_updated_breaks_signature(
    bundle_copy: Path, signing_key: SigningKey, tmp_path: Path
) -> None:
    _edit_pue(bundle_copy)
    _rehash(bundle_copy, "data/kpis.json")
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "signature" and "does not verify" in detail


def test_pue_edited_and_resigned_fails_recomputation(
    bundle_copy: Path, signing_key: SigningKey, tmp_path: Path
) -> None:
    # Someone holding the key (or a bug) cannot make a wrong figure verify: it is re-computed.
    old, new = _edit_pue(bundle_copy)
    _rehash(bundle_copy, "data/kpis.json")
    manifest = (bundle_copy / "manifest.json").read_bytes()
    (bundle_copy / "manifest.sig").write_bytes(sign_manifest(manifest, signing_key.private))
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "kpis"
    assert "pue (month 2026-10)" in detail and f"value = {new!r}" in detail
    assert f"re-computed {old:.12f}"[:-2] in detail  # the true figure, to float noise


def test_file_removed(bundle_copy: Path, signing_key: SigningKey, tmp_path: Path) -> None:
    (bundle_copy / "data/findings.json").unlink()
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "files" and "removed" in detail and "data/findings.json" in detail


def test_file_added(bundle_copy: Path, signing_key: SigningKey, tmp_path: Path) -> None:
    (bundle_copy / "data/extra.csv").write_text("meter,energy_kwh\nx,1\n", encoding="utf-8")
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "files" and "added" in detail and "data/extra.csv" in detail


def test_signature_replaced(bundle_copy: Path, signing_key: SigningKey, tmp_path: Path) -> None:
    other = Ed25519PrivateKey.generate()
    (bundle_copy / "manifest.sig").write_bytes(
        other.sign((bundle_copy / "manifest.json").read_bytes())
    )
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "signature" and "manifest.sig does not verify" in detail


def test_different_public_key(bundle_copy: Path, signing_key: SigningKey, tmp_path: Path) -> None:
    other = SigningKey(Ed25519PrivateKey.generate(), "other")
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, other)))
    assert name == "signature"
    assert signing_key.fingerprint in detail and other.fingerprint in detail


def test_different_key_inside_the_bundle_is_caught_by_pubkey(
    bundle_copy: Path, signing_key: SigningKey, tmp_path: Path
) -> None:
    # A forger re-signs with their own key and swaps the public key in the manifest.
    forger = SigningKey(Ed25519PrivateKey.generate(), "forger")
    _edit_pue(bundle_copy)
    _rehash(bundle_copy, "data/kpis.json")
    manifest = json.loads((bundle_copy / "manifest.json").read_bytes())
    manifest["signing_key"] = {
        "algorithm": "Ed25519",
        "fingerprint": forger.fingerprint,
        "public_key_pem": public_key_pem(forger.public),
    }
    data = (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
    (bundle_copy / "manifest.json").write_bytes(data)
    (bundle_copy / "manifest.sig").write_bytes(sign_manifest(data, forger.private))
    name, detail = _failure(verify_bundle(bundle_copy, pubkey=_pem(tmp_path, signing_key)))
    assert name == "signature" and forger.fingerprint in detail


def test_tampered_zip_member(
    good_bundle: BundleResult, tmp_path: Path, signing_key: SigningKey
) -> None:
    assert good_bundle.zip_path is not None
    target = tmp_path / "bundle.zip"
    with zipfile.ZipFile(good_bundle.zip_path) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data/green.json"):
                data = b'[{"month": "2026-10", "kind": "certificate", "energy_kwh": 1e6}]\n'
            dst.writestr(info, data)
    name, detail = _failure(verify_bundle(target, pubkey=_pem(tmp_path, signing_key)))
    assert name == "hashes" and "data/green.json" in detail


@pytest.fixture
def cli_app() -> typer.Typer:
    return agent_app


def test_cli_verify_exit_codes(
    cli_app: typer.Typer, bundle_copy: Path, signing_key: SigningKey, tmp_path: Path
) -> None:
    runner = CliRunner()
    pem = _pem(tmp_path, signing_key)
    ok = runner.invoke(cli_app, ["verify", str(bundle_copy), "--pubkey", str(pem)])
    assert ok.exit_code == 0, ok.output
    assert "bundle VALID" in ok.output and "OK   hashes" in ok.output and "OK   kpis" in ok.output
    shutil.rmtree(bundle_copy / "data")
    bad = runner.invoke(cli_app, ["verify", str(bundle_copy), "--pubkey", signing_key.fingerprint])
    assert bad.exit_code != 0
    # A fingerprint is not the key: it names another key, so the signature check refuses it.
    assert "FAIL signature" in bad.output and "not by the given key" in bad.output
    raw = signing_key.public.public_bytes_raw().hex()
    bad = runner.invoke(cli_app, ["verify", str(bundle_copy), "--pubkey", raw])
    assert bad.exit_code == 1
    assert "bundle INVALID: files: file removed: data/" in bad.output

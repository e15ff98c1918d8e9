"""Every CDS Hooks exchange the Rust integration tests made (tests/it/cds_hooks.rs writes them to
target/cds-out/) passes the offline CDS Hooks 3.0 / FHIR R4 validator of the EHR design
(../shared/fhir/validate.py: JSON Schema, the cds-resp invariants, FHIR R4B structure of every
resource, CodeX/mCODE profile-lite checks). Runs after `cargo test` (scripts/test)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "cds-out"
VALIDATOR = ROOT.parent / "shared" / "fhir" / "validate.py"


def exchanges():
    return sorted(OUT.glob("*.request.json")) if OUT.is_dir() else []


def test_the_rust_tests_wrote_exchanges():
    names = [path.name for path in exchanges()]
    assert len(names) >= 40, f"only {len(names)} exchanges in {OUT}: run cargo test first"
    assert any(name.startswith("check-") for name in names)
    assert any(name.startswith("missing-") for name in names)
    assert list(OUT.glob("*.bundle.json")), "no Bundle form was written"


@pytest.mark.parametrize("request_path", exchanges(), ids=lambda path: path.name[: -len(".request.json")])
def test_exchange_passes_the_offline_validator(request_path):
    name = request_path.name[: -len(".request.json")]
    arguments = [sys.executable, str(VALIDATOR), str(request_path), str(OUT / f"{name}.response.json")]
    bundle = OUT / f"{name}.bundle.json"
    if bundle.exists():
        arguments.append(str(bundle))
    result = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"(^|\D)0 errors$", result.stdout.strip()), result.stdout

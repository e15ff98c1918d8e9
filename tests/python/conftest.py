"""Fixtures for the Python peer: stubs generated from proto/ at test time, and a real
vlms-rt-server started on a free loopback port."""

import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
VIGNETTES = pathlib.Path(os.environ.get("VLMS_RT_VIGNETTES", ROOT.parent / "shared" / "vignettes-2026.2"))


def _binary(name):
    override = os.environ.get("VLMS_RT_BIN_DIR")
    directory = pathlib.Path(override) if override else ROOT / "target" / "debug"
    path = directory / name
    if not path.exists():
        subprocess.run(
            ["cargo", "build", "--locked", "--bin", "vlms-rt-server", "--bin", "vlms-rt"],
            cwd=ROOT,
            check=True,
        )
    return path


@pytest.fixture(scope="session")
def stubs():
    """Python modules generated with grpcio-tools from the .proto files alone."""
    from grpc_tools import protoc

    out = pathlib.Path(tempfile.mkdtemp(prefix="vlms-rt-stubs-"))
    protos = sorted(str(path.relative_to(PROTO)) for path in (PROTO / "vlms").rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from vlms.rt.v1 import case_pb2, plan_pb2, recommendation_service_pb2, recommendation_service_pb2_grpc

    class Stubs:
        case = case_pb2
        plan = plan_pb2
        service = recommendation_service_pb2
        grpc = recommendation_service_pb2_grpc

    return Stubs


@pytest.fixture(scope="session")
def server_binary():
    return _binary("vlms-rt-server")


@pytest.fixture(scope="session")
def client_binary():
    return _binary("vlms-rt")


@pytest.fixture(scope="session")
def audit_db():
    """Where the session's server keeps its audit trail."""
    return pathlib.Path(tempfile.mkdtemp(prefix="vlms-rt-audit-")) / "audit.sqlite3"


@pytest.fixture(scope="session")
def server(server_binary, audit_db):
    """A real server on 127.0.0.1:0; yields its address once it has logged that it serves."""
    process = subprocess.Popen(
        [str(server_binary), "--listen", "127.0.0.1:0", "--log-format", "json", "--audit-db", str(audit_db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    address = None
    deadline = time.monotonic() + 30
    while address is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message", "").startswith("serving"):
            address = record["listen"]
    if address is None:
        process.kill()
        pytest.fail("vlms-rt-server did not report its address within 30 s")
    yield address
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def channel(server):
    with grpc.insecure_channel(server) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


@pytest.fixture(scope="session")
def stub(stubs, channel):
    return stubs.grpc.RecommendationServiceStub(channel)


def load_vignettes():
    files = sorted(VIGNETTES.glob("*.json"))
    assert len(files) >= 20, f"vignettes missing at {VIGNETTES}"
    return [(path.stem, json.loads(path.read_text())) for path in files]

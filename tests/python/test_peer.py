"""A Python client that shares no code with the server, built from the .proto files alone."""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from conftest import load_vignettes

VIGNETTES = load_vignettes()
PLANS = [(name, data) for name, data in VIGNETTES if "case" in data and "expected" in data]
CHECKS = [(name, data) for name, data in VIGNETTES if "request" in data and "expected" in data]
BAD = [(name, data) for name, data in VIGNETTES if "expected_error" in data]


def close(actual, expected):
    return abs(actual - expected) <= 0.01 + 1e-9


def assert_plan_matches(stubs, plan, expected, name):
    plan_pb2 = stubs.plan
    assert plan_pb2.Indication.Name(plan.indication) == expected["indication"], name
    assert plan_pb2.Setting.Name(plan.setting) == expected["setting"], name
    assert plan_pb2.SiteGroup.Name(plan.site_group) == expected["site_group"], name
    assert len(plan.prescriptions) == len(expected["prescriptions"]), name
    for actual, wanted in zip(plan.prescriptions, expected["prescriptions"]):
        assert actual.preferred == wanted["preferred"], name
        phases = [(plan_pb2.PhaseKind.Name(p.kind), p.dose_per_fraction_gy, p.fractions) for p in actual.phases]
        wanted_phases = [(p["kind"], p["dose_per_fraction_gy"], p["fractions"]) for p in wanted["phases"]]
        assert len(phases) == len(wanted_phases), name
        for (kind, dose, fractions), (wkind, wdose, wfractions) in zip(phases, wanted_phases):
            assert (kind, fractions) == (wkind, wfractions) and close(dose, wdose), name
        for field in ("total_dose_gy", "eqd2_tumor_gy", "eqd2_late_gy"):
            assert close(getattr(actual, field), wanted[field]), (name, field)
    window = expected["start_window"]
    assert plan_pb2.WindowStatus.Name(plan.start_window.status) == window["status"], name
    assert plan.start_window.earliest == window.get("earliest", ""), name
    assert plan.start_window.latest == window.get("latest", ""), name
    assert plan.start_window.days_since_surgery == window.get("days_since_surgery", 0), name
    assert sorted(v.code for v in plan.volumes) == sorted(expected["volumes"]), name
    constraints = sorted((c.structure, c.metric, c.limit) for c in plan.organ_constraints)
    wanted_constraints = sorted((c["structure"], c["metric"], c["limit"]) for c in expected["organ_constraints"])
    assert [(s, m) for s, m, _ in constraints] == [(s, m) for s, m, _ in wanted_constraints], name
    assert all(close(a[2], b[2]) for a, b in zip(constraints, wanted_constraints)), name
    alerts = {a.code: plan_pb2.Severity.Name(a.severity) for a in plan.alerts}
    assert alerts == expected["alerts"], name
    trace = [firing.rule_id for firing in plan.trace]
    position = 0
    for rule in expected["rules_fired"]:
        assert rule in trace[position:], (name, rule, trace)
        position = trace.index(rule, position) + 1


def case_message(stubs, data):
    return json_format.ParseDict(data["case"], stubs.case.Case())


def bad_request_fields(error):
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
            assert all(violation.description for violation in bad_request.field_violations)
    return fields


@pytest.mark.parametrize("name,data", PLANS, ids=[name for name, _ in PLANS])
def test_recommend_matches_vignette(stubs, stub, name, data):
    response = stub.Recommend(stubs.service.RecommendRequest(case=case_message(stubs, data)), timeout=10)
    assert_plan_matches(stubs, response.plan, data["expected"], name)
    assert len(response.plan.recommendation_id) == 26
    assert response.plan.guideline.version == "2026.2"


def test_recommend_stream_in_order_with_in_band_errors(stubs, stub):
    items = [(name, data) for name, data in VIGNETTES if "case" in data]
    requests = [stubs.service.RecommendRequest(case=case_message(stubs, data)) for _, data in items]
    responses = list(stub.RecommendStream(iter(requests), timeout=30))
    assert len(responses) == len(items)
    for (name, data), response in zip(items, responses):
        assert response.case_id == data["case"].get("caseId", "")
        if "expected" in data:
            assert response.WhichOneof("result") == "plan", name
            assert_plan_matches(stubs, response.plan, data["expected"], name)
        else:
            assert response.WhichOneof("result") == "error", name
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            fields = []
            for detail in response.error.details:
                bad_request = error_details_pb2.BadRequest()
                assert detail.Unpack(bad_request)
                fields.extend(violation.field for violation in bad_request.field_violations)
            assert fields == data["expected_error"]["fields"], name


def test_audited_answers_read_back_from_the_file_without_the_service(stubs, stub, audit_db, tmp_path):
    """scripts/read-audit-record.py gives back the plan and the check's answer as received (zstd
    frames, through the zstd command), and refuses changed frames of either format (zstd, and the
    parts frames that builds before 2026-12 wrote)."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "read-audit-record.py"
    for name, data in PLANS:
        plan = stub.Recommend(stubs.service.RecommendRequest(case=case_message(stubs, data)), timeout=10).plan
        out = tmp_path / f"{name}.bin"
        subprocess.run([sys.executable, str(script), str(audit_db), plan.recommendation_id, str(out)], check=True)
        stored = stubs.plan.Plan()
        stored.ParseFromString(out.read_bytes())
        assert stored == plan, name
        assert out.read_bytes() == plan.SerializeToString(deterministic=True), name
    missing = subprocess.run(
        [sys.executable, str(script), str(audit_db), "0" * 26, str(tmp_path / "none.bin")], capture_output=True
    )
    assert missing.returncode == 1 and b"no record" in missing.stderr
    # A copy whose record names a dictionary that is not there is refused, not written out raw.
    import sqlite3

    copy = tmp_path / "copy.sqlite3"
    with sqlite3.connect(str(audit_db)) as source, sqlite3.connect(str(copy)) as target:
        source.backup(target)
    with sqlite3.connect(str(copy)) as target:
        target.execute("UPDATE records SET response_dictionary = 9999 WHERE recommendation_id = ?", (plan.recommendation_id,))
    changed = subprocess.run(
        [sys.executable, str(script), str(copy), plan.recommendation_id, str(tmp_path / "changed.bin")], capture_output=True
    )
    assert changed.returncode == 1 and b"dictionar" in changed.stderr, changed.stderr
    assert not (tmp_path / "changed.bin").exists()

    # A changed frame that names a part the dictionary lacks, or claims more than the service ever
    # compresses, is refused with a message (not a traceback) and nothing written.
    def varint(value):
        out = bytearray()
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    # An earlier build's dictionary, which opens with a parts section (one part, "abc").
    section = b"vlms-rt plan parts v1\n" + varint(1) + varint(3) + b"abc"
    with sqlite3.connect(str(copy)) as target:
        parts_dictionary = target.execute(
            "INSERT INTO dictionaries (sha256, content) VALUES (?, ?)",
            (hashlib.sha256(section).digest(), section),
        ).lastrowid

    def refused(frames_and_messages, dictionary=1):
        """Stores each frame as a plan's response in the copy, compressed against `dictionary`;
        the script must refuse each record with its message, no traceback and no output file."""
        with sqlite3.connect(str(copy)) as target:
            target.execute("UPDATE records SET response_dictionary = ?", (dictionary,))
            rows = target.execute("SELECT recommendation_id FROM records WHERE kind = 'recommend' LIMIT 2").fetchall()
            assert len(rows) == len(frames_and_messages)
            for (recommendation_id,), (frame, _) in zip(rows, frames_and_messages):
                target.execute("UPDATE records SET response = ? WHERE recommendation_id = ?", (frame, recommendation_id))
        for (recommendation_id,), (_, message) in zip(rows, frames_and_messages):
            out = tmp_path / f"refused-{recommendation_id}.bin"
            result = subprocess.run(
                [sys.executable, str(script), str(copy), recommendation_id, str(out)], capture_output=True
            )
            assert result.returncode == 1 and message in result.stderr, result.stderr
            assert b"Traceback" not in result.stderr
            assert not out.exists()

    refused(
        [
            (b"VLP\x01" + varint(5) + varint(10**6 << 1 | 1), b"names a part"),
            (b"VLP\x01" + varint(1 << 30) + varint(2 << 1) + b"ab", b"larger than"),
        ],
        dictionary=parts_dictionary,
    )
    if shutil.which("zstd"):
        name, data = CHECKS[0]
        request = json_format.ParseDict(data["request"], stubs.service.CheckPrescriptionRequest())
        response = stub.CheckPrescription(request, timeout=10)
        out = tmp_path / "check.bin"
        subprocess.run(
            [sys.executable, str(script), str(audit_db), response.recommendation_id, str(out)], check=True
        )
        stored = stubs.service.CheckPrescriptionResponse()
        stored.ParseFromString(out.read_bytes())
        assert stored == response
        # A changed zstd frame is refused too: one that decompresses past the 16 MiB bound (17 MiB
        # of zeros, a few hundred bytes compressed), and one that does not decompress at all.
        with sqlite3.connect(str(copy)) as target:
            dictionary = target.execute("SELECT content FROM dictionaries WHERE id = 1").fetchone()[0]
        (tmp_path / "dictionary").write_bytes(dictionary)
        huge = subprocess.run(
            ["zstd", "-q", "-c", "-D", str(tmp_path / "dictionary")],
            input=bytes(17 * 1024 * 1024),
            capture_output=True,
            check=True,
        ).stdout
        refused([(huge, b"larger than"), (b"\x28\xb5\x2f\xfd" + b"not a frame", b"does not decompress")])


@pytest.mark.parametrize("name,data", CHECKS, ids=[name for name, _ in CHECKS])
def test_check_prescription_matches_vignette(stubs, stub, name, data):
    request = json_format.ParseDict(data["request"], stubs.service.CheckPrescriptionRequest())
    response = stub.CheckPrescription(request, timeout=10)
    expected = data["expected"]
    assert stubs.plan.Verdict.Name(response.verdict) == expected["verdict"]
    findings = sorted((f.code, stubs.plan.Verdict.Name(f.verdict)) for f in response.findings)
    assert findings == sorted((f["code"], f["verdict"]) for f in expected["findings"])
    for field in ("total_dose_gy", "eqd2_tumor_gy", "eqd2_late_gy"):
        assert close(getattr(response, field), expected[field]), field


@pytest.mark.parametrize("name,data", BAD, ids=[name for name, _ in BAD])
def test_bad_input_carries_bad_request_field_by_field(stubs, stub, name, data):
    with pytest.raises(grpc.RpcError) as raised:
        if "case" in data:
            stub.Recommend(stubs.service.RecommendRequest(case=case_message(stubs, data)), timeout=10)
        else:
            request = json_format.ParseDict(data["request"], stubs.service.CheckPrescriptionRequest())
            stub.CheckPrescription(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(raised.value) == data["expected_error"]["fields"]


def test_health_check_and_watch(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("vlms.rt.v1.RecommendationService", ""):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service="vlms.rt.v1.RecommendationService"), timeout=5)
    first = next(watch)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


def test_reflection_lists_the_service_and_resolves_case_without_our_protos(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="vlms.rt.v1.Case"),
    ]
    responses = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
    services = [service.name for service in responses[0].list_services_response.service]
    assert "vlms.rt.v1.RecommendationService" in services
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    case_file = next(f for f in files if f.name == "vlms/rt/v1/case.proto")
    case = next(m for m in case_file.message_type if m.name == "Case")
    assert {field.name for field in case.field} >= {"case_id", "evaluation_date", "vessel", "tumor", "phase", "resection"}


def test_a_one_millisecond_deadline_is_exceeded_not_hung(stubs, stub):
    name, data = PLANS[0]
    release = threading.Event()

    def requests():
        # One case, then a stream that stays open: only the deadline can end this call.
        yield stubs.service.RecommendRequest(case=case_message(stubs, data))
        release.wait(10)

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.RecommendStream(requests(), timeout=0.001))
    release.set()
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5, "the call ended at its deadline, it did not hang"
    # And the server answers normally right after.
    stub.Recommend(stubs.service.RecommendRequest(case=case_message(stubs, data)), timeout=10)


def test_python_json_format_is_accepted_by_the_rust_client(stubs, stub, server, client_binary):
    name, data = next((n, d) for n, d in PLANS if n == "ivc-middle-postop-r1")
    case = case_message(stubs, data)
    text = json_format.MessageToJson(case)
    completed = subprocess.run(
        [str(client_binary), "--server", f"http://{server}", "--output", "json", "recommend", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    plan = json_format.Parse(completed.stdout, stubs.plan.Plan())
    assert_plan_matches(stubs, plan, data["expected"], name)
    direct = stub.Recommend(stubs.service.RecommendRequest(case=case), timeout=10).plan
    plan.recommendation_id = ""
    direct.recommendation_id = ""
    assert plan == direct

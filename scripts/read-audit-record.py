#!/usr/bin/env python3
"""Writes the response of one audit record, exactly as the client received it, without the service.

Usage: read-audit-record.py AUDIT_DB RECOMMENDATION_ID OUT_FILE

Needs only Python's standard library for responses stored as sent and for the parts frames that
builds before 2026-12 wrote for plans; a response stored as a zstd frame (every compressed record
written since, and an earlier build's check answers) is handed to the `zstd` command with the
record's dictionary, which also checks the frame's content checksum. The output is a serialized
`vlms.rt.v1.Plan` for a recommendation, `vlms.rt.v1.CheckPrescriptionResponse` for a check. This
reads the bytes; `vlms-rt-server audit verify` is what checks they were not changed.

Parts frame ("VLP" 0x01, the response's length as a varint, then to the end either a varint n<<1
and n literal bytes, or a varint i<<1|1 naming part i of the dictionary's parts section); parts
section (the dictionary opens with "vlms-rt plan parts v1\\n", a varint count, then each part's
length as a varint and its bytes). See src/audit/parts.rs.
"""

import hashlib
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile

FRAME_MAGIC = b"VLP\x01"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SECTION_MAGIC = b"vlms-rt plan parts v1\n"
# The service never compresses a response past 16 MiB: a frame claiming more was changed, and is
# refused before anything is built (as the service's own readers do).
MAX_RESPONSE = 16 * 1024 * 1024


def varint(data, at):
    """The varint at `at` and the position after it."""
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def parts_of(dictionary):
    if not dictionary.startswith(SECTION_MAGIC):
        raise ValueError("the record's dictionary has no parts section")
    count, at = varint(dictionary, len(SECTION_MAGIC))
    parts = []
    for _ in range(count):
        length, at = varint(dictionary, at)
        if at + length > len(dictionary):
            raise ValueError("the dictionary's parts section is malformed")
        parts.append(dictionary[at:at + length])
        at += length
    return parts


def decode_frame(frame, dictionary):
    parts = parts_of(dictionary)
    total, at = varint(frame, len(FRAME_MAGIC))
    if total > MAX_RESPONSE:
        raise ValueError("the frame claims a response larger than the service ever compresses")
    out = bytearray()
    while at < len(frame):
        operation, at = varint(frame, at)
        if operation & 1:
            if operation >> 1 >= len(parts):
                raise ValueError("the frame names a part the dictionary does not have")
            out += parts[operation >> 1]
        else:
            length = operation >> 1
            if length == 0 or at + length > len(frame):
                raise ValueError("the frame is malformed")
            out += frame[at:at + length]
            at += length
        # Never more than the claim and one piece in memory.
        if len(out) > total:
            raise ValueError("the frame does not add up to the length it claims")
    if len(out) != total:
        raise ValueError("the frame does not add up to the length it claims")
    return bytes(out)


def decompress_zstd(frame, dictionary):
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ValueError("this response is a zstd frame: install the zstd command to read it")
    with tempfile.TemporaryDirectory() as scratch:
        dictionary_path = os.path.join(scratch, "dictionary")
        with open(dictionary_path, "wb") as file:
            file.write(dictionary)
        frame_path = os.path.join(scratch, "frame")
        with open(frame_path, "wb") as file:
            file.write(frame)
        # Read as it comes, and stopped past the bound: a changed frame may decompress to far more.
        with subprocess.Popen(
            [zstd, "-q", "-d", "-c", "-D", dictionary_path, frame_path],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as process:
            out = bytearray()
            while chunk := process.stdout.read(1 << 16):
                out += chunk
                if len(out) > MAX_RESPONSE:
                    process.kill()
                    raise ValueError("the zstd frame gives a response larger than the service ever compresses")
            if process.wait() != 0:
                raise ValueError("the zstd frame does not decompress against its dictionary")
        return bytes(out)


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    path, recommendation_id, out_path = argv[1:]
    if not os.path.exists(path):
        sys.stderr.write(f"no audit database at {path}\n")
        return 1
    connection = sqlite3.connect(pathlib.Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT r.response, r.response_dictionary, d.sha256, d.content FROM records r "
            "LEFT JOIN dictionaries d ON d.id = r.response_dictionary WHERE r.recommendation_id = ?",
            (recommendation_id,),
        ).fetchone()
    except sqlite3.OperationalError:
        # A copy made before dictionaries existed: every response is stored as sent.
        row = connection.execute(
            "SELECT response, NULL, NULL, NULL FROM records WHERE recommendation_id = ?", (recommendation_id,)
        ).fetchone()
    if row is None:
        sys.stderr.write(f"no record {recommendation_id} in {path}\n")
        return 1
    stored, dictionary_id, sha256, dictionary = row
    if not isinstance(stored, bytes):
        sys.stderr.write(f"record {recommendation_id}: its response is not stored as bytes (the record was changed)\n")
        return 1
    if dictionary_id is not None and (dictionary is None or hashlib.sha256(dictionary).digest() != sha256):
        sys.stderr.write(
            f"record {recommendation_id}: the dictionary it names is missing or does not match its SHA-256 "
            "(the dictionaries were changed)\n"
        )
        return 1
    try:
        if dictionary_id is None:
            response = stored
        elif stored.startswith(FRAME_MAGIC):
            response = decode_frame(stored, bytes(dictionary))
        elif stored.startswith(ZSTD_MAGIC):
            response = decompress_zstd(stored, bytes(dictionary))
        else:
            raise ValueError("the stored response is neither a parts frame nor a zstd frame")
    except ValueError as error:
        sys.stderr.write(f"record {recommendation_id}: {error}\n")
        return 1
    with open(out_path, "wb") as file:
        file.write(response)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Where a call's server CPU goes, from `perf script` output of perf record --call-graph dwarf.

Usage: cpu-breakdown.py NAME=SCRIPT_FILE:CALLS:HZ [NAME=...]

Each sample is put in the first category (in the order of CATEGORIES) that any frame of its
stack matches, so a sample in zstd called from the audit path counts as audit-zstd, not as the
handler. A category's microseconds per call are its samples x the sampling period / the calls
the server answered while perf recorded. With two runs, the last column is the first minus the
second. The categories name code, not causes: compare runs of the same build and load only.
"""

import re
import sys
from collections import Counter

# (name, pattern over one frame's symbol); first match wins.
CATEGORIES = [
    ("audit: zstd compress + read-back", r"ZSTD|zstd::"),
    ("audit: SQLite insert + commit", r"sqlite3"),
    ("audit: hash chain, record, commit queue", r"vlms_rt::audit::|record_bytes|record_encoded_plan"),
    ("plan encoding (wire::encode_plan)", r"vlms_rt::wire::encode_plan"),
    ("plan copied into tonic's buffer", r"put_in_pieces|EncodedRecommendResponse as prost"),
    ("request decode + case validation", r"StrictDecoder|prost::|merge_field|vlms_rt::convert::|case_from_request"),
    ("guideline rules, rest of the handler", r"vlms_rt::core::|recommend_encoded"),
    ("call log line", r"vlms_rt::telemetry::"),
    ("kernel: socket send", r"tcp_sendmsg|sock_write_iter|sys_writev"),
    ("kernel: socket receive", r"tcp_recvmsg|sock_read_iter|sys_recvfrom|sys_read$"),
    ("kernel: scheduling, futex, epoll", r"^schedule$|__schedule|finish_task_switch|futex|epoll"),
    ("h2: frames and HPACK", r"h2::codec|h2::hpack|h2::frame"),
    ("h2: stream state", r"h2::proto"),
    ("hyper/tonic/tower: per-call service futures", r"hyper::|hyper_util::|tonic::|tower::|axum::"),
    ("tokio runtime", r"tokio::"),
]


def samples(path):
    """Yields each sample's stack (leaf first) as a list of symbol names."""
    stack = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if stack is not None:
                    yield stack
                stack = None
            elif line[0] not in " \t":
                stack = []
            elif stack is not None:
                parts = line.strip().split(" ", 1)
                symbol = parts[1] if len(parts) > 1 else ""
                stack.append(re.sub(r"\+0x[0-9a-f]+ \(.*$", "", symbol))
    if stack:
        yield stack


def breakdown(path, calls, hz):
    compiled = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
    counts = Counter()
    total = 0
    for stack in samples(path):
        total += 1
        for name, pattern in compiled:
            if any(pattern.search(frame) for frame in stack):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    per_sample_us = 1e6 / hz / calls
    return {name: count * per_sample_us for name, count in counts.items()}, total


def main():
    runs = []
    for argument in sys.argv[1:]:
        match = re.fullmatch(r"([\w.-]+)=(.+):(\d+):(\d+)", argument)
        if not match:
            sys.exit(__doc__)
        name, path, calls, hz = match.groups()
        if int(calls) == 0 or int(hz) == 0:
            sys.exit(f"{name}: CALLS and HZ must be above zero")
        figures, total = breakdown(path, int(calls), int(hz))
        runs.append((name, figures))
        print(f"{name}: {total} samples, {int(calls)} calls, {sum(figures.values()):.1f} us of server CPU per call")
    if not runs:
        sys.exit(__doc__)
    names = [name for name, _ in CATEGORIES] + ["other"]
    header = f"{'category':46s}" + "".join(f"{name:>10s}" for name, _ in runs)
    if len(runs) == 2:
        header += f"{runs[0][0] + '-' + runs[1][0]:>12s}"
    print(header + "   (us per call)")
    for category in names:
        values = [figures.get(category, 0.0) for _, figures in runs]
        row = f"{category:46s}" + "".join(f"{value:10.2f}" for value in values)
        if len(runs) == 2:
            row += f"{values[0] - values[1]:12.2f}"
        print(row)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs in fuzz/seeds/<target>/ from the shared OTLP fixtures and
the example configs. Run from the repository root with shared/ beside it; needs the Python
packages opentelemetry-proto and protobuf (pip install opentelemetry-proto) and the zstd tool.
The seeds are committed; rerun only to change them."""

import base64
import gzip
import json
import os
import pathlib
import random
import shutil
import subprocess

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = pathlib.Path(os.environ.get("FIXTURES", ROOT.parent / "shared" / "fixtures" / "otlp"))
SEEDS = ROOT / "fuzz" / "seeds"

# (file, 1-based line): small lines of each signal and of each instrumentation library.
LINES = [
    ("none-normal.jsonl", 1),
    ("otel-v2-legacy-normal.jsonl", 7),
    ("otel-v2-normal.jsonl", 7),
    ("openlit-langchain-normal.jsonl", 1),
    ("openllmetry-normal.jsonl", 7),
    ("openlit-normal.jsonl", 7),
    ("openinference-langchain-normal.jsonl", 7),
    ("otel-v2-legacy-normal.jsonl", 9),
    ("openlit-normal.jsonl", 9),
    ("openllmetry-langchain-normal.jsonl", 10),
]

ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def hex_ids_to_base64(v):
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(v, dict):
        return {
            k: (base64.b64encode(bytes.fromhex(x)).decode() if k in ID_KEYS and isinstance(x, str) else hex_ids_to_base64(x))
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [hex_ids_to_base64(x) for x in v]
    return v


def to_protobuf(doc):
    for key, cls in (
        ("resourceSpans", ExportTraceServiceRequest),
        ("resourceMetrics", ExportMetricsServiceRequest),
        ("resourceLogs", ExportLogsServiceRequest),
    ):
        if key in doc:
            return json_format.ParseDict(hex_ids_to_base64(doc), cls()).SerializeToString()
    raise ValueError("not an OTLP request")


def reset(target):
    d = SEEDS / target
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def main():
    js, pb, bd = reset("otlp_json"), reset("otlp_protobuf"), reset("body_decompress")
    for file, n in LINES:
        line = (FIXTURES / file).read_text().splitlines()[n - 1].encode()
        name = f"{file.removesuffix('.jsonl')}-{n}"
        (js / f"{name}.json").write_bytes(line)
        (pb / f"{name}.pb").write_bytes(to_protobuf(json.loads(line)))
    # body_decompress: first byte = (log2 limit) << 1 | (0 gzip, 1 zstd); 64 KiB and 256 bytes.
    sample = (js / "otel-v2-normal-7.json").read_bytes()
    zst = subprocess.run(["zstd", "-q", "-c", "-19"], input=sample, capture_output=True, check=True).stdout
    for exp in (16, 8):
        (bd / f"gzip-{1 << exp}").write_bytes(bytes([exp << 1]) + gzip.compress(sample, mtime=0))
        (bd / f"zstd-{1 << exp}").write_bytes(bytes([exp << 1 | 1]) + zst)
    cfg = reset("config")
    for p in sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "bench").glob("*.yaml")):
        if p.name != "prices.yaml":
            shutil.copy(p, cfg / f"{p.parent.name}-{p.name}")
    gv = reset("genai_view")
    rng = random.Random(9)
    for i in range(4):
        (gv / f"random-{i}").write_bytes(bytes(rng.randrange(256) for _ in range(1024)))


if __name__ == "__main__":
    main()

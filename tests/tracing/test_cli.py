"""The CLI's enqueues make producer spans and store their context (SQLite, in a subprocess
whose application set up OpenTelemetry's SDK, as ``opentelemetry-instrument`` does)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from monoq.client import connect_sync

SCRIPT = textwrap.dedent("""
    import io, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    from monoq.cli import main
    out = io.StringIO()
    assert main(["enqueue", "echo", "--payload", '{"n": 1}', "--json"], out=out) == 0
    single = json.loads(out.getvalue())
    lines = io.StringIO('{"handler": "echo"}\\n{"handler": "echo", "queue": "other"}\\n')
    out = io.StringIO()
    assert main(["enqueue", "--batch", "--json"], stdin=lines, out=out) == 0
    spans = [
        {"name": s.name, "id": s.attributes["messaging.message.id"],
         "traceparent": f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-"
                        f"{s.context.trace_flags:02x}"}
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps({"single": single["id"], "spans": spans}))
""")


def test_monoq_enqueue_single_and_batch_make_producer_spans(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/monoq.db"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MONOQ_BACKEND_URL": url,
           "MONOQ_TRACING_ENABLED": "true"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    spans = report["spans"]
    assert [s["name"] for s in spans] == ["send default", "send default", "send other"]
    assert spans[0]["id"] == report["single"]

    with connect_sync(url) as client:
        stored = {s["id"]: client.get(s["id"]).trace_context for s in spans}
    assert stored == {s["id"]: s["traceparent"] for s in spans}

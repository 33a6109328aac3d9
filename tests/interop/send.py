"""A RAG request instrumented with the Python OpenTelemetry SDK, following the GenAI semantic
conventions, exported over OTLP (gRPC or HTTP/protobuf) to ragwatch; plus one metric.

usage: send.py grpc|http <endpoint> <service name>
"""
import sys

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

protocol, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    metric_exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    metric_exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")

resource = Resource.create({"service.name": service})
tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(span_exporter))
trace.set_tracer_provider(tp)
reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
mp = MeterProvider(resource=resource, metric_readers=[reader])
metrics.set_meter_provider(mp)

tracer = trace.get_tracer("rag-demo")
with tracer.start_as_current_span("rag.query", kind=trace.SpanKind.SERVER):
    with tracer.start_as_current_span("retrieval vectors") as s:
        s.set_attribute("gen_ai.operation.name", "retrieval")
        s.set_attribute("gen_ai.retrieval.documents", '[{"id": "d1", "score": 0.9}]')
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as s:
        s.set_attribute("gen_ai.operation.name", "chat")
        s.set_attribute("gen_ai.provider.name", "openai")
        s.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        s.set_attribute("gen_ai.usage.input_tokens", 1000)
        s.set_attribute("gen_ai.usage.output_tokens", 500)
        s.set_attribute("gen_ai.response.finish_reasons", ["stop"])
metrics.get_meter("rag-demo").create_counter("rag_demo_requests").add(1)

ok = tp.force_flush(10_000)
mp.force_flush(10_000)
tp.shutdown()
mp.shutdown()
sys.exit(0 if ok else 1)

//! Every metric and attribute name ragwatch writes. These are a public contract: dashboards, alert
//! rules and users' queries depend on them, so they live here, in one place, and the README
//! documents each of them. Change one only with a release note.

/// Self-observability metrics served on the admin endpoint (`service.telemetry.metrics.address`).
///
/// Counter names are registered without the `_total` suffix; the Prometheus text encoder adds it.
pub mod metrics {
    /// Spans accepted by a receiver and handed to its pipelines.
    pub const RECEIVER_ACCEPTED_SPANS: &str = "ragwatch_receiver_accepted_spans";
    /// Spans a receiver refused: malformed, invalid ids, or pipeline full.
    pub const RECEIVER_REFUSED_SPANS: &str = "ragwatch_receiver_refused_spans";
    pub const RECEIVER_ACCEPTED_METRIC_POINTS: &str = "ragwatch_receiver_accepted_metric_points";
    pub const RECEIVER_REFUSED_METRIC_POINTS: &str = "ragwatch_receiver_refused_metric_points";
    pub const RECEIVER_ACCEPTED_LOG_RECORDS: &str = "ragwatch_receiver_accepted_log_records";
    pub const RECEIVER_REFUSED_LOG_RECORDS: &str = "ragwatch_receiver_refused_log_records";
    /// Requests a receiver answered, by transport and outcome.
    pub const RECEIVER_REQUESTS: &str = "ragwatch_receiver_requests";
    /// JSON requests that decoded to zero items (often snake_case keys instead of lowerCamelCase).
    pub const RECEIVER_EMPTY_JSON_REQUESTS: &str = "ragwatch_receiver_empty_json_requests";

    pub const EXPORTER_SENT_SPANS: &str = "ragwatch_exporter_sent_spans";
    pub const EXPORTER_SEND_FAILED_SPANS: &str = "ragwatch_exporter_send_failed_spans";
    pub const EXPORTER_ENQUEUE_FAILED_SPANS: &str = "ragwatch_exporter_enqueue_failed_spans";
    pub const EXPORTER_SENT_METRIC_POINTS: &str = "ragwatch_exporter_sent_metric_points";
    pub const EXPORTER_SEND_FAILED_METRIC_POINTS: &str =
        "ragwatch_exporter_send_failed_metric_points";
    pub const EXPORTER_ENQUEUE_FAILED_METRIC_POINTS: &str =
        "ragwatch_exporter_enqueue_failed_metric_points";
    pub const EXPORTER_SENT_LOG_RECORDS: &str = "ragwatch_exporter_sent_log_records";
    pub const EXPORTER_SEND_FAILED_LOG_RECORDS: &str = "ragwatch_exporter_send_failed_log_records";
    pub const EXPORTER_ENQUEUE_FAILED_LOG_RECORDS: &str =
        "ragwatch_exporter_enqueue_failed_log_records";
    /// Requests waiting in an exporter's sending queue.
    pub const EXPORTER_QUEUE_SIZE: &str = "ragwatch_exporter_queue_size";
    /// Capacity of an exporter's sending queue, in requests.
    pub const EXPORTER_QUEUE_CAPACITY: &str = "ragwatch_exporter_queue_capacity";
    /// Send attempts that failed retryably and were scheduled again.
    pub const EXPORTER_RETRIES: &str = "ragwatch_exporter_retries";

    /// Items (spans, points or records) waiting in a pipeline's input queue.
    pub const PIPELINE_QUEUE_ITEMS: &str = "ragwatch_pipeline_queue_items";
    /// Capacity of a pipeline's input queue, in items.
    pub const PIPELINE_QUEUE_CAPACITY: &str = "ragwatch_pipeline_queue_capacity";
    /// Items a pipeline had to drop (only when the shutdown grace period runs out).
    pub const PIPELINE_DROPPED_ITEMS: &str = "ragwatch_pipeline_dropped_items";
}

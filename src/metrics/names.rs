//! Every metric name ringway exports. The `istio_*` metrics carry Istio's
//! names and labels so Istio's Grafana dashboards work unchanged.

pub const ISTIO_TCP_CONNECTIONS_OPENED: &str = "istio_tcp_connections_opened_total";
pub const ISTIO_TCP_CONNECTIONS_CLOSED: &str = "istio_tcp_connections_closed_total";
/// Downstream → upstream bytes ("received during request").
pub const ISTIO_TCP_RECEIVED_BYTES: &str = "istio_tcp_received_bytes_total";
/// Upstream → downstream bytes ("sent during response").
pub const ISTIO_TCP_SENT_BYTES: &str = "istio_tcp_sent_bytes_total";
/// HTTP requests, per destination, response code and flags.
pub const ISTIO_REQUESTS: &str = "istio_requests_total";
/// Histogram of request durations in milliseconds (head received → response sent).
pub const ISTIO_REQUEST_DURATION: &str = "istio_request_duration_milliseconds";
/// Histogram of request sizes on the wire (head and body).
pub const ISTIO_REQUEST_BYTES: &str = "istio_request_bytes";
/// Histogram of response sizes on the wire (head and body).
pub const ISTIO_RESPONSE_BYTES: &str = "istio_response_bytes";
/// Istio's build gauge (`component="proxy"`, `tag` = the version): the mesh
/// dashboard's versions panel counts proxies by it.
pub const ISTIO_BUILD: &str = "istio_build";

pub const CONFIG_GENERATION: &str = "ringway_config_generation";
pub const CONFIG_SOURCE_REVISION: &str = "ringway_config_source_revision";
pub const CONFIG_SOURCE_SYNCED_REVISION: &str = "ringway_config_source_synced_revision";
pub const CONFIG_SOURCE_CONNECTED: &str = "ringway_config_source_connected";
pub const CONFIG_SOURCE_STALE: &str = "ringway_config_source_stale";
pub const CONFIG_SOURCE_LAST_SYNC: &str = "ringway_config_source_last_sync_timestamp_seconds";
pub const CONFIG_SOURCE_STALE_SECONDS: &str = "ringway_config_source_stale_seconds";
pub const CONFIG_SOURCE_RESYNCS: &str = "ringway_config_source_resyncs_total";
pub const CONFIG_SOURCE_ERRORS: &str = "ringway_config_source_errors_total";
pub const CONFIG_SOURCE_REJECTED: &str = "ringway_config_source_rejected_total";
pub const CONFIG_RELOADS: &str = "ringway_config_reloads_total";
pub const WORKERS: &str = "ringway_workers";
/// Provided buffers user space holds, summed over workers (a gauge).
pub const WORKER_BUFFERS_HELD: &str = "ringway_worker_buffers_held";
/// Pipes lent from the workers' pipe pools to connections (a gauge).
pub const WORKER_PIPES_HELD: &str = "ringway_worker_pipes_held";
pub const DOWNSTREAM_CONNECTIONS_ACTIVE: &str = "ringway_downstream_connections_active";
pub const DOWNSTREAM_ACCEPT_ERRORS: &str = "ringway_downstream_accept_errors_total";
/// Times the process reached its connection cap (`--max-connections`, or
/// derived from the open-file limit) and stopped accepting.
pub const DOWNSTREAM_CAP_REACHED: &str = "ringway_downstream_cap_reached_total";
/// Bytes written by splice(2), per `direction` (`upstream`, `downstream`).
pub const SPLICED_BYTES: &str = "ringway_spliced_bytes_total";
pub const UPSTREAM_CONNECT_ATTEMPTS: &str = "ringway_upstream_connect_attempts_total";
pub const UPSTREAM_CONNECT_FAILURES: &str = "ringway_upstream_connect_failures_total";
pub const UPSTREAM_CONNECT_TIMEOUTS: &str = "ringway_upstream_connect_timeouts_total";
pub const UPSTREAM_OVERFLOW: &str = "ringway_upstream_overflow_total";
pub const UPSTREAM_EJECTIONS: &str = "ringway_upstream_ejections_total";
/// Idle upstream connections in the keep-alive pools, per cluster.
pub const UPSTREAM_POOL_IDLE: &str = "ringway_upstream_pool_idle";
/// Upstream connections taken for a request, per cluster and `result`
/// (`reused`, `new`, `stale`).
pub const UPSTREAM_POOL_REUSE: &str = "ringway_upstream_pool_reuse_total";
/// HTTP requests sent again to a cluster.
pub const HTTP_RETRIES: &str = "ringway_http_retries_total";
/// HTTP requests refused before routing, per `reason`.
pub const HTTP_DOWNSTREAM_REJECTS: &str = "ringway_http_downstream_rejects_total";
/// Access-log lines dropped because the writer's queue was full.
pub const ACCESS_LOG_DROPPED: &str = "ringway_access_log_dropped_total";

//! The watcher's counters, served in Prometheus text format on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    pub lines: Counter,
    pub events: Counter,
    pub quarantined: Counter,
    pub redacted: Counter,
    pub late_events: Counter,
    pub alerts: Family<Vec<(String, String)>, Counter>,
    pub flushes: Counter,
    pub flushed_events: Counter,
    pub judged_events: Counter,
    pub lag_bytes: Gauge,
    pub files: Gauge,
    pub live_events: Gauge,
    pub last_flush_seconds: Gauge,
    pub pass_seconds: Histogram,
    pub flush_seconds: Histogram,
    registry: Arc<Registry>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("credtrail_watch");
        let m = Metrics {
            lines: Counter::default(),
            events: Counter::default(),
            quarantined: Counter::default(),
            redacted: Counter::default(),
            late_events: Counter::default(),
            alerts: Family::default(),
            flushes: Counter::default(),
            flushed_events: Counter::default(),
            judged_events: Counter::default(),
            lag_bytes: Gauge::default(),
            files: Gauge::default(),
            live_events: Gauge::default(),
            last_flush_seconds: Gauge::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            registry: Arc::new(Registry::default()),
        };
        r.register("lines", "Lines read from followed files", m.lines.clone());
        r.register("events", "Events parsed", m.events.clone());
        r.register("quarantined", "Lines quarantined", m.quarantined.clone());
        r.register("secrets_redacted", "Credential secrets redacted from lines", m.redacted.clone());
        r.register("late_events", "Events too old to judge live (left to the batch job)", m.late_events.clone());
        r.register("alerts", "Alerts emitted, by detector and severity", m.alerts.clone());
        r.register("flushes", "Micro-batches committed to the lake", m.flushes.clone());
        r.register("flushed_events", "Events committed to the lake", m.flushed_events.clone());
        r.register("judged_events", "Events of the live days judged by a detection pass", m.judged_events.clone());
        r.register("lag_bytes", "Bytes written to followed files and not yet read", m.lag_bytes.clone());
        r.register("files", "Files being followed", m.files.clone());
        r.register("live_events", "Events held in memory for live detection", m.live_events.clone());
        r.register("last_flush_timestamp_seconds", "Unix time of the last commit", m.last_flush_seconds.clone());
        r.register("detect_pass_seconds", "Time of one detection pass", m.pass_seconds.clone());
        r.register("flush_seconds", "Time of one commit to the lake", m.flush_seconds.clone());
        Metrics { registry: Arc::new(r), ..m }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics` on `addr` (loopback only: the counters name files and
/// credentials' activity). Returns the bound address.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--metrics {addr}: the metrics endpoint listens on loopback only (127.0.0.1 or ::1)"),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], m.render()) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

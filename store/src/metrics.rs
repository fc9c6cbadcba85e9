//! The node's Prometheus endpoint: `GET /metrics` on the TCP address `node.toml`'s
//! `metrics_addr` names, in the OpenMetrics text format (`prometheus-client`), over a minimal
//! HTTP/1.1 server (hyper). Every value is read at scrape time from what the node already
//! counts ([`Handler::stats`], the same snapshot a `Stats` request gets, plus the per-kind
//! latencies and bytes of [`crate::stats::NodeCounters`] and the engine's per-job usage), so
//! the endpoint and `rackpoint status` cannot disagree.
//!
//! Bounded: one request per connection (no keep-alive), a request head of at most
//! `METRICS_MAX_REQUEST_HEAD_BYTES` read within `METRICS_HEAD_TIMEOUT_MS`, a whole connection
//! within `METRICS_CONNECTION_TIMEOUT_MS`, at most `METRICS_MAX_CONNECTIONS` at once (the rest
//! wait in the listen backlog); any path or method but `GET /metrics` is a 404; per-job series
//! are the `METRICS_TOP_JOBS` jobs holding the most bytes here, the others summed under
//! `job_name="(other)"`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rackpoint_proto::limits::{
    METRICS_CONNECTION_TIMEOUT_MS, METRICS_HEAD_TIMEOUT_MS, METRICS_MAX_CONNECTIONS,
    METRICS_MAX_REQUEST_HEAD_BYTES, METRICS_TOP_JOBS, NODE_MAX_INFLIGHT_BYTES,
};
use rackpoint_proto::wire::RequestCounters;
use rackpoint_proto::JobName;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::engine::JobUsage;
use crate::handler::Handler;
use crate::service::DrainGuard;
use crate::stats::LATENCY_BUCKETS_US;

/// The label value under which the jobs past the top `METRICS_TOP_JOBS` are summed; no job
/// name can be it (job names are `[A-Za-z0-9._-]`).
pub const OTHER_JOBS: &str = "(other)";

/// The content type of the reply (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The request kinds that repairs send (rewriting a manifest, removing a moved shard's old
/// copy, re-hashing a shard in place), and those of deletion and garbage collection.
const REPAIR_KINDS: [&str; 3] = ["ReplaceManifest", "DeleteShard", "VerifyShard"];
const GC_KINDS: [&str; 5] =
    ["DeleteCheckpoint", "DeleteOrphanShards", "DeleteManifest", "MarkDeleting", "ClearDeleting"];

/// What the endpoint reads: the node's handler (its counters, engine and budget).
#[derive(Debug)]
struct NodeCollector {
    handler: Handler,
}

/// The registry of a node: one collector reading everything at scrape time.
pub fn registry(handler: Handler) -> Registry {
    let mut registry = Registry::with_prefix("rackpoint");
    registry.register_collector(Box::new(NodeCollector { handler }));
    registry
}

/// The whole text of one scrape.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a collector.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!("metrics do not encode: {e}");
    }
    text
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&v)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// The `top` jobs holding the most bytes (ties by name), then [`OTHER_JOBS`] summing the rest
/// if there is a rest.
pub fn top_jobs(mut jobs: Vec<(JobName, JobUsage)>, top: usize) -> Vec<(String, JobUsage)> {
    jobs.sort_unstable_by(|(a, ua), (b, ub)| ub.shard_bytes.cmp(&ua.shard_bytes).then(a.cmp(b)));
    let rest = jobs.split_off(top.min(jobs.len()));
    let mut out: Vec<(String, JobUsage)> =
        jobs.into_iter().map(|(job, usage)| (job.as_str().to_owned(), usage)).collect();
    if !rest.is_empty() {
        let sum = rest.iter().fold(JobUsage::default(), |s, (_, u)| JobUsage {
            shards: s.shards + u.shards,
            shard_bytes: s.shard_bytes + u.shard_bytes,
        });
        out.push((OTHER_JOBS.to_owned(), sum));
    }
    out
}

fn served_in(requests: &[RequestCounters], kinds: &[&str]) -> u64 {
    requests.iter().filter(|c| kinds.contains(&c.kind.as_str())).map(|c| c.served).sum()
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.handler.stats();
        let counters = self.handler.counters();
        let node = stats.node_id.0.to_string();
        let versions = self.handler.wire_versions();
        let (wire_min, wire_max) = (versions.min().to_string(), versions.max().to_string());
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("node", node.as_str()),
            ("wire_min", wire_min.as_str()),
            ("wire_max", wire_max.as_str()),
        ];
        e.encode_descriptor(
            "build",
            "This node's build and wire versions.",
            None,
            MetricType::Info,
        )?
        .encode_info(&build)?;

        gauge(&mut e, "shards", "Shards stored on this node.", stats.shards)?;
        gauge(
            &mut e,
            "shard_bytes",
            "Shard payload bytes stored on this node.",
            stats.shard_bytes,
        )?;
        gauge(&mut e, "manifests", "Manifests stored on this node.", stats.manifests)?;
        let jobs = self.handler.engine().job_usage();
        gauge(&mut e, "jobs", "Jobs with shards on this node.", jobs.len() as u64)?;
        let top = top_jobs(jobs, METRICS_TOP_JOBS);
        for (name, help, value) in [
            (
                "job_shards",
                "Shards per job (the jobs with the most bytes; the rest as (other)).",
                (|u: &JobUsage| u.shards) as fn(&JobUsage) -> u64,
            ),
            (
                "job_shard_bytes",
                "Shard bytes per job (the jobs with the most; the rest as (other)).",
                |u: &JobUsage| u.shard_bytes,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (job, usage) in &top {
                family.encode_family(&[("job_name", job.as_str())])?.encode_gauge(&value(usage))?;
            }
        }

        {
            let mut requests = e.encode_descriptor(
                "requests",
                "Requests answered, per message kind and outcome (served, or failed with an error reply).",
                None,
                MetricType::Counter,
            )?;
            for c in &stats.requests {
                for (outcome, v) in [("served", c.served), ("failed", c.failed)] {
                    requests
                        .encode_family(&[("kind", c.kind.as_str()), ("outcome", outcome)])?
                        .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                }
            }
        }
        {
            let mut latency = e.encode_descriptor(
                "request_duration_seconds",
                "Time from a request read in full (or refused) to its reply, per message kind.",
                None,
                MetricType::Histogram,
            )?;
            for l in counters.latencies() {
                let bounds = LATENCY_BUCKETS_US.iter().map(|us| *us as f64 / 1e6).chain([f64::MAX]);
                let buckets: Vec<(f64, u64)> = bounds.zip(l.buckets).collect();
                let count = l.buckets.iter().sum();
                latency.encode_family(&[("kind", l.kind)])?.encode_histogram::<NoLabelSet>(
                    l.sum_us as f64 / 1e6,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        let maintenance = [
            ("repair", served_in(&stats.requests, &REPAIR_KINDS)),
            ("gc", served_in(&stats.requests, &GC_KINDS)),
        ];
        {
            let mut work = e.encode_descriptor(
                "maintenance_requests",
                "Repair (ReplaceManifest, DeleteShard, VerifyShard) and deletion/gc (DeleteCheckpoint, DeleteOrphanShards, DeleteManifest, MarkDeleting, ClearDeleting) requests served.",
                None,
                MetricType::Counter,
            )?;
            for (kind, v) in maintenance {
                work.encode_family(&[("work", kind)])?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
            }
        }

        let (bytes_in, bytes_out) = counters.bytes_in_out();
        counter(
            &mut e,
            "received_bytes",
            "Request bytes read (frame prefix, header and payload).",
            bytes_in,
        )?;
        counter(
            &mut e,
            "sent_bytes",
            "Reply bytes written (frame prefix, header and payload).",
            bytes_out,
        )?;
        gauge(
            &mut e,
            "inflight_bytes",
            "Bytes of the in-flight budget held now.",
            stats.inflight_bytes,
        )?;
        gauge(&mut e, "inflight_limit_bytes", "The in-flight budget.", NODE_MAX_INFLIGHT_BYTES)?;
        counter(
            &mut e,
            "corrupt_shards_found",
            "Corrupt shards found by reads, verifies and the scrubber, each counted once.",
            stats.corrupt_shards_found,
        )?;
        counter(
            &mut e,
            "scrubbed_shards",
            "Shards the scrubber re-hashed.",
            stats.scrubbed_shards,
        )?;
        counter(
            &mut e,
            "scrub_passes",
            "Complete scrubber passes over every stored shard.",
            stats.scrub_passes,
        )?;
        gauge(
            &mut e,
            "disk_free_bytes",
            "Free bytes of the data folder's file system.",
            stats.disk_free_bytes,
        )?;
        gauge(&mut e, "started_empty", "1 if the node started on an empty data folder that should have held shards (run rackpoint repair).", u64::from(stats.started_empty))?;
        Ok(())
    }
}

/// The reply to one HTTP request: the metrics for `GET /metrics`, 404 for anything else.
fn respond<B>(registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.method() == Method::GET && request.uri().path() == "/metrics" {
        *response.body_mut() = Full::new(Bytes::from(render(registry)));
        if let Ok(value) = CONTENT_TYPE.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
        *response.body_mut() = Full::new(Bytes::from_static(b"only GET /metrics is served\n"));
    }
    response
}

/// Binds the metrics listener on `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
) {
    let slots = Arc::new(Semaphore::new(METRICS_MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: the next accept may succeed.
                    tracing::warn!("metrics listener: accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let registry = registry.clone();
        let guard = drain.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let reply = respond(&registry, &request);
                    async move { Ok::<_, Infallible>(reply) }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(METRICS_HEAD_TIMEOUT_MS))
                .max_buf_size(METRICS_MAX_REQUEST_HEAD_BYTES)
                .keep_alive(false);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let limit = Duration::from_millis(METRICS_CONNECTION_TIMEOUT_MS);
            match tokio::time::timeout(limit, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, "metrics request not served: {e}"),
                Err(_) => {
                    tracing::debug!(%peer, "metrics connection dropped after {METRICS_CONNECTION_TIMEOUT_MS} ms")
                }
            }
            drop((slot, guard));
        });
    }
}

/// Reads one metric's value out of a scrape's text: the sample whose name and labels are
/// exactly `series` (say `rackpoint_requests_total{kind="Hello",outcome="served"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `series` with its labels, as the text format writes them.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut out = name.to_owned();
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}{k}=\"{v}\"");
        }
        out.push('}');
    }
    out
}

#[cfg(test)]
mod tests;

//! `/metrics` and `/health` over HTTP (feature `http`), for scrapers and probes that do not
//! live in the host application.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::health::{health, HealthLimits, HealthStatus};
use super::metrics::{snapshot as metrics, PrometheusCollector};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sync::{
    AtomicBool, DataArc as Arc, DataWeak as Weak, JoinHandle, Mutex, Ordering, ThreadBuilder,
};

/// The address [`crate::Db::serve_http`] is usually given: loopback only, so nothing is
/// exposed beyond the machine unless the caller asks for it.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9187";

/// A running `/metrics` and `/health` endpoint; stops when dropped (or with [`stop`]).
///
/// - `GET /metrics`: the engine's metrics in the Prometheus text format.
/// - `GET /health`: `{"status": "healthy" | "degraded" | "unhealthy", "reasons": [...]}`,
///   status 200 unless unhealthy (503), so a probe needs no parsing.
///
/// Once the database is closed both answer 503.
///
/// [`stop`]: MetricsServer::stop
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    pub(crate) fn start(
        db: Weak<Engine>,
        addr: impl ToSocketAddrs,
        limits: HealthLimits,
    ) -> Result<MetricsServer> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::InvalidConfig("the HTTP address resolves to nothing".into()))?;
        let server = tiny_http::Server::http(addr).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "cannot serve HTTP on {addr}: {e}"
            )))
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::InvalidConfig("not an IP address".into()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop) = (server.clone(), stop.clone());
            ThreadBuilder::new()
                .name("walmdb-http".into())
                .spawn(move || serve(&server, &stop, &db, &limits))?
        };
        tracing::info!(%addr, "serving /metrics and /health");
        Ok(MetricsServer {
            addr,
            server,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the system chose, if given port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the HTTP server thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn serve(server: &tiny_http::Server, stop: &AtomicBool, db: &Weak<Engine>, limits: &HealthLimits) {
    while !stop.load(Ordering::Acquire) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "the HTTP server could not take a request");
                continue;
            }
        };
        let (code, content_type, body) = answer(request.method(), request.url(), db, limits);
        let header = tiny_http::Header::from_bytes("Content-Type", content_type)
            .expect("a valid static header");
        let response = tiny_http::Response::from_string(body)
            .with_status_code(code)
            .with_header(header);
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "an HTTP client went away");
        }
    }
}

fn answer(
    method: &tiny_http::Method,
    url: &str,
    db: &Weak<Engine>,
    limits: &HealthLimits,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if *method != tiny_http::Method::Get {
        return (405, TEXT, "only GET\n".into());
    }
    let path = url.split('?').next().unwrap_or("");
    let Some(engine) = db.upgrade().filter(|e| !e.state.is_closed()) else {
        return (503, TEXT, "the database is closed\n".into());
    };
    match path {
        "/metrics" => {
            let m = metrics(&engine);
            drop(engine);
            let mut registry = prometheus_client::registry::Registry::default();
            let once = Mutex::new(Some(m));
            registry
                .sub_registry_with_prefix("walmdb")
                .register_collector(Box::new(PrometheusCollector {
                    snapshot: move || once.lock().take(),
                }));
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &registry) {
                Ok(()) => (
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => (500, TEXT, "encoding the metrics failed\n".into()),
            }
        }
        "/health" => {
            let h = health(&engine, limits);
            drop(engine);
            let code = if h.status == HealthStatus::Unhealthy {
                503
            } else {
                200
            };
            let body = HealthBody {
                status: status_name(h.status),
                reasons: h
                    .reasons
                    .iter()
                    .map(|(s, why)| HealthReason {
                        level: status_name(*s),
                        reason: why,
                    })
                    .collect(),
            };
            match serde_json::to_string(&body) {
                Ok(mut json) => {
                    json.push('\n');
                    (code, "application/json", json)
                }
                Err(_) => (500, TEXT, "encoding the health failed\n".into()),
            }
        }
        _ => (404, TEXT, "not found: try /metrics or /health\n".into()),
    }
}

/// `/health`'s body: `{"status": .., "reasons": [{"level": .., "reason": ..}, ..]}`.
#[derive(serde::Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    reasons: Vec<HealthReason<'a>>,
}

#[derive(serde::Serialize)]
struct HealthReason<'a> {
    level: &'static str,
    reason: &'a str,
}

fn status_name(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

//! The HTTP side of the WebSocket port: the trader page (`/`, `/app.js`, `/style.css`, embedded
//! in the binary) and `/ws`, which upgrades to the WebSocket protocol when a connection slot is
//! free. Every other path is 404.

use super::handshake;
use super::server::Connections;
use super::session::{self, Front};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpStream;
use tungstenite::protocol::WebSocketConfig;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn page(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    );
    // The page is embedded in the binary: revalidate so a new build is seen at once.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Answers one HTTP request.
pub async fn route(
    req: Request<hyper::body::Incoming>,
    front: Arc<Front>,
    connections: Arc<Connections>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let path = path.as_str();
    let asset = match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "/style.css" => Some(("text/css; charset=utf-8", STYLE_CSS)),
        _ => None,
    };
    if let Some((content_type, body)) = asset {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"GET only\n"),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
        return Ok(page(content_type, body));
    }
    match path {
        "/healthz" => return Ok(health(&front)),
        "/metrics" => return Ok(metrics(&front, &connections)),
        _ => {}
    }
    if path != "/ws" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from(format!("no such page: {path}\n")),
        ));
    }
    let (parts, body) = req.into_parts();
    let accepted = match handshake::accept(&parts, &front.deflate) {
        Ok(accepted) => accepted,
        Err(e) => return Ok(refusal(e.status(), e.to_string())),
    };
    let Some(slot) = connections.reserve() else {
        return Ok(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many connections: the server holds its limit of {}; retry later",
                connections.max()
            ),
        ));
    };
    let limits = &front.limits;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size));
    let response = accepted.response(Full::new(Bytes::new()));
    let req = Request::from_parts(parts, body);
    tokio::spawn(async move {
        // The slot is held for as long as the connection lives.
        let _slot = slot;
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        // The connection is served on its TCP socket itself, which the writers write to
        // without the HTTP layer in the way.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::warn!("an upgraded connection is not a TCP socket; dropped");
            return;
        };
        session::run(
            parts.io.into_inner(),
            parts.read_buf,
            accepted.negotiated,
            config,
            front,
        )
        .await;
    });
    Ok(response)
}

/// A plain-text refusal; 503 says when to retry, 405 what is allowed.
fn refusal(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut r = text(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    );
    let h = r.headers_mut();
    match status {
        StatusCode::UPGRADE_REQUIRED => {
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

/// `/healthz`: 200 while the market runs and is healthy ([`Market::health`]: journal, and on a
/// gateway its link to the bus and its lag), 503 with the reason otherwise.
fn health(front: &Front) -> Response<Full<Bytes>> {
    let (status, body) = if *front.shutdown.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        )
    } else {
        match front.market.health() {
            Ok(()) => (StatusCode::OK, "ok\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        }
    };
    text(status, "text/plain; charset=utf-8", Bytes::from(body))
}

/// `/metrics`: the market's and this front's counters, Prometheus text format.
fn metrics(front: &Arc<Front>, connections: &Arc<Connections>) -> Response<Full<Bytes>> {
    let mut metrics = crate::metrics::Metrics::new(front.market.clone());
    metrics.register(WsMetrics {
        front: front.clone(),
        connections: connections.clone(),
    });
    text(
        StatusCode::OK,
        crate::metrics::CONTENT_TYPE,
        Bytes::from(metrics.encode()),
    )
}

/// This front's families.
struct WsMetrics {
    front: Arc<Front>,
    connections: Arc<Connections>,
}

impl std::fmt::Debug for WsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsMetrics")
    }
}

impl prometheus_client::collector::Collector for WsMetrics {
    fn encode(&self, encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        let mut f = crate::metrics::Families::new(encoder);
        let w = self.front.writers.wire();
        f.gauge(
            "tickerd_ws_connections",
            "Open WebSocket connections.",
            self.connections.open() as u64,
        )?;
        f.gauge(
            "tickerd_ws_blocked_connections",
            "WebSocket connections whose socket refuses bytes now (clients that do not keep up).",
            self.front.writers.blocked() as u64,
        )?;
        f.counters(
            "tickerd_ws_messages_out_total",
            "WebSocket messages written, by compression.",
            "compressed",
            [
                ("true", w.compressed_messages),
                ("false", w.messages.saturating_sub(w.compressed_messages)),
            ],
        )?;
        f.counters(
            "tickerd_ws_bytes_out_total",
            "WebSocket payload bytes: before compression (raw) and as written (wire).",
            "kind",
            [("raw", w.raw_bytes), ("wire", w.wire_bytes)],
        )?;
        f.counter(
            "tickerd_ws_writes_total",
            "Vectored socket writes of the WebSocket writers (messages per write: how well \
             writes are batched).",
            w.writes,
        )
    }
}

//! The HTTP side of the WebSocket port: the trader page (`/`, `/app.js`, `/style.css`, embedded
//! in the binary) and `/ws`, which upgrades to the WebSocket protocol when a connection slot is
//! free. Every other path is 404.

use super::server::Connections;
use super::session::{self, Front};
use super::upgrade;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::Arc;
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
    mut req: Request<hyper::body::Incoming>,
    front: Arc<Front>,
    connections: Arc<Connections>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
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
    if path != "/ws" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from(format!("no such page: {path}\n")),
        ));
    }
    let accept_key = match upgrade::check(req.method(), req.headers()) {
        Ok(key) => key,
        Err(refused) => return Ok(refused.response()),
    };
    let Some(slot) = connections.reserve() else {
        let refused = upgrade::Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "too many connections: the server holds its limit of {}; retry later",
                connections.max()
            ),
        };
        return Ok(refused.response());
    };
    let limits = &front.limits;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size));
    let (response, stream) = upgrade::accept(&mut req, &accept_key, config);
    tokio::spawn(async move {
        // The slot is held for as long as the connection lives.
        let _slot = slot;
        if let Some(ws) = stream.await {
            session::run(ws, front).await;
        }
    });
    Ok(response)
}

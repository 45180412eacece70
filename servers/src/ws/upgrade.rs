//! The WebSocket opening handshake (RFC 6455 §4.2) on a hyper request: the checks, the `101`
//! response and the stream the session runs on.
//!
//! [`accept`] is the one function that answers an upgrade; the permessage-deflate handshake
//! replaces it (negotiating the extension and wrapping the stream) without touching the rest.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

/// The socket a session runs on.
pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// Why an upgrade request is refused, as the HTTP answer to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refused {
            status,
            message: message.into(),
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(format!("{}\n", self.message))));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self.status {
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
}

/// Whether a comma-separated header has `token` (case-insensitive), in any of its values.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A `Sec-WebSocket-Key`: 16 bytes in base64, 24 characters ending in `==`.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Checks an upgrade request; the `Sec-WebSocket-Accept` value on success.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<String, Refused> {
    if method != Method::GET {
        return Err(Refused::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET request",
        ));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "`Upgrade: websocket` header required: /ws speaks WebSocket only",
        ));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "`Connection: Upgrade` header required",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused::new(
            StatusCode::UPGRADE_REQUIRED,
            "`Sec-WebSocket-Version: 13` required",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid_key(key.as_bytes()) => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` must be 16 bytes in base64",
        )),
    }
}

/// Answers a checked upgrade request: the `101` response to send, and the WebSocket stream
/// once hyper hands the connection over (`None` if the client left first).
pub fn accept(
    req: &mut Request<hyper::body::Incoming>,
    accept_key: &str,
    config: WebSocketConfig,
) -> (
    Response<Full<Bytes>>,
    impl Future<Output = Option<WsStream>> + Send + 'static,
) {
    let on_upgrade = hyper::upgrade::on(req);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    let stream = async move {
        let upgraded = on_upgrade.await.ok()?;
        Some(
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await,
        )
    };
    (response, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value() {
        assert_eq!(
            check(&Method::GET, &upgrade_headers()).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_missing_piece_is_refused_with_its_status() {
        assert_eq!(
            check(&Method::POST, &upgrade_headers()).unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        for (name, value, status) in [
            (header::UPGRADE, "h2c", StatusCode::BAD_REQUEST),
            (header::CONNECTION, "keep-alive", StatusCode::BAD_REQUEST),
            (
                header::SEC_WEBSOCKET_VERSION,
                "8",
                StatusCode::UPGRADE_REQUIRED,
            ),
            (
                header::SEC_WEBSOCKET_KEY,
                "short==",
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let mut h = upgrade_headers();
            h.insert(name.clone(), HeaderValue::from_static(value));
            let refused = check(&Method::GET, &h).unwrap_err();
            assert_eq!(refused.status, status, "{name}: {value}");
        }
        let refused = check(&Method::GET, &HeaderMap::new()).unwrap_err();
        assert_eq!(refused.response().status(), StatusCode::BAD_REQUEST);
    }
}

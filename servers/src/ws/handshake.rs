//! The server side of the WebSocket opening handshake (RFC 6455 §4.2) with permessage-deflate
//! negotiation, on `http` types so any HTTP server can use it (ours is hyper), and the step
//! from an upgraded connection to a tungstenite stream.
//!
//! ```text
//! let accepted = accept(&parts, &deflate_config)?;      // 4xx on error: HandshakeError::status
//! answer with accepted.response(body), then on the upgraded IO:
//! let ws = upgrade_stream(io, accepted.negotiated, Role::Server, Some(ws_config)).await;
//! let violations = ws.get_ref().violation_handle();
//! ```

use super::deflate::{negotiate, DeflateConfig, Negotiated, OfferError};
use super::stream::InflatingStream;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

/// A valid upgrade request: the 101 answer's headers and the permessage-deflate parameters.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// `Upgrade`, `Connection`, `Sec-WebSocket-Accept` and, when negotiated,
    /// `Sec-WebSocket-Extensions`.
    pub headers: HeaderMap,
    pub negotiated: Option<Negotiated>,
}

impl Accepted {
    /// The 101 Switching Protocols answer.
    pub fn response<B>(&self, body: B) -> http::Response<B> {
        let mut response = http::Response::new(body);
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Why a request cannot be upgraded; [`status`](Self::status) is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("a WebSocket upgrade must be a GET, not {0}")]
    Method(Method),
    #[error("a WebSocket upgrade needs HTTP/1.1, not {0:?}")]
    Version(Version),
    #[error("missing `Upgrade: websocket`")]
    NoUpgradeHeader,
    #[error("missing `Connection: Upgrade`")]
    NoConnectionUpgrade,
    #[error("unsupported Sec-WebSocket-Version {0:?}; this server speaks 13")]
    WebSocketVersion(Option<String>),
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
    #[error(transparent)]
    Extensions(#[from] OfferError),
}

impl HandshakeError {
    /// 426 for a WebSocket version other than 13 (with `Sec-WebSocket-Version: 13`, see
    /// [`response`](Self::response)), 405 for a method other than GET, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::WebSocketVersion(_) => StatusCode::UPGRADE_REQUIRED,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The error answer, with the headers RFC 6455 asks for.
    pub fn response<B>(&self, body: B) -> http::Response<B> {
        let mut response = http::Response::new(body);
        *response.status_mut() = self.status();
        match self {
            Self::WebSocketVersion(_) => {
                response
                    .headers_mut()
                    .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            Self::Method(_) => {
                response
                    .headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}

/// Whether any of the comma-separated header values holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A Sec-WebSocket-Key is 16 bytes in base64: 22 characters, the last carrying 2 bits, "==".
fn valid_key(key: &[u8]) -> bool {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24
        && key[..22].iter().all(b64)
        && b"AQgw".contains(&key[21])
        && &key[22..] == b"=="
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and negotiates permessage-deflate.
pub fn accept(
    req: &http::request::Parts,
    config: &DeflateConfig,
) -> Result<Accepted, HandshakeError> {
    if req.method != Method::GET {
        return Err(HandshakeError::Method(req.method.clone()));
    }
    if req.version < Version::HTTP_11 || req.version >= Version::HTTP_2 {
        return Err(HandshakeError::Version(req.version));
    }
    if !has_token(&req.headers, UPGRADE, "websocket") {
        return Err(HandshakeError::NoUpgradeHeader);
    }
    if !has_token(&req.headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let version = req.headers.get(SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(HandshakeError::WebSocketVersion(
            version.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        ));
    }
    let mut keys = req.headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if valid_key(key.as_bytes()) => key,
        _ => return Err(HandshakeError::Key),
    };
    // Non-ASCII bytes become U+FFFD, which the grammar rejects as an invalid character.
    let lines: Vec<String> = req
        .headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let negotiated = negotiate(&lines, config)?;

    let mut headers = HeaderMap::new();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept_key = derive_accept_key(key.as_bytes());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key).expect("base64 is a valid header value"),
    );
    if let Some(n) = &negotiated {
        headers.insert(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(&n.response_header()).expect("tokens are a valid header value"),
        );
    }
    Ok(Accepted {
        headers,
        negotiated,
    })
}

/// A tungstenite stream on an upgraded connection, with incoming compressed messages inflated
/// ([`InflatingStream`]). With permessage-deflate negotiated, tungstenite's frame and message
/// limits are raised to at least the inflate cap, since an inflated message arrives as one
/// frame: the cap is then the limit that applies to compressed messages.
pub async fn upgrade_stream<S>(
    io: S,
    negotiated: Option<Negotiated>,
    role: Role,
    ws_config: Option<WebSocketConfig>,
) -> WebSocketStream<InflatingStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws_config = limits_for(ws_config.unwrap_or_default(), negotiated.as_ref());
    let stream = InflatingStream::new(io, role, negotiated.as_ref());
    WebSocketStream::from_raw_socket(stream, role, Some(ws_config)).await
}

/// [`upgrade_stream`] with `buffered`, the bytes already read from `io` past the request
/// (a client may send its first frames right behind it).
pub async fn upgrade_buffered<S>(
    io: S,
    buffered: &[u8],
    negotiated: Option<Negotiated>,
    role: Role,
    ws_config: Option<WebSocketConfig>,
) -> WebSocketStream<InflatingStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws_config = limits_for(ws_config.unwrap_or_default(), negotiated.as_ref());
    let stream = InflatingStream::with_buffered(io, role, negotiated.as_ref(), buffered);
    WebSocketStream::from_raw_socket(stream, role, Some(ws_config)).await
}

/// Message and frame limits that let a compressed message inflate up to the negotiated cap.
fn limits_for(mut ws_config: WebSocketConfig, negotiated: Option<&Negotiated>) -> WebSocketConfig {
    if let Some(n) = negotiated {
        let cap = n.max_inflated_message;
        ws_config.max_frame_size = ws_config.max_frame_size.map(|m| m.max(cap));
        ws_config.max_message_size = ws_config.max_message_size.map(|m| m.max(cap));
    }
    ws_config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder()
            .method("GET")
            .uri("/ws")
            .header("Host", "example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in extra {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn rfc_sample_key_gets_the_rfc_accept_value_and_no_extension() {
        let accepted = accept(&request(&[]), &DeflateConfig::default()).unwrap();
        let response = accepted.response(());
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(response.headers()["upgrade"], "websocket");
        assert!(response.headers().get("sec-websocket-extensions").is_none());
        assert!(accepted.negotiated.is_none());
    }

    #[test]
    fn offer_over_two_header_lines_is_negotiated() {
        let accepted = accept(
            &request(&[
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; server_max_window_bits=20",
                ),
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
            ]),
            &DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(
            accepted.headers["sec-websocket-extensions"],
            "permessage-deflate; server_no_context_takeover"
        );
        assert!(accepted.negotiated.is_some());
    }

    #[test]
    fn malformed_extension_header_is_a_400() {
        let err = accept(
            &request(&[("Sec-WebSocket-Extensions", "permessage-deflate;;")]),
            &DeflateConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(err, HandshakeError::Extensions(_)));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        let config = DeflateConfig::default();
        let mut parts = request(&[]);
        parts.method = Method::POST;
        assert_eq!(
            accept(&parts, &config).unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );

        let mut parts = request(&[]);
        parts.version = Version::HTTP_10;
        assert_eq!(
            accept(&parts, &config).unwrap_err(),
            HandshakeError::Version(Version::HTTP_10)
        );

        let mut parts = request(&[]);
        parts
            .headers
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let err = accept(&parts, &config).unwrap_err();
        assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(err.response(()).headers()["sec-websocket-version"], "13");

        let mut parts = request(&[]);
        parts.headers.remove(UPGRADE);
        assert_eq!(
            accept(&parts, &config).unwrap_err(),
            HandshakeError::NoUpgradeHeader
        );

        let mut parts = request(&[]);
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(
            accept(&parts, &config).unwrap_err(),
            HandshakeError::NoConnectionUpgrade
        );

        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            let mut parts = request(&[]);
            parts
                .headers
                .insert(SEC_WEBSOCKET_KEY, HeaderValue::from_str(key).unwrap());
            assert_eq!(
                accept(&parts, &config).unwrap_err(),
                HandshakeError::Key,
                "{key:?}"
            );
        }
    }
}

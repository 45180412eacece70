//! An echo server on the WebSocket stack the real server uses (hyper HTTP/1.1 upgrade →
//! [`accept`] → [`upgrade_stream`]): every text and binary message is sent back, compressed
//! when permessage-deflate was negotiated. It exists for conformance runs (Autobahn's
//! fuzzingclient) and the integration tests, and shows a session's read loop and close codes
//! in a few lines.

use super::deflate::{
    compressed_binary_message, compressed_message, Compressor, DeflateConfig, Negotiated,
};
use super::handshake::{accept, upgrade_stream};
use super::stream::ViolationHandle;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tungstenite::error::Error as WsError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message;

/// Serves WebSocket echo on `listener` until the task is dropped. Every path upgrades.
pub async fn serve_echo(listener: TcpListener, deflate: DeflateConfig, ws_config: WebSocketConfig) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (deflate, ws_config) = (deflate.clone(), ws_config);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let deflate = deflate.clone();
                async move { Ok::<_, Infallible>(upgrade(req, &deflate, ws_config)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Binds `addr` and serves echo in a background task; returns the bound address.
pub async fn spawn_echo(addr: SocketAddr, deflate: DeflateConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_echo(listener, deflate, WebSocketConfig::default()));
    Ok(local)
}

fn upgrade(
    req: http::Request<Incoming>,
    deflate: &DeflateConfig,
    ws_config: WebSocketConfig,
) -> http::Response<String> {
    let (parts, body) = req.into_parts();
    let accepted = match accept(&parts, deflate) {
        Ok(accepted) => accepted,
        Err(e) => return e.response(format!("{e}\n")),
    };
    let response = accepted.response(String::new());
    let req = http::Request::from_parts(parts, body);
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = upgrade_stream(
            TokioIo::new(upgraded),
            accepted.negotiated.clone(),
            Role::Server,
            Some(ws_config),
        )
        .await;
        echo(ws, accepted.negotiated).await;
    });
    response
}

async fn echo<S>(
    mut ws: tokio_tungstenite::WebSocketStream<super::stream::InflatingStream<S>>,
    negotiated: Option<Negotiated>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let violations = ws.get_ref().violation_handle();
    let mut replies = Compressor::new(negotiated.as_ref());
    while let Some(next) = ws.next().await {
        let reply = match next {
            Ok(Message::Text(text)) => match replies.compress(text.as_bytes()) {
                Some(z) => compressed_message(z),
                None => Message::Text(text),
            },
            Ok(Message::Binary(data)) => match replies.compress(&data) {
                Some(z) => compressed_binary_message(z),
                None => Message::Binary(data),
            },
            // Pings are answered and closes acknowledged by tungstenite itself.
            Ok(_) => continue,
            Err(e) => {
                if let Some(close) = close_for(&e, &violations) {
                    let _ = ws.send(Message::Close(Some(close))).await;
                }
                break;
            }
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

/// The close frame for a failed read: the adapter's recorded violation first, then
/// tungstenite's own protocol, UTF-8 and size errors; `None` when the connection is gone.
pub fn close_for(error: &WsError, violations: &ViolationHandle) -> Option<CloseFrame> {
    if let Some(v) = violations.get() {
        return Some(v.close_frame());
    }
    let (code, reason) = match error {
        WsError::Protocol(p) => (CloseCode::Protocol, p.to_string()),
        WsError::Utf8(_) => (
            CloseCode::Invalid,
            "invalid UTF-8 in a text message".to_string(),
        ),
        WsError::Capacity(c) => (CloseCode::Size, c.to_string()),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

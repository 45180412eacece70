//! A WebSocket client on the same stack, for tests and the load tool: the opening handshake
//! with a permessage-deflate offer, the server's answer checked, and a stream that inflates the
//! server's compressed messages, plus a compressor for the client's own messages (tungstenite
//! masks every frame a client writes, `Message::Frame` ones included).

use super::deflate::{AnswerError, DeflateConfig, MessageDeflater, Negotiated};
use super::stream::InflatingStream;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

/// Largest handshake answer read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// An open client connection.
pub struct ClientConnection<S> {
    pub ws: WebSocketStream<InflatingStream<S>>,
    /// `None` when the server declined permessage-deflate (or none was offered).
    pub negotiated: Option<Negotiated>,
    /// The compressor for the client's messages, when negotiated: send
    /// `compressed_message(deflater.compress(text))`.
    pub deflater: Option<MessageDeflater>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the server answered {status}: {head}")]
    Refused { status: u16, head: String },
    #[error("invalid handshake answer: {0}")]
    BadAnswer(&'static str),
    #[error(transparent)]
    Extensions(#[from] AnswerError),
}

/// Connects to `ws://{addr}{path}` offering `offer` as `Sec-WebSocket-Extensions` (e.g.
/// `"permessage-deflate; client_max_window_bits"`; `None` offers nothing). `config` gives the
/// client's level and inflate cap.
pub async fn connect(
    addr: impl ToSocketAddrs,
    path: &str,
    offer: Option<&str>,
    config: &DeflateConfig,
    ws_config: Option<WebSocketConfig>,
) -> Result<ClientConnection<TcpStream>, ConnectError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let host = tcp.peer_addr()?.to_string();
    client_handshake(tcp, &host, path, offer, config, ws_config).await
}

/// The client handshake over any IO.
pub async fn client_handshake<S>(
    mut io: S,
    host: &str,
    path: &str,
    offer: Option<&str>,
    config: &DeflateConfig,
    ws_config: Option<WebSocketConfig>,
) -> Result<ClientConnection<S>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(offer) = offer {
        request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    request.push_str("\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;

    // Read the head; the server may send frames right behind it.
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(ConnectError::BadAnswer("answer head too long"));
        }
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectError::BadAnswer(
                "connection closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ConnectError::BadAnswer("answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or(ConnectError::BadAnswer("invalid status line"))?;
    if status != 101 {
        return Err(ConnectError::Refused {
            status,
            head: head.trim_end().to_string(),
        });
    }
    let headers: Vec<(&str, &str)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or(ConnectError::BadAnswer("invalid header line"))
        })
        .collect::<Result<_, _>>()?;
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    if !values("upgrade")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(ConnectError::BadAnswer("no `Upgrade: websocket`"));
    }
    if values("sec-websocket-accept") != [derive_accept_key(key.as_bytes()).as_str()] {
        return Err(ConnectError::BadAnswer("wrong Sec-WebSocket-Accept"));
    }
    let offers: Vec<&str> = offer.into_iter().collect();
    let negotiated = Negotiated::from_answer(&values("sec-websocket-extensions"), &offers, config)?;

    let mut ws_config = ws_config.unwrap_or_default();
    if let Some(n) = &negotiated {
        ws_config.max_frame_size = ws_config
            .max_frame_size
            .map(|m| m.max(n.max_inflated_message));
        ws_config.max_message_size = ws_config
            .max_message_size
            .map(|m| m.max(n.max_inflated_message));
    }
    let stream =
        InflatingStream::with_buffered(io, Role::Client, negotiated.as_ref(), &buf[head_end..]);
    let ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(ws_config)).await;
    let deflater = negotiated.as_ref().map(MessageDeflater::for_client);
    Ok(ClientConnection {
        ws,
        negotiated,
        deflater,
    })
}

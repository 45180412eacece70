//! One connection's turn on the socket: what it is owed gathered into one vectored write, and
//! what the kernel did not take kept as its backlog.

use super::{Conn, ConnFeed, MAX_IOV};
use crate::ws::outgoing::{Encoder, End, FeedFrame, WireCounts};
use crate::ws::replies;
use bytes::Bytes;
use std::io::{self, IoSlice};
use ticker_feeds::hub::{Next, Window};
use ticker_feeds::{Delivery, Ended};
use tungstenite::protocol::frame::coding::CloseCode;

/// Bytes for one vectored write: a frame shared with other connections, or this one's own.
pub(super) enum Piece<'a> {
    Shared(&'a Bytes),
    Own(Bytes),
}

impl Piece<'_> {
    pub(super) fn bytes(&self) -> &Bytes {
        match self {
            Piece::Shared(b) => b,
            Piece::Own(b) => b,
        }
    }
}

/// How gathering one feed ended.
pub(super) enum Gathered {
    /// Everything the window holds for it.
    All,
    /// The write is full.
    Full,
    /// The subscription ended the stream.
    Ended(End),
}

/// Adds what `f` is owed out of `window` to `pieces`.
pub(super) fn gather<'w>(
    f: &mut ConnFeed,
    window: &'w Window,
    kept_up: bool,
    encoder: &mut Encoder,
    pieces: &mut Vec<Piece<'w>>,
    counts: &mut WireCounts,
) -> Gathered {
    loop {
        if pieces.len() >= MAX_IOV {
            return Gathered::Full;
        }
        match f.feed.sub.next_in(window, kept_up) {
            Ok(None) => return Gathered::All,
            Ok(Some(Next::Message(m) | Next::Conflated { message: m, .. })) => {
                pieces.push(match encoder.feed(m, counts) {
                    FeedFrame::Shared(b) => Piece::Shared(b),
                    FeedFrame::Own(b) => Piece::Own(b),
                });
            }
            Ok(Some(Next::Own(Delivery::Gap {
                from_seq,
                resumed_after,
            }))) => {
                let gap = replies::gap(&f.feed.spec, from_seq, resumed_after);
                pieces.push(Piece::Own(encoder.reply(&gap, counts)));
            }
            Ok(Some(Next::Own(delivery))) => {
                if let Some(m) = delivery.message() {
                    // Held by the subscription only until now: the write keeps its own.
                    pieces.push(Piece::Own(encoder.feed(m, counts).bytes().clone()));
                }
            }
            Err(Ended::TooSlow { limit, .. }) => {
                return Gathered::Ended(End::Close(
                    CloseCode::Again,
                    format!(
                        "too slow: {} fell {limit} messages behind; resume with from_seq",
                        f.feed.spec.label()
                    ),
                ));
            }
            Err(Ended::Closed) => {
                return Gathered::Ended(End::Close(CloseCode::Away, "server shutting down".into()))
            }
        }
    }
}

/// Writes `pieces` in one vectored write; what the socket does not take becomes the
/// connection's backlog. `Ok(false)` when the socket is full.
pub(super) fn write_pieces(
    conn: &mut Conn,
    pieces: &[Piece<'_>],
    slices: &[IoSlice<'_>],
) -> io::Result<bool> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let n = match conn.socket.try_write_vectored(slices) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if n == total {
        conn.refused = false;
        return Ok(true);
    }
    conn.refused = true;
    let mut skip = n;
    for piece in pieces {
        let bytes = piece.bytes();
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        conn.backlog.push_back(bytes.slice(skip..));
        skip = 0;
    }
    Ok(false)
}

/// Writes a connection's backlog; `Ok(true)` once it is all written.
pub(super) fn write_backlog(conn: &mut Conn) -> io::Result<bool> {
    while !conn.backlog.is_empty() {
        let slices: Vec<IoSlice<'_>> = conn
            .backlog
            .iter()
            .take(MAX_IOV)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut n = match conn.socket.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        drop(slices);
        while n > 0 {
            let front = conn.backlog.front_mut().expect("written bytes were queued");
            if n >= front.len() {
                n -= front.len();
                conn.backlog.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
    Ok(true)
}

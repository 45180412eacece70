//! Why a connection must be closed: the close code and reason the peer will be told when the
//! inbound machine finds a protocol violation or bad compressed data.

use crate::ws::deflate::message::InflateError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;

/// Longest reason a close frame can carry (125 bytes of payload minus the code).
const MAX_REASON: usize = 123;

/// Why the connection must be closed, as the peer will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: CloseCode,
    pub reason: String,
}

impl Violation {
    pub(super) fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }

    pub(super) fn protocol(reason: impl Into<String>) -> Self {
        Self::new(CloseCode::Protocol, reason)
    }

    /// The close frame to send.
    pub fn close_frame(&self) -> CloseFrame {
        CloseFrame {
            code: self.code,
            reason: self.reason.clone().into(),
        }
    }
}

pub(super) fn inflate_violation(e: InflateError) -> Violation {
    match e {
        InflateError::TooLarge { cap } => Violation::new(
            CloseCode::Size,
            format!("compressed message inflates past the {cap}-byte limit"),
        ),
        InflateError::Corrupt(why) => Violation::new(
            CloseCode::Invalid,
            format!("invalid compressed data: {why}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_reason_fits_a_close_frame() {
        let v = Violation::new(CloseCode::Protocol, "é".repeat(100));
        assert!(v.reason.len() <= MAX_REASON);
        assert_eq!(v.close_frame().code, CloseCode::Protocol);
    }
}

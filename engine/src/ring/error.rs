//! What a ring says when it cannot take or give an item right now.
//!
//! A failed push hands the item back, so nothing is ever lost on a full or closed ring.

use std::fmt;

/// Why a push failed; the item comes back to the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PushError<T> {
    /// Every slot holds an item the consumer has not taken yet.
    Full(T),
    /// The ring is closed (consumer gone or closed it); nothing will ever be taken again.
    Closed(T),
}

impl<T> PushError<T> {
    /// The item that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(item) | PushError::Closed(item) => item,
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, PushError::Full(_))
    }
}

// Manual impls so `T` need not be `Debug`/`Display` (commands and buffers are large).
impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("Full(..)"),
            PushError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(_) => f.write_str("ring is full"),
            PushError::Closed(_) => f.write_str("ring is closed"),
        }
    }
}

impl<T> std::error::Error for PushError<T> {}

/// Why a pop returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// Nothing published yet; more may come.
    #[error("ring is empty")]
    Empty,
    /// Closed and drained: every item pushed has been popped and no more can be pushed.
    #[error("ring is closed and drained")]
    Closed,
}

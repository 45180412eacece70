//! What a client is told when a request is refused: the `code` and the fields at fault.

/// The `code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownOp,
    InvalidRequest,
    NotAuthenticated,
    AuthFailed,
    AlreadyAuthenticated,
    TooManySubscriptions,
    RateLimited,
    PermissionDenied,
    Busy,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An `error` reply: what went wrong with which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub id: Option<u64>,
    pub op: Option<&'static str>,
    pub code: ErrorCode,
    pub message: String,
    /// `(field, description)`; set for `invalid_request`.
    pub fields: Vec<(String, String)>,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            id: None,
            op: None,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn invalid(message: String, fields: Vec<(String, String)>) -> Self {
        RequestError {
            fields,
            ..RequestError::new(ErrorCode::InvalidRequest, message)
        }
    }

    /// The same error about request `id` with op `op`.
    pub fn about(mut self, op: Option<&'static str>, id: Option<u64>) -> Self {
        self.op = op;
        self.id = id;
        self
    }
}

impl From<crate::order_entry::Invalid> for RequestError {
    fn from(i: crate::order_entry::Invalid) -> Self {
        RequestError::invalid(i.message, i.violations)
    }
}

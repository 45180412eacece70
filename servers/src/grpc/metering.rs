//! The tower layer that counts and times every gRPC call ([`crate::metrics::grpc`]).
//!
//! It sits in front of the services (inside gRPC-Web, which hands it plain gRPC) and reads
//! only what the HTTP layer carries: the method from the path, the status from `grpc-status`
//! — in the response headers when the call fails before any message ("trailers-only"), else
//! in the trailers that end the response body. So it needs no cooperation from the services,
//! and every call is seen, those refused by authentication or the metadata limit included.
//!
//! What is recorded:
//! - at arrival, the method's `started` count;
//! - at the first response frame (a message, or the status if none comes first), the time
//!   since arrival: a unary call's handling time, a stream's time to its first message;
//! - at the status, the method's count for that code. A stream counts when it closes. A call
//!   whose response is dropped before its status (the client cancelled or went away, the
//!   server shut down) counts as CANCELLED; a body that ends or fails without a status counts
//!   as UNKNOWN, as a client would see it.
//!
//! Recording is a few relaxed adds on atomics made at start; nothing locks or allocates.

use crate::market::MarketStats;
use crate::metrics::grpc::MethodId;
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

/// Meters every call into the market's [`MarketStats::grpc`].
#[derive(Debug, Clone)]
pub struct MeteringLayer {
    stats: Arc<MarketStats>,
}

impl MeteringLayer {
    pub fn new(stats: Arc<MarketStats>) -> MeteringLayer {
        MeteringLayer { stats }
    }
}

impl<S> Layer<S> for MeteringLayer {
    type Service = Metering<S>;

    fn layer(&self, inner: S) -> Metering<S> {
        Metering {
            inner,
            stats: self.stats.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metering<S> {
    inner: S,
    stats: Arc<MarketStats>,
}

impl<S, B, ResBody> Service<http::Request<B>> for Metering<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.stats.grpc.method(req.uri().path());
        self.stats.grpc.started(method);
        let call = Call {
            stats: self.stats.clone(),
            method,
            arrived: Instant::now(),
            answered: false,
            ended: false,
        };
        MeteredCall {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

/// One call in progress. Dropped before its status, it counts as CANCELLED.
struct Call {
    stats: Arc<MarketStats>,
    method: MethodId,
    arrived: Instant,
    /// The first response frame (or the status) was timed.
    answered: bool,
    ended: bool,
}

impl Call {
    fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            let took = self.arrived.elapsed();
            self.stats.grpc.first_response(self.method, took);
        }
    }

    fn end(&mut self, code: Code) {
        if !self.ended {
            self.answered();
            self.ended = true;
            self.stats.grpc.handled(self.method, code);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

/// The status a response's headers settle, if they do: `grpc-status` in a trailers-only
/// response, or an HTTP error without one (mapped as gRPC clients map it).
fn status_in_headers(parts: &http::response::Parts) -> Option<Code> {
    if let Some(status) = parts.headers.get("grpc-status") {
        return Some(Code::from_bytes(status.as_bytes()));
    }
    // https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
    match parts.status.as_u16() {
        200 => None,
        400 => Some(Code::Internal),
        401 => Some(Code::Unauthenticated),
        403 => Some(Code::PermissionDenied),
        404 => Some(Code::Unimplemented),
        429 | 502 | 503 | 504 => Some(Code::Unavailable),
        _ => Some(Code::Unknown),
    }
}

pin_project! {
    /// The service's response future, with the call it belongs to.
    pub struct MeteredCall<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredCall<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this
            .call
            .take()
            .expect("MeteredCall polled after completion");
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                call.end(Code::Unknown);
                return Poll::Ready(Err(e));
            }
        };
        let (parts, body) = response.into_parts();
        let call = match status_in_headers(&parts) {
            Some(code) => {
                call.end(code);
                None
            }
            // A 200 with nothing to follow never gets a status.
            None if body.is_end_stream() => {
                call.end(Code::Unknown);
                None
            }
            None => Some(call),
        };
        Poll::Ready(Ok(http::Response::from_parts(
            parts,
            MeteredBody { inner: body, call },
        )))
    }
}

pin_project! {
    /// A response body that records its call's first frame and its status.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        // `None` once the status is recorded.
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call {
            let ended = match &frame {
                Some(Ok(frame)) => match frame.trailers_ref() {
                    Some(trailers) => {
                        let code = trailers
                            .get("grpc-status")
                            .map_or(Code::Unknown, |s| Code::from_bytes(s.as_bytes()));
                        call.end(code);
                        true
                    }
                    None => {
                        call.answered();
                        false
                    }
                },
                Some(Err(_)) | None => {
                    call.end(Code::Unknown);
                    true
                }
            };
            if ended {
                *this.call = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

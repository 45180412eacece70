//! Request metadata over `grpc.max_header_bytes`, answered with a gRPC status a client can read.
//!
//! HTTP/2 lets a server cap the header block it accepts (SETTINGS_MAX_HEADER_LIST_SIZE); past
//! it, the h2 layer answers with a bare HTTP 431 and no `grpc-status`, which gRPC clients
//! report as UNKNOWN. So the transport advertises a larger ceiling
//! ([`transport_ceiling`]) and this layer, in front of every service, refuses anything over
//! the configured limit with RESOURCE_EXHAUSTED naming both sizes. Only a block past the
//! ceiling still gets the 431: h2 stops decoding it there, before any service sees it.

use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The header block size h2 accepts for a configured limit: room above it, so that what
/// exceeds the limit reaches [`MetadataLimit`], bounded so a peer cannot make the server
/// decode arbitrarily large blocks.
pub fn transport_ceiling(limit: usize) -> u32 {
    limit
        .saturating_mul(4)
        .max(256 << 10)
        .min(u32::MAX as usize) as u32
}

/// A request's metadata size as HTTP/2 counts a header list (RFC 9113 §6.5.2: name and value
/// lengths plus 32 per field), pseudo-headers included.
pub fn metadata_size<B>(req: &http::Request<B>) -> usize {
    const PER_FIELD: usize = 32;
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path",
            uri.path_and_query().map_or(0, |p| p.as_str().len()),
        ),
    ]
    .iter()
    .map(|(name, len)| name.len() + len + PER_FIELD)
    .sum::<usize>();
    pseudo
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + PER_FIELD)
            .sum::<usize>()
}

/// Wraps a service with the metadata limit.
#[derive(Debug, Clone, Copy)]
pub struct MetadataLimitLayer {
    pub limit: usize,
}

impl<S> Layer<S> for MetadataLimitLayer {
    type Service = MetadataLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetadataLimit {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetadataLimit<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<http::Request<B>> for MetadataLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let size = metadata_size(&req);
        if size > self.limit {
            let status = tonic::Status::resource_exhausted(format!(
                "request metadata too large: {size} bytes, limit {} (grpc.max_header_bytes)",
                self.limit
            ));
            return futures_util::future::Either::Left(std::future::ready(Ok(status.into_http())));
        }
        futures_util::future::Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_counts_every_field_as_http2_does() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://h:1/ticker.v1.OrderService/PlaceOrder")
            .header("authorization", "Bearer t")
            .body(())
            .unwrap();
        let expected = (7 + 4 + 32)
            + (7 + 4 + 32)
            + (10 + 3 + 32)
            + (5 + "/ticker.v1.OrderService/PlaceOrder".len() + 32)
            + (13 + 8 + 32);
        assert_eq!(metadata_size(&req), expected);
    }

    #[test]
    fn the_transport_ceiling_leaves_room_above_the_limit() {
        assert_eq!(transport_ceiling(16 << 10), 256 << 10);
        assert_eq!(transport_ceiling(1 << 20), 4 << 20);
        assert_eq!(transport_ceiling(usize::MAX), u32::MAX);
    }
}

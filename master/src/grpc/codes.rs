//! The status codes tonic gives transport-level refusals, corrected to what the API
//! promises: a request that does not decode is the client's error (INVALID_ARGUMENT, not
//! INTERNAL), and one above the size limit is RESOURCE_EXHAUSTED (not OUT_OF_RANGE).
//!
//! tonic decides these codes inside its generated handlers, before our code sees the
//! request, so they are mended on the way out: a tower layer rewrites the `grpc-status` of
//! a trailers-only answer whose `grpc-message` is tonic's own for those two cases.

use http::HeaderValue;
use std::task::{Context, Poll};

/// The layer for `Server::builder().layer(...)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeFixLayer;

impl<S> tower::Layer<S> for CodeFixLayer {
    type Service = CodeFix<S>;

    fn layer(&self, inner: S) -> CodeFix<S> {
        CodeFix(inner)
    }
}

/// The service [`CodeFixLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct CodeFix<S>(S);

impl<S, Req, B> tower::Service<Req> for CodeFix<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(http::Response<B>) -> http::Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        use futures::TryFutureExt;
        self.0.call(req).map_ok(fix_code as fn(_) -> _)
    }
}

/// tonic's messages for the two cases, as they appear percent-encoded in `grpc-message`.
const DECODE_FAILED: &str = "failed%20to%20decode";
const TOO_LARGE: &str = "decoded%20message%20length%20too%20large";

fn fix_code<B>(mut r: http::Response<B>) -> http::Response<B> {
    let h = r.headers_mut();
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let code = match h.get("grpc-status").and_then(|v| v.to_str().ok()) {
        Some("13") if message.starts_with(DECODE_FAILED) => Some("3"),
        Some("11") if message.contains(TOO_LARGE) => Some("8"),
        _ => None,
    };
    if let Some(c) = code {
        h.insert("grpc-status", HeaderValue::from_static(c));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, message: &str) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", status)
            .header("grpc-message", message)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_tonics_own_decode_and_size_refusals_change_code() {
        let cases = [
            (
                "13",
                "failed%20to%20decode%20Protobuf%20message:%20invalid%20wire%20type",
                "3",
            ),
            (
                "11",
                "Error,%20decoded%20message%20length%20too%20large:%20found%2017825792",
                "8",
            ),
            ("13", "result%20conversion:%20bad", "13"),
            ("11", "page_size:%20too%20big", "11"),
            ("0", "", "0"),
        ];
        for (before, message, after) in cases {
            let r = fix_code(answer(before, message));
            assert_eq!(r.headers()["grpc-status"], after, "{message}");
        }
    }
}

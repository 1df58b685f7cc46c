//! A unary call's request message, read in full before the call is admitted.
//!
//! A place among the requests in flight is for work the instance does. A request whose body is
//! still on its way (a slow or starved client, a long network path) does none, but it would hold
//! a place until the body arrived: under load, most places ended up waiting on clients, and the
//! server's time for an admitted pop grew to hundreds of milliseconds while the CPU idled between
//! messages. So a unary call's message (at most `--max-request-bytes`, as tonic enforces
//! afterwards) is read first, and a place is taken once it is there. Streams from the client
//! (call events, imports, reflection) cannot be read ahead; they are admitted as they open, and
//! their bodies run on without a place.

use std::collections::HashSet;
use std::sync::LazyLock;

use http_body_util::{BodyExt as _, Full, Limited};
use tonic::Status;
use tonic::body::Body;

/// gRPC's framing before each message: a compression flag and a 4-byte length.
const FRAME_HEADER_BYTES: usize = 5;

/// The paths of this service's RPCs whose client sends exactly one message.
static UNARY_REQUESTS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    crate::proto::rpc_methods()
        .into_iter()
        .filter(|method| !method.client_streaming)
        .map(|method| method.path)
        .collect()
});

/// Whether the client of `path` sends one message (so it can be read ahead).
pub fn sends_one_message(path: &str) -> bool {
    UNARY_REQUESTS.contains(path)
}

/// Reads the whole body (one framed message, at most `max_message_bytes`) and hands it back as a
/// body tonic can decode. A larger body is OUT_OF_RANGE, as tonic would answer; a body the client
/// abandons is CANCELLED.
pub async fn read_ahead(body: Body, max_message_bytes: usize) -> Result<Body, Status> {
    let limit = max_message_bytes.saturating_add(FRAME_HEADER_BYTES);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Body::new(Full::new(collected.to_bytes()))),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Status::out_of_range(
            format!("the request is larger than {max_message_bytes} bytes"),
        )),
        Err(_) => Err(Status::cancelled("the request's message did not arrive")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_and_server_streaming_requests_are_read_ahead_client_streams_are_not() {
        assert!(sends_one_message("/switchboard.v1.ScreenPopService/Lookup"));
        assert!(sends_one_message("/switchboard.v1.AgentService/WatchAgent"));
        assert!(!sends_one_message(
            "/switchboard.v1.CallEventService/StreamCallEvents"
        ));
        assert!(!sends_one_message(
            "/switchboard.v1.ImportService/ImportCustomers"
        ));
        assert!(!sends_one_message(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }

    #[tokio::test]
    async fn a_message_comes_back_whole_and_an_oversized_one_is_out_of_range() {
        let framed = [0u8, 0, 0, 0, 3, 1, 2, 3];
        let body = read_ahead(
            Body::new(Full::new(bytes::Bytes::copy_from_slice(&framed))),
            3,
        )
        .await
        .expect("fits");
        let bytes = body.collect().await.expect("read").to_bytes();
        assert_eq!(&bytes[..], &framed);

        let too_big = read_ahead(
            Body::new(Full::new(bytes::Bytes::copy_from_slice(&framed))),
            2,
        )
        .await
        .expect_err("3 bytes > 2");
        assert_eq!(too_big.code(), tonic::Code::OutOfRange);
    }
}

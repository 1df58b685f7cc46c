//! Pops over HTTP/1.1 keep-alive connections, as dialplans and browsers send them:
//! - `http-cid`: `GET /v1/cid/{number}`, the caller's name as text;
//! - `http-pop`: `GET /v1/pop/{number}`, the routing hints as JSON;
//! - `grpc-web-pop`: `ScreenPopService.Lookup` as a binary gRPC-web POST.
//!
//! Numbers are drawn as pop-hot draws them (Zipf over the warmed sample). An HTTP/1.1 connection
//! carries one request at a time, so the pool holds `--http1-connections` of them and a request
//! waits for an idle one (that wait is part of its latency: it is what HTTP/1.1 costs).

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use rand::Rng as _;
use switchboard::proto::v1;
use tokio::sync::Semaphore;

use crate::engine::{Done, Job, Workload};
use crate::workloads::{Zipf, rng, server_us_of};

/// Keep-alive HTTP/1.1 connections to one server, each used by one request at a time.
pub struct Http1Pool {
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    permits: Semaphore,
    address: String,
    authorization: String,
}

impl Http1Pool {
    /// Opens `size` connections to `url` (loopback only), authenticating with `token`.
    pub async fn open(url: &str, token: Option<&str>, size: usize) -> anyhow::Result<Arc<Self>> {
        let uri: http::Uri = url.parse().context("server URL")?;
        let address = format!(
            "{}:{}",
            uri.host().context("a host")?,
            uri.port_u16().unwrap_or(80)
        );
        anyhow::ensure!(
            matches!(uri.host(), Some("127.0.0.1" | "localhost")),
            "loopback targets only"
        );
        let token = switchboard::client::token(token).context("a token (--token)")?;
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            idle.push(connect(&address).await?);
        }
        Ok(Arc::new(Self {
            permits: Semaphore::new(idle.len()),
            idle: Mutex::new(idle),
            address,
            authorization: format!("Bearer {token}"),
        }))
    }

    /// Sends `request` on an idle connection: the answer's status, headers and whole body.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> anyhow::Result<(http::response::Parts, Bytes)> {
        let _permit = self.permits.acquire().await?;
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut sender = match taken {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(&self.address).await?,
        };
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok((parts, body))
        }
        .await;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        result
    }
}

async fn connect(address: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http1Kind {
    Cid,
    Pop,
    GrpcWeb,
}

impl Http1Kind {
    pub fn of(scenario: &str) -> Option<Self> {
        match scenario {
            "http-cid" => Some(Http1Kind::Cid),
            "http-pop" => Some(Http1Kind::Pop),
            "grpc-web-pop" => Some(Http1Kind::GrpcWeb),
            _ => None,
        }
    }
}

pub struct Http1Pop {
    pub pool: Arc<Http1Pool>,
    pub numbers: Arc<Vec<String>>,
    pub zipf: Zipf,
    pub kind: Http1Kind,
}

impl Workload for Http1Pop {
    fn job(&self, index: u64) -> Job {
        let rank = self.zipf.rank(rng(index).random::<f64>());
        let number = self.numbers[rank].clone();
        let pool = Arc::clone(&self.pool);
        let kind = self.kind;
        Box::pin(async move {
            let request = request(kind, &number, &pool.authorization);
            let label = match kind {
                Http1Kind::Cid => "http cid",
                Http1Kind::Pop => "http pop",
                Http1Kind::GrpcWeb => "grpc-web pop",
            };
            let result = match pool.send(request).await {
                Ok((parts, body)) => {
                    let result = outcome(kind, &parts, &body);
                    return Done {
                        label: label.to_owned(),
                        result,
                        server_us: server_us_of(
                            parts.headers.get("server-timing").map(|v| v.as_bytes()),
                        ),
                    };
                }
                Err(_) => Err(tonic::Code::Unavailable),
            };
            Done {
                label: label.to_owned(),
                result,
                server_us: None,
            }
        })
    }
}

fn request(kind: Http1Kind, number: &str, authorization: &str) -> http::Request<Full<Bytes>> {
    let builder = http::Request::builder()
        .header("host", "switchboard")
        .header("authorization", authorization);
    let built = match kind {
        Http1Kind::Cid => builder
            .uri(format!("/v1/cid/{number}"))
            .body(Full::new(Bytes::new())),
        Http1Kind::Pop => builder
            .uri(format!("/v1/pop/{number}"))
            .body(Full::new(Bytes::new())),
        Http1Kind::GrpcWeb => {
            let message = v1::LookupRequest {
                caller_number: number.to_owned(),
                ..Default::default()
            }
            .encode_to_vec();
            let mut frame = BytesMut::with_capacity(5 + message.len());
            frame.put_u8(0);
            frame.put_u32(message.len() as u32);
            frame.put_slice(&message);
            builder
                .method("POST")
                .uri("/switchboard.v1.ScreenPopService/Lookup")
                .header("content-type", "application/grpc-web+proto")
                .header("x-grpc-web", "1")
                .body(Full::new(frame.freeze()))
        }
    };
    built.unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

/// Whether the answer was a pop: 200 with the body each kind promises (gRPC-web: a message and a
/// `grpc-status: 0` trailer).
fn outcome(kind: Http1Kind, parts: &http::response::Parts, body: &[u8]) -> Result<(), tonic::Code> {
    // A gRPC-web error without a message comes trailers-only, in the headers.
    if let Some(code) = parts
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|code| *code != 0)
    {
        return Err(tonic::Code::from(code));
    }
    let code = match parts.status.as_u16() {
        200 => tonic::Code::Ok,
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        404 => tonic::Code::NotFound,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    if code != tonic::Code::Ok {
        return Err(code);
    }
    match kind {
        Http1Kind::Cid | Http1Kind::Pop if !body.is_empty() => Ok(()),
        Http1Kind::GrpcWeb => grpc_web_status(body),
        _ => Err(tonic::Code::Unknown),
    }
}

/// The `grpc-status` of a gRPC-web body's trailer frame.
fn grpc_web_status(mut body: &[u8]) -> Result<(), tonic::Code> {
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(payload) = body.get(5..5 + len) else {
            break;
        };
        if body[0] & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(payload);
            let code = trailers
                .lines()
                .find_map(|line| line.trim().strip_prefix("grpc-status:"))
                .and_then(|code| code.trim().parse::<i32>().ok())
                .map_or(tonic::Code::Unknown, tonic::Code::from);
            return if code == tonic::Code::Ok {
                Ok(())
            } else {
                Err(code)
            };
        }
        body = &body[5 + len..];
    }
    Err(tonic::Code::Unknown)
}

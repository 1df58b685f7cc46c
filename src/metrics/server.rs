//! The metrics port: plain HTTP/1.1, `GET /metrics` in the Prometheus text format, 404 else.
//! It never touches PostgreSQL or Redis, so a scrape costs nothing and works during an outage.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn answer(registry: &Registry, request: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let response = hyper::Response::builder();
    if request.uri().path() != "/metrics" {
        return response
            .status(404)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
            .unwrap_or_default();
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => response
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_default(),
        Err(_) => response
            .status(500)
            .body(Full::new(Bytes::from_static(b"encoding failed\n")))
            .unwrap_or_default(),
    }
}

/// Serves `registry` on `listener` until `stop` turns true.
pub fn serve(
    listener: TcpListener,
    registry: Registry,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = answer(&registry, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "metrics connection ended with an error");
                }
            });
        }
    })
}

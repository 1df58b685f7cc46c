//! The web app (agent desktop and supervisor wallboard) served at `/` on the gRPC port.
//!
//! The assets are built from `web/` by `npm run build` into `web/dist/` (committed, and checked
//! current by `scripts/test.sh`) and embedded here at compile time, so the binary needs no web
//! server and no files beside it. The app talks to Switchboard only through the public API over
//! gRPC-web, on the same origin, so it needs no CORS.
//!
//! Served: `GET` or `HEAD` of `/` (and `/index.html`), `/app.js`, `/app.css` and
//! `/ui/config.json` (`{"devMode": bool}`: in development mode the app accepts a sign-in token
//! from the URL's fragment, which `scripts/dev.sh` prints). Every other request passes through
//! untouched to gRPC-web, the caller-ID GETs and gRPC. `--web-ui=false` turns all of it off.

use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tonic::body::Body;
use tower::{Layer, Service};

/// What the app may load: its own scripts and styles, and calls to its own origin. Chart.js sizes
/// its canvases through style attributes, hence `'unsafe-inline'` for styles only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/dist/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/dist/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/dist/app.css"),
    },
];

/// Whether the app is served, and what it is told about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebUi {
    pub enabled: bool,
    /// Development mode: the app accepts a token from the URL fragment.
    pub dev_mode: bool,
}

impl<S> Layer<S> for WebUi {
    type Service = WebUiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebUiService {
            inner,
            settings: *self,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebUiService<S> {
    inner: S,
    settings: WebUi,
}

impl WebUi {
    /// The answer to `request` when it asks for the app, or `None` to pass it on.
    fn answer<B>(&self, request: &Request<B>) -> Option<Response<Body>> {
        if !self.enabled || !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let path = match request.uri().path() {
            "/" => "/index.html",
            path => path,
        };
        let (content_type, body): (&str, Vec<u8>) = if path == "/ui/config.json" {
            (
                "application/json",
                format!(r#"{{"devMode":{}}}"#, self.dev_mode).into_bytes(),
            )
        } else {
            let asset = ASSETS.iter().find(|a| a.path == path)?;
            (asset.content_type, asset.body.to_vec())
        };
        let length = body.len();
        let body = if request.method() == Method::HEAD {
            Body::empty()
        } else {
            Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        // The assets change with the binary: revalidate instead of trusting a stale copy.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        Some(response)
    }
}

impl<S> Service<Request<Body>> for WebUiService<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self.settings.answer(&request) {
            Some(response) => Either::Right(Box::pin(async move { Ok(response) })),
            None => Either::Left(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    #[test]
    fn the_app_is_served_with_its_types_and_a_strict_policy() {
        let ui = WebUi {
            enabled: true,
            dev_mode: false,
        };
        let index = ui.answer(&get("/")).expect("index");
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            index.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii")
                .contains("script-src 'self'")
        );
        let script = ui.answer(&get("/app.js")).expect("app.js");
        assert_eq!(
            script.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(
            ui.answer(&get("/switchboard.v1.ScreenPopService/Lookup"))
                .is_none()
        );
        assert!(ui.answer(&get("/v1/cid/+14155550100")).is_none());
        let post = Request::builder()
            .method(Method::POST)
            .uri("/")
            .body(())
            .expect("post");
        assert!(ui.answer(&post).is_none());
    }

    #[test]
    fn turned_off_it_serves_nothing() {
        let ui = WebUi {
            enabled: false,
            dev_mode: true,
        };
        assert!(ui.answer(&get("/")).is_none());
        assert!(ui.answer(&get("/ui/config.json")).is_none());
    }

    #[test]
    fn every_embedded_asset_is_the_built_one() {
        // The bundle is committed: an empty or placeholder file would serve a blank page.
        for asset in ASSETS {
            assert!(asset.body.len() > 200, "{} is empty", asset.path);
        }
        let index = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        assert!(index.contains("/app.js") && index.contains("/app.css"));
    }
}

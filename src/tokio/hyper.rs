//! WebSocket upgrades from a hyper 1.x server, axum's included (feature
//! `hyper`).
//!
//! The HTTP server reads the request; sabai checks it as an opening
//! handshake (RFC 6455 §4.2.1), with the same rules, limits and hook as
//! [`accept_with`](crate::accept_with), and writes the answer as an
//! [`http::Response`](hyper::Response) for the server to send: the 101, or
//! the refusal (400, 405, 426 with `Sec-WebSocket-Version: 13`, 431, or the
//! hook's [`Reject`]). After the 101, [`Upgrading`] yields the connection
//! as a [`WebSocket`]. Any request body type works, and any response body
//! that converts from [`Bytes`], so both hyper with `Full<Bytes>` and axum
//! with `axum::body::Body` fit.
//!
//! ```no_run
//! use axum::{extract::Request, response::Response, routing::any, Router};
//! use sabai::handshake::Accept;
//!
//! async fn ws(request: Request) -> Response {
//!     let config = sabai::WebSocketConfig::default();
//!     match sabai::hyper::upgrade(request, &config, |_| Ok(Accept::new())) {
//!         Ok((response, upgrading)) => {
//!             // The WebSocket exists once the server has sent the 101.
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = upgrading.await else { return };
//!                 while let Ok(Some(message)) = ws.recv().await {
//!                     if ws.send(message).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!             response
//!         }
//!         Err(refusal) => refusal,
//!     }
//! }
//!
//! # async fn demo() -> std::io::Result<()> {
//! let app: Router = Router::new().route("/ws", any(ws));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await // axum::serve enables upgrades
//! # }
//! ```
//!
//! To decide with more than a hook allows (an async look-up, a place
//! reserved in a hub), split [`upgrade`] in two: [`parse`], which gives an
//! [`Upgrade`] whose [`request`](Upgrade::request) is sabai's checked
//! [`Request`], then [`Upgrade::accept`] or [`Upgrade::reject`].
//!
//! With plain hyper, serve the connection with upgrades enabled
//! (`http1::Builder::new().serve_connection(io, service).with_upgrades()`);
//! without them, [`Upgrading`] fails once the 101 is sent. Only HTTP/1.1
//! requests are accepted: WebSockets over HTTP/2 (RFC 8441) are not
//! supported, and such a request gets 400.
//!
//! What hyper has already done differs from a raw [`accept_with`] in two
//! small ways: header names are lowercase and grouped by name in
//! [`Request::headers`], and the size limit
//! ([`HandshakeLimits::max_head_bytes`](crate::handshake::HandshakeLimits))
//! is checked on the head as hyper parsed it, rendered back to HTTP/1.1
//! (request line and header fields), not on the bytes received. hyper's
//! own limits (its header count and buffer size) apply first.
//!
//! [`accept_with`]: crate::accept_with

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::hyper::header::{HeaderName, HeaderValue};
use ::hyper::upgrade::OnUpgrade;
use ::hyper::{Request as HttpRequest, Response, StatusCode, Version};
use bytes::Bytes;
use hyper_util::rt::TokioIo;

use super::config::WebSocketConfig;
use super::handshake::{negotiate, Agreed};
use super::{Error, WebSocket};
use crate::handshake::{check_head, Accept, HandshakeError, Refusal, Reject, Request};

/// The connection under a [`WebSocket`] made by this module: hyper's
/// upgraded connection as a tokio `AsyncRead + AsyncWrite`. Bytes the
/// client sent right after its request are read from it first.
pub type Upgraded = TokioIo<::hyper::upgrade::Upgraded>;

/// Answers a WebSocket upgrade request in one step: checks it, lets `hook`
/// accept or reject it (as in [`accept_with`](crate::accept_with)), and
/// negotiates permessage-deflate when
/// [`WebSocketConfig::protocol`]`.deflate` is set and the client offers it.
///
/// `Ok`: the 101, to return to the server, and the [`Upgrading`] future to
/// spawn, which yields the [`WebSocket`] once the 101 is sent. `Err`: the
/// response refusing the request (400, 405, 426 with
/// `Sec-WebSocket-Version: 13`, 431, the hook's [`Reject`], or 500 when the
/// hook's [`Accept`] cannot be sent), to return as it is.
pub fn upgrade<B, R, F>(
    request: HttpRequest<B>,
    config: &WebSocketConfig,
    hook: F,
) -> Result<(Response<R>, Upgrading), Response<R>>
where
    R: From<Bytes>,
    F: FnOnce(&Request) -> Result<Accept, Reject>,
{
    let upgrade = parse(request, config)?;
    match hook(upgrade.request()) {
        Ok(accept) => upgrade.accept(accept),
        Err(reject) => Err(upgrade.reject(reject)),
    }
}

/// Checks a WebSocket upgrade request (RFC 6455 §4.2.1) and keeps it for
/// the answer: [`Upgrade::accept`] or [`Upgrade::reject`]. `Err`: the
/// response refusing it (400, 405, 426 with `Sec-WebSocket-Version: 13`,
/// 431), to return as it is.
///
/// The checks and their order are [`ServerHandshake::parse`]'s: the limits
/// of `config.handshake` (431), GET (405), HTTP/1.1 (400), then the
/// request's fields (400, or 426 for the version).
///
/// [`ServerHandshake::parse`]: crate::handshake::ServerHandshake::parse
pub fn parse<B, R>(request: HttpRequest<B>, config: &WebSocketConfig) -> Result<Upgrade, Response<R>>
where
    R: From<Bytes>,
{
    match check(&request, config) {
        Ok(checked) => Ok(Upgrade {
            request: checked,
            on_upgrade: ::hyper::upgrade::on(request),
            config: config.clone(),
        }),
        Err(error) => Err(refusal_response(error.refusal())),
    }
}

/// sabai's checks on the request hyper parsed.
fn check<B>(request: &HttpRequest<B>, config: &WebSocketConfig) -> Result<Request, HandshakeError> {
    let limits = &config.handshake;
    let method = request.method().as_str();
    let target = request.uri().to_string();
    // RFC 6455 §10.4: bound the head, as the raw handshake does; its size is
    // that of the request line and the fields rendered back to HTTP/1.1.
    let fields = request.headers();
    if fields.len() > limits.max_headers {
        return Err(HandshakeError::TooManyHeaders);
    }
    let line = method.len() + 1 + target.len() + " HTTP/1.1\r\n".len();
    let size = fields.iter().fold(line + 2, |n, (name, value)| n + name.as_str().len() + value.len() + 4);
    if size > limits.max_head_bytes {
        return Err(HandshakeError::HeadTooLarge);
    }
    let headers = fields.iter().map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()));
    check_head(method, request.version() == Version::HTTP_11, target, headers.collect())
}

/// A WebSocket upgrade request that passed sabai's checks, waiting for the
/// application's answer: [`accept`](Self::accept) or
/// [`reject`](Self::reject). Made by [`parse`].
///
/// ```no_run
/// use axum::{extract::Request, response::Response};
/// use sabai::handshake::{Accept, Reject};
///
/// async fn ws(request: Request) -> Response {
///     let config = sabai::WebSocketConfig::default();
///     let upgrade = match sabai::hyper::parse(request, &config) {
///         Ok(upgrade) => upgrade,
///         Err(refusal) => return refusal,
///     };
///     let token = upgrade.request().query().and_then(|q| q.strip_prefix("token="));
///     if !is_valid(token).await {
///         return upgrade.reject(Reject::unauthorized());
///     }
///     match upgrade.accept(Accept::new()) {
///         Ok((response, upgrading)) => {
///             tokio::spawn(async move {
///                 if let Ok(ws) = upgrading.await {
///                     // serve `ws`
///                 }
///             });
///             response
///         }
///         Err(refusal) => refusal,
///     }
/// }
/// # async fn is_valid(_: Option<&str>) -> bool { true }
/// ```
#[derive(Debug)]
pub struct Upgrade {
    request: Request,
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
}

impl Upgrade {
    /// The checked request: path, query, Origin, headers, subprotocols and
    /// extensions offered.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Accepts: the 101 and the [`Upgrading`] future to spawn once the
    /// response is returned to the server. permessage-deflate is agreed to
    /// as in [`accept_with`](crate::accept_with): when the configuration
    /// has it, the client offers it, and `accept` did not already choose
    /// parameters. `Err`: 500, when `accept` names a subprotocol the
    /// client did not offer or a header that would break the response.
    pub fn accept<R: From<Bytes>>(self, accept: Accept) -> Result<(Response<R>, Upgrading), Response<R>> {
        let accept = negotiate(&self.request, accept, &self.config);
        let response = match self.request.accept_headers(&accept) {
            Ok(headers) => response(StatusCode::SWITCHING_PROTOCOLS, headers, Bytes::new()),
            Err(error) => return Err(refusal_response(error.refusal())),
        };
        let upgrading = Upgrading {
            on_upgrade: self.on_upgrade,
            ready: Some(Ready { agreed: Agreed::by_server(&accept), config: self.config }),
        };
        Ok((response, upgrading))
    }

    /// Refuses with the rejection's status, headers and body. The
    /// connection is closed after it (`Connection: close`), as
    /// [`accept_with`](crate::accept_with) does.
    pub fn reject<R: From<Bytes>>(self, reject: Reject) -> Response<R> {
        refusal_response(reject.refusal())
    }
}

/// The response refusing a handshake: its status, the fields every
/// refusal has, its own, and its body.
fn refusal_response<R: From<Bytes>>(refusal: Refusal<'_>) -> Response<R> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let fields = Refusal::COMMON.into_iter().chain(refusal.headers);
    let body = Bytes::from(refusal.body.into_owned());
    response(status, fields.map(|(name, value)| (name, Cow::Borrowed(value))), body)
}

/// An http Response with these fields; hyper adds Content-Length. The
/// fields were checked by sabai (names are tokens, values have no control
/// bytes), so none is refused here.
fn response<'a, R: From<Bytes>>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'a str, Cow<'a, str>)>,
    body: Bytes,
) -> Response<R> {
    let mut response = Response::new(R::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The WebSocket to come once the server has sent the 101: a future
/// yielding `Result<WebSocket<Upgraded>, Error>`. Spawn it (or await it in
/// a spawned task) after returning the response to the server; awaiting
/// it before returning the response would wait forever.
///
/// It fails with [`Error::Io`] when the connection ends before the 101 is
/// sent, or when the server connection does not allow upgrades. It needs
/// no time limit of its own: it resolves as soon as hyper has written the
/// 101, or given up.
///
/// Cancel safety: dropping it drops the upgraded connection, which closes
/// it without a closing handshake.
#[derive(Debug)]
#[must_use = "the WebSocket exists only once this future is awaited"]
pub struct Upgrading {
    on_upgrade: OnUpgrade,
    /// Until the future has completed.
    ready: Option<Ready>,
}

#[derive(Debug)]
struct Ready {
    agreed: Agreed,
    config: WebSocketConfig,
}

impl Future for Upgrading {
    type Output = Result<WebSocket<Upgraded>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let completed = || Error::Io(io::Error::other("Upgrading polled after it completed"));
        if this.ready.is_none() {
            return Poll::Ready(Err(completed()));
        }
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx));
        let Ready { agreed, config } = this.ready.take().ok_or_else(completed)?;
        let upgraded = upgraded.map_err(|e| Error::Io(io::Error::other(e)))?;
        // hyper keeps the bytes that followed the request: they are read
        // from the upgraded connection first.
        Poll::Ready(Ok(agreed.open(TokioIo::new(upgraded), None, &config, &[])))
    }
}

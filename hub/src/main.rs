//! The hub server: sabai's room hub behind a small hyper HTTP server, with a
//! live chat and an IoT dashboard.
//!
//!     cargo run --release -p sabai-hub      (or: cargo install --path hub; sabai-hub)
//!
//! It listens on 127.0.0.1:8090 and prints the URL to open. `--help` lists
//! the flags. WebSockets are served on /ws (the JSON room protocol in
//! protocol.rs); HTTP endpoints in http.rs, where /ws is handed to sabai
//! with `sabai::hyper`. Ctrl-C (or SIGTERM) shuts down gracefully: close
//! 1001 to every connection, then exit.

mod admin;
mod alerts;
mod auth;
mod devices;
mod http;
mod limits;
mod mqtt;
mod options;
mod protocol;
mod simulator;
mod sse;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth::{Identity, Jwt};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use limits::{IpLimits, Open};
use sabai::hub::{codes, ConnId, Hub, HubEvent};
use sabai::CloseCode;
use sabai_redis::{RedisConfig, RedisEngine};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use options::Options;

/// What every request handler shares.
pub struct App {
    pub hub: Hub,
    pub options: Options,
    pub started: Instant,
    /// SSE sessions by key (see sse.rs).
    pub sessions: Mutex<HashMap<String, sse::Session>>,
    /// Set on SIGTERM: /readyz answers 503.
    pub draining: AtomicBool,
    /// Places for plain HTTP requests in progress (`--max-requests`).
    pub requests: Arc<Semaphore>,
    /// Per-address limits on connections and handshakes.
    pub ip_limits: Arc<IpLimits>,
    /// The Redis engine, with `--redis` (for /metrics and a clean exit).
    pub redis: Option<Arc<RedisEngine>>,
    /// With `--tls-cert`: every connection is TLS first.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Tokens are checked with this, when JWT is configured.
    pub jwt: Option<Jwt>,
    /// What each connection's token said (JWT only).
    identities: Mutex<HashMap<ConnId, Identity>>,
    /// Admin API requests refused for a missing or wrong key.
    pub admin_refused: AtomicU64,
    /// The devices this node knows (`GET /devices`).
    pub devices: devices::Devices,
    /// The MQTT bridge, once started (`--mqtt`).
    pub mqtt: std::sync::OnceLock<Arc<mqtt::Bridge>>,
}

impl App {
    /// One node on the memory engine.
    pub fn new(options: Options) -> Result<Arc<App>, String> {
        App::with_redis(options, None)
    }

    /// The hub with the demo's room names, the protocol's rendering of
    /// publications, and its presence events; on Redis if given. `Err`:
    /// settings that cannot work (a JWT key that does not load).
    pub fn with_redis(mut options: Options, redis: Option<Arc<RedisEngine>>) -> Result<Arc<App>, String> {
        let jwt = Jwt::new(&options.jwt)?;
        let devices = devices::Devices::load(options.iot.device_registry.as_deref())?;
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        if jwt.is_none() {
            // Without tokens a user name is a claim: a per-user limit on
            // claims would let anyone lock a name out.
            options.hub.max_connections_per_user = None;
        }
        let config = options.hub.clone().room_validator(protocol::check_room).render(protocol::render);
        let hub = match &redis {
            Some(engine) => Hub::with_engine(config, engine.clone()),
            None => Hub::new(config),
        };
        let app = Arc::new_cyclic(|me: &std::sync::Weak<App>| {
            let (node, me) = (options.node.clone(), me.clone());
            hub.on_event(move |hub, event| {
                if let (HubEvent::Disconnected { conn, .. }, Some(app)) = (event, me.upgrade()) {
                    app.forget(*conn);
                }
                protocol::on_event(&node, hub, event)
            });
            App {
                hub,
                requests: Arc::new(Semaphore::new(options.max_requests)),
                ip_limits: IpLimits::new(options.ip_limits.clone()),
                options,
                started: Instant::now(),
                sessions: Mutex::default(),
                draining: AtomicBool::new(false),
                redis,
                jwt,
                tls,
                identities: Mutex::default(),
                admin_refused: AtomicU64::new(0),
                devices,
                mqtt: std::sync::OnceLock::new(),
            }
        });
        tokio::spawn(expire_tokens(Arc::downgrade(&app)));
        Ok(app)
    }

    /// Remembers what a connection's token said.
    pub fn identify(&self, conn: ConnId, identity: Option<Identity>) {
        if let Some(identity) = identity {
            self.identities.lock().unwrap_or_else(|p| p.into_inner()).insert(conn, identity);
        }
    }

    /// Forgets a connection's token (it is gone).
    pub fn forget(&self, conn: ConnId) {
        self.identities.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn);
    }

    /// What a connection's token says, if it had one.
    pub fn identity(&self, conn: ConnId) -> Option<Identity> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner()).get(&conn).cloned()
    }
}

/// Closes (4001) the connections whose token expired and was not
/// refreshed, once a second, until the app is gone.
async fn expire_tokens(app: std::sync::Weak<App>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let Some(app) = app.upgrade() else { return };
        let now = std::time::SystemTime::now();
        let expired: Vec<ConnId> = {
            let identities = app.identities.lock().unwrap_or_else(|p| p.into_inner());
            identities
                .iter()
                .filter(|(_, id)| id.expires.is_some_and(|at| at <= now))
                .map(|(c, _)| *c)
                .collect()
        };
        for conn in expired {
            tracing::info!(conn = conn.0, "token expired");
            app.hub.close(conn, codes::AUTHENTICATION_FAILED, "Token expired");
            app.forget(conn);
        }
    }
}

/// Serves HTTP (and /ws) on every connection, until dropped.
pub async fn accept_loop(listener: &TcpListener, app: Arc<App>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors, for example: back off a little.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Past its limit an address gets its connection closed at once:
        // no task, no buffers.
        let open = match app.ip_limits.open(peer.ip()) {
            Ok(open) => Arc::new(open),
            Err(why) => {
                tracing::debug!(peer = %peer.ip(), reason = %why, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // A client gets this long to finish TLS, then as long for a
        // request head (slow-loris bound).
        let header_timeout = app.options.request_timeout;
        tokio::spawn(async move {
            match app.tls.clone() {
                None => serve_http(app, stream, peer, open, header_timeout).await,
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_http(app, stream, peer, open, header_timeout).await,
                    // Plain HTTP on the TLS port, a ClientHello that never
                    // ends: dropped, counted in the log only.
                    Ok(Err(why)) => tracing::debug!(peer = %peer.ip(), reason = %why, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %peer.ip(), "TLS handshake timed out"),
                },
            }
        });
    }
}

/// HTTP/1.1 (and its upgrades) on one connection, until it ends.
async fn serve_http<S>(app: Arc<App>, stream: S, peer: SocketAddr, open: Arc<Open>, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    {
        {
            // A handler that gives up on a client (an SSE reader that
            // stopped reading) drops its whole connection with this.
            let drop_connection = Arc::new(Notify::new());
            let handle = DropConnection(drop_connection.clone());
            let client = Client { peer: peer.ip(), open };
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(handle.clone());
                req.extensions_mut().insert(client.clone());
                http::route(app.clone(), req)
            });
            let http = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = http => {}
                () = drop_connection.notified() => {}
            }
        }
    }
}

/// Where a request came from: the TCP peer, and its place in the
/// per-address count, which a WebSocket or SSE stream keeps while it lives.
#[derive(Clone, Debug)]
pub struct Client {
    pub peer: IpAddr,
    pub open: Arc<Open>,
}

/// Ends the HTTP connection a request came on (see `accept_loop`).
#[derive(Clone)]
pub struct DropConnection(Arc<Notify>);

impl DropConnection {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// How long shutdown waits for connections to answer their Close.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    let mut options = match Options::parse(std::env::args_os()) {
        Ok(options) => options,
        // --help and --version print and exit 0; a bad flag exits 2.
        Err(error) => error.exit(),
    };
    logs(options.log_json);
    if let Some((user, rooms, valid_for)) = &options.mint {
        let secret = options.jwt.secret.as_deref().unwrap_or_default();
        match auth::mint(secret, user, rooms, *valid_for) {
            Ok(token) => return println!("{token}"),
            Err(why) => {
                eprintln!("sabai-hub: --mint-token: {why}");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(options.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("sabai-hub: cannot listen on {}: {e}", options.addr);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(options.addr);
    // The server's own pages, on every address it listens on, may open a
    // socket; so may the origins named. Not "Origin equals Host": a DNS
    // rebinding page would pass that.
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("sabai-hub: cannot install the signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let secure = options.tls.is_some();
    let mut origins = own_origins(addr, secure);
    origins.append(&mut options.origins);
    options.origins = origins;
    let redis = match &options.redis {
        None => None,
        Some(url) => {
            let mut config = RedisConfig::new(url.clone())
                .node_id(options.node.clone())
                .wait_for_redis(options.redis_wait);
            if let Some(ca) = &options.redis_ca {
                config = config.ca_file(ca.clone());
            }
            if options.redis_wait {
                println!("waiting for Redis at {}", config.redacted_url());
            }
            match RedisEngine::connect(config).await {
                Ok(engine) => Some(Arc::new(engine)),
                Err(e) => {
                    eprintln!(
                        "sabai-hub: {e}\n(start Redis, fix --redis, or add --redis-wait to wait for it)"
                    );
                    std::process::exit(1);
                }
            }
        }
    };
    let engine = redis.as_ref().map_or("memory".to_owned(), |_| "redis".to_owned());
    let app = match App::with_redis(options, redis) {
        Ok(app) => app,
        Err(why) => {
            eprintln!("sabai-hub: {why}");
            std::process::exit(2);
        }
    };
    let hub = app.hub.clone();
    match app.options.iot.mqtt.clone() {
        // Without a broker, the simulator publishes into the hub (the demo).
        None if app.options.simulator => {
            tokio::spawn(simulator::run(app.clone()));
        }
        None => {}
        Some(settings) => {
            let alerts = alerts::Alerts::new(app.options.iot.alert_rules.clone(), &app.options.node);
            if settings.simulate {
                tokio::spawn(simulator::run_mqtt(settings.clone()));
            }
            let bridge = mqtt::start(&app, settings, alerts);
            let _ = app.mqtt.set(bridge);
        }
    }
    let (http, ws) = if secure { ("https", "wss") } else { ("http", "ws") };
    println!("hub server {} ({engine} engine) listening on {http}://{addr}/", app.options.node);
    // A wildcard address is no place to open: show the loopback one.
    let open = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], addr.port())),
        _ => addr,
    };
    println!("open {http}://{open}/chat and {http}://{open}/dashboard (WebSocket: {ws}://{open}/ws)");
    match app.options.any_origin {
        true => println!("accepting pages from any Origin (--any-origin)"),
        false => println!("accepting pages from: {}", app.options.origins.join(" ")),
    }
    let redis_watch = tokio::spawn(watch_engine(hub.clone()));
    let accepting = accept_loop(&listener, app.clone());
    tokio::pin!(accepting);
    let stop = tokio::select! {
        () = &mut accepting => return,
        stop = signals.recv() => stop,
    };
    // SIGTERM drains: clients are told to reconnect elsewhere (1012) and
    // recover there, and /readyz says 503 meanwhile. Ctrl-C shuts down (1001).
    let (code, reason, what) = match stop {
        Stop::Terminate => (CloseCode(1012), "Service restart", "draining"),
        Stop::Interrupt => (CloseCode::GOING_AWAY, "Server shutting down", "shutting down"),
    };
    app.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    println!("{what}: closing {} connections with {}", hub.connection_count(), code.0);
    let closing = hub.shutdown_with(code, reason, SHUTDOWN_WAIT);
    // HTTP (and /readyz) keeps answering while the connections close.
    let all_closed = tokio::select! {
        all_closed = closing => all_closed,
        () = &mut accepting => false,
    };
    if let Some(redis) = &app.redis {
        redis_watch.abort();
        // Other nodes see this one's presence go at once, not after its TTL.
        redis.shutdown().await;
    }
    println!("shut down{}", if all_closed { "" } else { " (some connections did not answer in time)" });
}

/// `http://IP:PORT` for each address a listener on `addr` answers on (all
/// of this machine's when it is bound to 0.0.0.0 or ::), and `localhost`
/// for a loopback one.
fn own_origins(addr: SocketAddr, secure: bool) -> Vec<String> {
    let port = addr.port();
    let scheme = if secure { "https" } else { "http" };
    let ips: Vec<IpAddr> = if addr.ip().is_unspecified() {
        let all = if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip());
        all.filter(|ip| addr.is_ipv6() || ip.is_ipv4()).collect()
    } else {
        vec![addr.ip()]
    };
    let mut origins = Vec::new();
    if addr.ip().is_unspecified() {
        // Chromium opens http://0.0.0.0:PORT as this machine.
        origins.push(format!("{scheme}://{addr}"));
    }
    if ips.iter().any(IpAddr::is_loopback) {
        origins.push(format!("{scheme}://localhost:{port}"));
    }
    for ip in ips {
        origins.push(match ip {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
        });
    }
    origins.sort();
    origins.dedup();
    origins
}

/// Logs to stderr, one line per event: text, or JSON with `--log-json`;
/// `RUST_LOG` sets the level (default `info`).
fn logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Logs the engine losing and finding its broker again.
async fn watch_engine(hub: Hub) {
    let mut ready = true;
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let now = hub.engine().is_ready();
        if now != ready {
            if now {
                tracing::info!("engine reaches its broker again");
            } else {
                tracing::error!(
                    "engine cannot reach its broker: publications go to this node's members only"
                );
            }
            ready = now;
        }
    }
}

/// The signal that ends the server.
enum Stop {
    Interrupt,
    Terminate,
}

/// The handlers of the signals that end the server, installed before it
/// says it listens (a signal that came before them would kill it outright).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Stop::Interrupt,
                _ = self.terminate.recv() => Stop::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Interrupt
        }
    }
}

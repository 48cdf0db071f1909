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
mod http;
mod options;
mod protocol;
mod simulator;
mod sse;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sabai::hub::Hub;
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
    /// The Redis engine, with `--redis` (for /metrics and a clean exit).
    pub redis: Option<Arc<RedisEngine>>,
    /// Admin API requests refused for a missing or wrong key.
    pub admin_refused: AtomicU64,
}

impl App {
    /// One node on the memory engine.
    pub fn new(options: Options) -> Arc<App> {
        App::with_redis(options, None)
    }

    /// The hub with the demo's room names, the protocol's rendering of
    /// publications, and its presence events; on Redis if given.
    pub fn with_redis(options: Options, redis: Option<Arc<RedisEngine>>) -> Arc<App> {
        let config = options.hub.clone().room_validator(protocol::check_room).render(protocol::render);
        let hub = match &redis {
            Some(engine) => Hub::with_engine(config, engine.clone()),
            None => Hub::new(config),
        };
        let node = options.node.clone();
        hub.on_event(move |hub, event| protocol::on_event(&node, hub, event));
        Arc::new(App {
            hub,
            requests: Arc::new(Semaphore::new(options.max_requests)),
            options,
            started: Instant::now(),
            sessions: Mutex::default(),
            draining: AtomicBool::new(false),
            redis,
            admin_refused: AtomicU64::new(0),
        })
    }
}

/// Serves HTTP (and /ws) on every connection, until dropped.
pub async fn accept_loop(listener: &TcpListener, app: Arc<App>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, for example: back off a little.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // A client gets this long to send a request head (slow-loris bound).
        let header_timeout = app.options.request_timeout;
        tokio::spawn(async move {
            // A handler that gives up on a client (an SSE reader that
            // stopped reading) drops its whole connection with this.
            let drop_connection = Arc::new(Notify::new());
            let handle = DropConnection(drop_connection.clone());
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(handle.clone());
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
        });
    }
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
    let mut origins = own_origins(addr);
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
    let app = App::with_redis(options, redis);
    let hub = app.hub.clone();
    if app.options.simulator {
        tokio::spawn(simulator::run(hub.clone()));
    }
    println!("hub server {} ({engine} engine) listening on http://{addr}/", app.options.node);
    // A wildcard address is no place to open: show the loopback one.
    let open = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], addr.port())),
        _ => addr,
    };
    println!("open http://{open}/chat and http://{open}/dashboard (WebSocket: ws://{open}/ws)");
    match app.options.any_origin {
        true => println!("accepting pages from any Origin (--any-origin)"),
        false => println!("accepting pages from: {}", app.options.origins.join(" ")),
    }
    let redis_watch = tokio::spawn(watch_engine(hub.clone()));
    let accepting = accept_loop(&listener, app.clone());
    tokio::pin!(accepting);
    let stop = tokio::select! {
        () = &mut accepting => return,
        stop = stop_signal() => stop,
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
fn own_origins(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let ips: Vec<IpAddr> = if addr.ip().is_unspecified() {
        let all = if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip());
        all.filter(|ip| addr.is_ipv6() || ip.is_ipv4()).collect()
    } else {
        vec![addr.ip()]
    };
    let mut origins = Vec::new();
    if addr.ip().is_unspecified() {
        // Chromium opens http://0.0.0.0:PORT as this machine.
        origins.push(format!("http://{addr}"));
    }
    if ips.iter().any(IpAddr::is_loopback) {
        origins.push(format!("http://localhost:{port}"));
    }
    for ip in ips {
        origins.push(match ip {
            IpAddr::V4(ip) => format!("http://{ip}:{port}"),
            IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
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
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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

async fn stop_signal() -> Stop {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = interrupt.await;
                return Stop::Interrupt;
            }
        };
        tokio::select! {
            _ = interrupt => Stop::Interrupt,
            _ = term.recv() => Stop::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        Stop::Interrupt
    }
}

//! `sabai serve [ADDR]`: an echo server, or with `--broadcast` every
//! message goes to every connection; ws, or wss with a certificate.

use std::sync::{Arc, Mutex};

use sabai::handshake::Accept;
use sabai::{accept_with, DeflateConfig, WebSocketConfig};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::adapter::{Event, Message};
use crate::trace::{Traced, Tracer};
use crate::{explain, tls, Io};

pub struct Options {
    pub addr: String,
    pub broadcast: bool,
    pub trace: bool,
    pub once: bool,
    pub deflate: bool,
    pub tls: Option<(String, String)>,
}

pub async fn run(opts: Options) -> Result<(), String> {
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener =
        TcpListener::bind(&opts.addr).await.map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if acceptor.is_some() { "wss" } else { "ws" };
    let mode = if opts.broadcast { "broadcast" } else { "echo" };
    eprintln!("listening on {scheme}://{local}/ ({mode})");
    let mut config = WebSocketConfig::default();
    if opts.deflate {
        config.protocol.deflate = Some(DeflateConfig::default());
    }
    let config = Arc::new(config);
    let (hub, _) = broadcast::channel::<Message>(256);
    let out: Arc<Mutex<dyn std::io::Write + Send>> = Arc::new(Mutex::new(std::io::stderr()));
    let mut id = 0u64;
    loop {
        let (tcp, peer) = listener.accept().await.map_err(|e| format!("accept failed: {e}"))?;
        id += 1;
        let _ = tcp.set_nodelay(true);
        let label = format!("#{id} ");
        eprintln!("{label}connection from {peer}");
        let tracer = opts.trace.then(|| Tracer::new(label.clone(), out.clone()));
        let (config, acceptor, hub, broadcast) =
            (config.clone(), acceptor.clone(), hub.clone(), opts.broadcast);
        let task = tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => Box::new(tls),
                    Err(e) => return eprintln!("{label}TLS failed: {e}"),
                },
                None => Box::new(tcp),
            };
            let result = serve_one(Traced::new(io, tracer), &config, hub, broadcast).await;
            match result {
                Ok(line) => eprintln!("{label}{line}"),
                Err(e) => eprintln!("{label}failed: {e}"),
            }
        });
        if opts.once {
            let _ = task.await;
            return Ok(());
        }
    }
}

/// One connection until it closes: how it ended, in words.
async fn serve_one(
    io: Traced<Box<dyn Io>>,
    config: &WebSocketConfig,
    hub: broadcast::Sender<Message>,
    broadcast: bool,
) -> Result<String, sabai::Error> {
    let mut ws = accept_with(io, config, |_| Ok(Accept::new())).await?;
    let mut others = hub.subscribe();
    loop {
        tokio::select! {
            event = ws.recv_event() => match event? {
                Some(Event::Message(message)) if broadcast => {
                    // Every connection gets it, this one too.
                    let _ = hub.send(message);
                }
                Some(Event::Message(message)) => ws.send(message).await?,
                Some(_) => {}
                None => break,
            },
            message = others.recv(), if broadcast => match message {
                Ok(message) => ws.send(message).await?,
                // Too slow to keep up: the missed messages are skipped.
                Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("skipped {n} messages (too slow)"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    Ok(match ws.close_frame() {
        Some(frame) => {
            format!("closed: {} ({}) {:?}", frame.code.0, explain::close_name(frame.code.0), frame.reason)
        }
        None => "closed: no code (1005)".into(),
    })
}

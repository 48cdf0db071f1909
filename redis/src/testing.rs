//! A real `redis-server` for tests (feature `testing`): each
//! [`RedisServer`] is its own process on a free loopback port, with
//! persistence off, killed when dropped. Tests never share one by accident.
//!
//! ```no_run
//! use sabai_redis::testing::RedisServer;
//!
//! let mut redis = RedisServer::start();
//! let url = redis.url(); // redis://127.0.0.1:<port>/
//! redis.restart(); // same port, every key gone
//! assert_eq!(redis.command_calls("xrange"), 0);
//! # let _ = url;
//! ```
//!
//! If `redis-server` cannot be run (not installed, and no
//! `SABAI_REDIS_SERVER` naming it), [`RedisServer::start`] panics with a
//! message saying so: a test that needs Redis fails, it is never skipped.
//! Every wait is bounded (10 s for a start).
//!
//! The calls block the thread for as long as they take (a start is some
//! tens of milliseconds); call them from a test's body, not from a task
//! that must keep running meanwhile.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::Value;

/// How long a start may take before the harness gives up.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`RedisServer`] is started.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServerOptions {
    /// `--requirepass`.
    pub password: Option<String>,
    /// Serve TLS only (`--port 0 --tls-port`), with these PEM files.
    pub tls: Option<TlsFiles>,
    /// Listen on this port rather than a free one (for a test that
    /// started something waiting for it).
    pub port: Option<u16>,
}

/// A server certificate, its key, and the CA that signed it, in PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate (valid for 127.0.0.1).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The certificate authority clients trust.
    pub ca_pem: String,
}

impl ServerOptions {
    /// A password clients must give.
    pub fn password(mut self, password: impl Into<String>) -> ServerOptions {
        self.password = Some(password.into());
        self
    }

    /// TLS only, with these certificates.
    pub fn tls(mut self, files: TlsFiles) -> ServerOptions {
        self.tls = Some(files);
        self
    }

    /// This port.
    pub fn port(mut self, port: u16) -> ServerOptions {
        self.port = Some(port);
        self
    }
}

/// A `redis-server` process of this test (see the module docs).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: ServerOptions,
}

fn binary() -> String {
    std::env::var("SABAI_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
    listener.local_addr().expect("a bound listener has an address").port()
}

impl RedisServer {
    /// Starts a plain server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerOptions::default())
    }

    /// Starts a server with a password or TLS.
    pub fn start_with(options: ServerOptions) -> RedisServer {
        let bin = binary();
        if let Err(error) = Command::new(&bin).arg("--version").output() {
            panic!(
                "cannot run {bin:?} ({error}): these tests need a real Redis. Install it (Debian: \
                 `apt-get install redis-server`) or set SABAI_REDIS_SERVER to its path."
            );
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sabai-redis-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cannot make a temporary directory");
        if let Some(tls) = &options.tls {
            for (name, pem) in
                [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem), ("ca.crt", &tls.ca_pem)]
            {
                std::fs::write(dir.join(name), pem).expect("cannot write a TLS file");
            }
        }
        let mut server = RedisServer { child: None, port: 0, dir, options };
        if let Some(port) = server.options.port {
            server.port = port;
            if let Err(log) = server.spawn() {
                panic!("redis-server did not start on port {port}:\n{log}");
            }
            return server;
        }
        // Another process may take the port between our check and Redis's
        // bind: try a few.
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// Starts the process on `self.port` and waits until it answers PING.
    /// `Err`: the end of its log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new(binary());
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]);
        command.arg("--dir").arg(&self.dir).arg("--logfile").arg(&log);
        match &self.options.tls {
            Some(_) => {
                command.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ]);
                command.arg("--tls-cert-file").arg(self.dir.join("server.crt"));
                command.arg("--tls-key-file").arg(self.dir.join("server.key"));
                command.arg("--tls-ca-cert-file").arg(self.dir.join("ca.crt"));
            }
            None => {
                command.args(["--port", &self.port.to_string()]);
            }
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(format!(
                    "exited ({status}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            if self.try_query(&["PING"], Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("no answer to PING within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:<port>/`, `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        let auth = self.options.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}/", self.port)
    }

    /// The CA file clients trust (TLS only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options.tls.as_ref().map(|_| self.dir.join("ca.crt"))
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (SIGKILL: nothing is saved). The port stays
    /// reserved for [`restart`](Self::restart) only by convention.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL works on a paused process too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing
    /// answers, as with a Redis that hangs or a network that drops packets.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
    }

    /// Stops it (if running) and starts it again on the same port, empty:
    /// what a Redis without persistence looks like after a restart.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!("redis-server did not start again on port {}:\n{log}", self.port);
        }
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.options.tls {
            Some(tls) => {
                crate::pin_crypto_provider();
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(tls.ca_pem.clone().into_bytes()),
                };
                redis::Client::build_with_tls(self.url(), certificates)
            }
            None => redis::Client::open(self.url()),
        }
    }

    fn try_query(&self, args: &[&str], wait: Duration) -> redis::RedisResult<Value> {
        let mut connection = self.client()?.get_connection_with_timeout(wait)?;
        connection.set_read_timeout(Some(wait))?;
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query(&mut connection)
    }

    /// Runs one command (with the server's password); panics if it fails.
    pub fn query(&self, args: &[&str]) -> Value {
        self.try_query(args, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
    }

    /// How many times Redis ran `command` (in scripts too) since it started
    /// or since [`reset_stats`](Self::reset_stats), from INFO commandstats.
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = match self.query(&["INFO", "commandstats"]) {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            other => panic!("INFO answered {other:?}"),
        };
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |rest| rest.split(',').next().and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    /// Zeroes the counters of [`command_calls`](Self::command_calls).
    pub fn reset_stats(&self) {
        self.query(&["CONFIG", "RESETSTAT"]);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_redis_server_fails_the_test_saying_so() {
        // The only test of this binary that starts a server: setting the
        // variable cannot disturb another one.
        std::env::set_var("SABAI_REDIS_SERVER", "/nonexistent/redis-server");
        let outcome = std::panic::catch_unwind(RedisServer::start);
        std::env::remove_var("SABAI_REDIS_SERVER");
        let panic = outcome.expect_err("no server, no test");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("these tests need a real Redis"), "{message}");
        assert!(message.contains("/nonexistent/redis-server"), "{message}");
    }
}

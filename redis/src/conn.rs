//! The connection commands go through (publish, history, presence), and
//! how it comes back after Redis was lost.
//!
//! One multiplexed connection, shared by every caller. When it breaks it
//! is dropped, and the next call connects again, but not before the
//! backoff since the last failed attempt has passed: while Redis is down,
//! calls fail at once (a publish is then delivered on this node only)
//! instead of each waiting for its own connection attempt. This is why
//! the engine does not use redis-rs's `ConnectionManager`, whose callers
//! wait on its reconnect (with its own retries) while Redis is away.
//!
//! Every call is bounded by the command timeout, whatever Redis does.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, ServerErrorKind,
    Value,
};
use sabai::hub::EngineError;
use tokio::time::{timeout, Instant};

use crate::config::{Backoff, RedisConfig};
use crate::scripts::Script;

/// A failed call: Redis could not be reached, or it answered with an error.
#[derive(Debug)]
pub(crate) enum Failure {
    Unreachable(String),
    Server(RedisError),
}

impl Failure {
    pub(crate) fn into_engine_error(self) -> EngineError {
        match self {
            Failure::Unreachable(reason) => EngineError::Unavailable { reason, delivered_locally: false },
            Failure::Server(error) => EngineError::Broker(error.to_string()),
        }
    }

    fn is_noscript(&self) -> bool {
        matches!(self, Failure::Server(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
    }
}

/// Whether an error means the connection is gone (as opposed to Redis
/// answering with an error on a working connection).
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// Says why a connection attempt failed, for a person reading a log.
pub(crate) fn describe(error: &RedisError, url: &str) -> String {
    let code = error.code().unwrap_or_default();
    match error.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
            format!("Redis at {url} refused the credentials: {error}")
        }
        _ if matches!(code, "NOAUTH" | "WRONGPASS") => {
            format!("Redis at {url} refused the credentials: {error}")
        }
        ErrorKind::Server(_) | ErrorKind::Extension => format!("Redis at {url} refused: {error}"),
        _ if error.is_connection_refusal() => format!("cannot reach Redis at {url}: connection refused"),
        _ => format!("cannot reach Redis at {url}: {error}"),
    }
}

/// Whether a connection attempt failed for a reason waiting will not fix:
/// refused credentials, an invalid configuration, or a server certificate
/// that is not trusted (rustls's "invalid peer certificate", which reaches
/// us only as the text of an I/O error).
pub(crate) fn is_permanent(error: &RedisError) -> bool {
    let text = error.to_string();
    let refused = matches!(
        error.kind(),
        ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Server(ServerErrorKind::NoPerm)
    );
    refused || text.contains("WRONGPASS") || text.contains("invalid peer certificate")
}

#[derive(Debug, Default)]
struct Attempts {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The commands connection (see the module docs).
pub(crate) struct Commands {
    client: Client,
    connection_config: AsyncConnectionConfig,
    timeout: Duration,
    backoff: Backoff,
    url: String,
    /// The connection, with a number telling one from the next.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting: one attempt at a time.
    attempts: tokio::sync::Mutex<Attempts>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").field("url", &self.url).field("timeout", &self.timeout).finish()
    }
}

impl Commands {
    pub(crate) fn new(client: Client, config: &RedisConfig) -> Commands {
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout));
        Commands {
            client,
            connection_config,
            timeout: config.command_timeout,
            backoff: config.backoff,
            url: config.redacted_url(),
            current: Mutex::new(None),
            attempts: tokio::sync::Mutex::new(Attempts::default()),
            generation: Default::default(),
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a connection made elsewhere (by `connect`'s first contact).
    pub(crate) fn adopt(&self, connection: MultiplexedConnection) {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, connection));
    }

    /// Whether the last attempt to reach Redis failed and none succeeded since.
    pub(crate) fn is_down(&self) -> bool {
        self.current().is_none() && self.attempts.try_lock().is_ok_and(|a| a.failures > 0)
    }

    /// The connection, made now if there is none (unless the backoff says wait).
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), Failure> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut attempts = self.attempts.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if attempts.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(Failure::Unreachable(attempts.last_error.clone()));
        }
        let attempt = self.client.get_multiplexed_async_connection_with_config(&self.connection_config);
        let error = match timeout(self.timeout, attempt).await {
            Ok(Ok(connection)) => {
                *attempts = Attempts::default();
                let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((generation, connection.clone()));
                return Ok((generation, connection));
            }
            Ok(Err(error)) => describe(&error, &self.url),
            Err(_) => format!("cannot reach Redis at {}: no answer within {:?}", self.url, self.timeout),
        };
        attempts.retry_at = Some(Instant::now() + self.backoff.delay(attempts.failures));
        attempts.failures = attempts.failures.saturating_add(1);
        attempts.last_error = error.clone();
        Err(Failure::Unreachable(error))
    }

    /// Forgets connection `generation` (it broke); the next call reconnects.
    fn lost(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Drops the connection whatever its state: the pub/sub connection to
    /// the same Redis was just lost, so this one most likely is too, and
    /// the next command should not be the one to find out.
    pub(crate) fn forget(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn classify(
        &self,
        generation: u64,
        result: Result<Result<Value, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<Value, Failure> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_connection_error(&error) => {
                self.lost(generation);
                Err(Failure::Unreachable(format!("lost Redis at {}: {error}", self.url)))
            }
            Ok(Err(error)) if error.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                Err(Failure::Unreachable(format!("Redis at {} is loading its data", self.url)))
            }
            Ok(Err(error)) => Err(Failure::Server(error)),
            Err(_) => {
                // A connection that let a command time out is not trusted again.
                self.lost(generation);
                Err(Failure::Unreachable(format!(
                    "Redis at {} did not answer within {:?}",
                    self.url, self.timeout
                )))
            }
        }
    }

    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failure> {
        let (generation, mut connection) = self.connection().await?;
        let result = timeout(self.timeout, cmd.query_async::<Value>(&mut connection)).await;
        let value = self.classify(generation, result)?;
        T::from_redis_value(value).map_err(|e| Failure::Server(e.into()))
    }

    /// Runs a pipeline; each command's answer (a `Value::ServerError` for
    /// a command Redis refused) in order.
    pub(crate) async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>, Failure> {
        let (generation, mut connection) = self.connection().await?;
        let result = timeout(self.timeout, pipe.query_async::<Value>(&mut connection)).await;
        match self.classify(generation, result)? {
            Value::Array(values) => Ok(values),
            other => Err(Failure::Server(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "a pipeline answered with one value",
                format!("{other:?}"),
            )))),
        }
    }

    /// Loads a script (after a NOSCRIPT: Redis restarted or was flushed).
    pub(crate) async fn load(&self, script: &Script) -> Result<(), Failure> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(script.source);
        self.query::<String>(&cmd).await.map(drop)
    }

    /// Runs a script that may safely run twice (history and presence
    /// reads) by its SHA1: loads it if Redis does not know it, and tries
    /// once more on a new connection if the current one was found broken.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<T, Failure> {
        let cmd = evalsha(script, keys, args);
        match self.query::<T>(&cmd).await {
            Err(failure) if failure.is_noscript() => {
                self.load(script).await?;
                self.query::<T>(&cmd).await
            }
            Err(Failure::Unreachable(_)) if self.current().is_none() && !self.is_down() => {
                self.query::<T>(&cmd).await
            }
            result => result,
        }
    }
}

/// `EVALSHA sha numkeys keys... args...`.
pub(crate) fn evalsha(script: &Script, keys: &[String], args: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(&script.sha).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// Whether a pipeline's answer is a NOSCRIPT error.
pub(crate) fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

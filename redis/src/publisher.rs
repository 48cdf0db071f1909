//! Publishing: queued in call order to one task, which sends what is
//! queued as one pipeline of EVALSHA (one round trip for many
//! publications under load), loads the script again on NOSCRIPT, and
//! delivers on this node only what Redis could not take.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::Value;
use sabai::hub::{BoxFuture, EngineError, Outgoing, Placement, Position, Publication};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{evalsha, is_noscript, Failure};
use crate::stats::Counters;
use crate::{bulk, codec, millis, ready, Inner};

/// Publications sent in one pipeline at most.
const BATCH: usize = 256;

/// One publication on its way to Redis.
#[derive(Debug)]
pub(crate) struct Job {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
    rooms: Vec<String>,
    /// What this node delivers if Redis cannot be reached: no offsets.
    local: Arc<Publication>,
    reply: oneshot::Sender<Result<Vec<Placement>, EngineError>>,
}

/// Queues a publication (its place among this node's publications is
/// fixed here) and returns its outcome.
pub(crate) fn publish(inner: &Inner, outgoing: Outgoing) -> BoxFuture<Result<Vec<Placement>, EngineError>> {
    let mut rooms = outgoing.rooms;
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|(room, _)| seen.insert(room.clone()));
    if rooms.is_empty() {
        return ready(Ok(Vec::new()));
    }
    let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
    let head = codec::Head {
        node: &inner.config.node_id,
        seq,
        except: outgoing.except,
        coalesce: outgoing.coalesce.as_deref(),
    };
    let frame = codec::frame(&head, &outgoing.message, rooms.len());
    let mut keys = Vec::with_capacity(rooms.len() * 2);
    let mut args = Vec::with_capacity(3 + rooms.len() * 5);
    args.extend([frame.head, frame.tail, rooms.len().to_string().into_bytes()]);
    for (room, policy) in &rooms {
        keys.extend([inner.keys.meta(room), inner.keys.stream(room)]);
        args.push(room.clone().into_bytes());
        args.push(inner.keys.channel(room).into_bytes());
        match policy {
            Some(policy) => {
                args.push(policy.size.max(1).to_string().into_bytes());
                args.push(millis(policy.ttl));
                args.push(millis(policy.meta_ttl));
            }
            None => args.extend([b"0".to_vec(), b"0".to_vec(), b"0".to_vec()]),
        }
    }
    let placements = rooms.iter().map(|(room, _)| Placement { room: room.clone(), position: None }).collect();
    let local = Arc::new(Publication {
        message: outgoing.message,
        rooms: placements,
        except: outgoing.except,
        coalesce: outgoing.coalesce,
    });
    let rooms = rooms.into_iter().map(|(room, _)| room).collect();
    let (reply, outcome) = oneshot::channel();
    if inner.publisher.send(Job { keys, args, rooms, local, reply }).is_err() {
        return ready(Err(EngineError::Closed));
    }
    Box::pin(async move { outcome.await.unwrap_or(Err(EngineError::Closed)) })
}

/// The publisher task: sends what is queued, in order.
pub(crate) async fn run(inner: Arc<Inner>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        send(&inner, std::mem::take(&mut batch)).await;
    }
}

async fn send(inner: &Inner, mut jobs: Vec<Job>) {
    let script = &inner.scripts.publish;
    // Twice at most: a NOSCRIPT round, then the script is loaded.
    for _ in 0..2 {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in &jobs {
            pipe.add_command(evalsha(script, &job.keys, &job.args));
        }
        let answers = match inner.commands.pipeline(&pipe).await {
            Ok(answers) => answers,
            Err(failure) => return fail(inner, jobs, failure),
        };
        let mut missing = Vec::new();
        let mut answers = answers.into_iter();
        for job in jobs {
            match answers.next() {
                Some(answer) if is_noscript(&answer) => missing.push(job),
                Some(answer) => answered(inner, job, answer),
                None => refuse(inner, job, EngineError::Broker("no answer in the pipeline".into())),
            }
        }
        if missing.is_empty() {
            return;
        }
        // Redis lost its scripts (it restarted): load it and send those again, in order.
        if let Err(failure) = inner.commands.load(script).await {
            return fail(inner, missing, failure);
        }
        jobs = missing;
    }
    for job in jobs {
        refuse(inner, job, EngineError::Broker("Redis keeps forgetting the publish script".into()));
    }
}

/// Redis answered one publication.
fn answered(inner: &Inner, job: Job, answer: Value) {
    match placements(&job.rooms, answer) {
        Ok(placements) => {
            Counters::add(&inner.counters.publications, 1);
            let _ = job.reply.send(Ok(placements));
        }
        Err(error) => refuse(inner, job, error),
    }
}

fn refuse(inner: &Inner, job: Job, error: EngineError) {
    Counters::add(&inner.counters.publish_errors, 1);
    let _ = job.reply.send(Err(error));
}

/// The pipeline failed as a whole. If Redis could not be reached, this
/// node's members still get the publications, without offsets.
fn fail(inner: &Inner, jobs: Vec<Job>, failure: Failure) {
    match failure {
        Failure::Unreachable(reason) => {
            for job in jobs {
                Counters::add(&inner.counters.publish_errors, 1);
                Counters::add(&inner.counters.delivered_locally, 1);
                if let Some(node) = inner.node() {
                    node.deliver(job.local.clone());
                }
                let error = EngineError::Unavailable { reason: reason.clone(), delivered_locally: true };
                let _ = job.reply.send(Err(error));
            }
        }
        Failure::Server(error) => {
            for job in jobs {
                refuse(inner, job, EngineError::Broker(error.to_string()));
            }
        }
    }
}

/// The script's answer: offset and epoch per room ("" where none).
fn placements(rooms: &[String], answer: Value) -> Result<Vec<Placement>, EngineError> {
    let items = match answer {
        Value::Array(items) if items.len() == rooms.len() * 2 => items,
        Value::ServerError(error) => return Err(EngineError::Broker(error.to_string())),
        other => {
            return Err(EngineError::Broker(format!("unexpected answer to the publish script: {other:?}")))
        }
    };
    let mut placements = Vec::with_capacity(rooms.len());
    for (room, pair) in rooms.iter().zip(items.chunks(2)) {
        let (offset, epoch) = (bulk(&pair[0]), bulk(&pair[1]));
        let position = if offset.is_empty() {
            None
        } else {
            let offset = std::str::from_utf8(offset).ok().and_then(|o| o.parse().ok());
            let offset =
                offset.ok_or_else(|| EngineError::Broker("the publish script gave a bad offset".into()))?;
            Some(Position::new(offset, String::from_utf8_lossy(epoch).into_owned()))
        };
        placements.push(Placement { room: room.clone(), position });
    }
    Ok(placements)
}

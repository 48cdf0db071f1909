//! The Redis engine against a real redis-server (never a mock): two or
//! more hub nodes in this process share one Redis. Each test starts its
//! own server (see `sabai_redis::testing`).

mod support;

mod delivery;
mod faults;
mod presence;
mod recovery;
mod security;

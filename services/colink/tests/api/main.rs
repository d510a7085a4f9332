//! End-to-end tests: each starts a real `colink` node on an ephemeral port
//! with its own data directory and talks to it only through the generated
//! gRPC clients.

#![allow(clippy::unwrap_used)]

mod helpers;
mod servers;
mod soft_authenticator;

mod admin;
mod auth;
mod authorization;
mod bad_input;
mod channels;
mod cluster;
mod crash;
mod envoy;
mod files;
mod hardening;
mod idempotency;
mod kafka;
mod messaging;
mod moderation;
mod node;
mod operations;
mod passkeys;
mod presence;
mod presence_live;
mod reactions;
mod realtime;
mod retention;
mod sanctions;
mod search;
mod search_files;
mod sso;
mod threads;
mod unread;
mod unread_model;
mod users;

//! What every Colink service shares: configuration, the auth layer, database
//! handles, pub/sub, the event outbox, clients to other services, the error
//! taxonomy and request-validation helpers. No domain logic lives here.

pub mod auth;
pub mod clients;
pub mod clock;
pub mod config;
pub mod db;
pub mod ephemeral;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod pubsub;
pub mod request_context;
pub mod stack;
pub mod telemetry;
pub mod token;

use std::sync::Arc;

pub use auth::{Caller, Role, caller};
pub use error::{Error, Result};

/// Everything a service needs from its host, built once per node.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<config::Config>,
    pub peers: clients::Peers,
    pub pubsub: Arc<dyn pubsub::PubSub>,
    pub events: Arc<dyn events::EventLog>,
    pub verifier: Arc<auth::TokenVerifier>,
}

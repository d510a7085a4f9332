//! Readiness follows the backends. A node is ready once it serves, as long
//! as the backends it cannot work without answer: each hosted service's
//! database and, when configured, Kafka. While one does not, gRPC health
//! says NOT_SERVING (for the node and every service) and `/readyz` 503, so
//! that a load balancer or Envoy sends calls elsewhere; when it answers
//! again, the node is ready again. Shutdown ends readiness for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use colink_runtime::db::Db;
use colink_runtime::events::EventLog;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the backends are asked, and how long each may take to answer.
const EVERY: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(2);

/// What the node needs to serve.
pub struct Backends {
    pub databases: Vec<(&'static str, Db)>,
    pub events: Arc<dyn EventLog>,
}

/// What readiness is reported through.
pub struct Reporters {
    pub health: HealthReporter,
    /// The services' names in gRPC health ("" is the node).
    pub services: Vec<&'static str>,
    /// What `/readyz` says.
    pub ready: Arc<AtomicBool>,
}

/// Reports the node ready now, then follows the backends until shutdown.
pub async fn watch(backends: Backends, reporters: Reporters, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    reporters.set(true).await;
    tokio::spawn(async move {
        let mut serving = true;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            }
            let missing = tokio::select! {
                missing = backends.first_missing() => missing,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            match (&missing, serving) {
                (Some(backend), true) => {
                    tracing::warn!(%backend, "a backend does not answer: not ready");
                    serving = false;
                    reporters.set(false).await;
                }
                (None, false) => {
                    tracing::info!("the backends answer again: ready");
                    serving = true;
                    reporters.set(true).await;
                }
                _ => {}
            }
        }
        reporters.set(false).await;
    })
}

impl Backends {
    /// The first backend that does not answer in time, named with why.
    async fn first_missing(&self) -> Option<String> {
        for (service, db) in &self.databases {
            match tokio::time::timeout(PATIENCE, db.writer.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Some(format!("the {service} database: {err}")),
                Err(_) => return Some(format!("the {service} database: no answer within {PATIENCE:?}")),
            }
        }
        match tokio::time::timeout(PATIENCE, self.events.reachable(PATIENCE)).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("the event log: {err}")),
            Err(_) => Some(format!("the event log: no answer within {PATIENCE:?}")),
        }
    }
}

impl Reporters {
    async fn set(&self, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in &self.services {
            self.health.set_service_status(*name, status).await;
        }
        self.health.set_service_status("", status).await;
        self.ready.store(serving, Ordering::Relaxed);
    }
}

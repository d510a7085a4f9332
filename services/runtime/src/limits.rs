//! Request budgets, checked by the auth layer before a handler runs:
//!
//! - every signed-in user may make `mutations_per_minute` changing calls a
//!   minute (1,000, the seeds' per-user limit); sends have their own budget
//!   of the same size in the messaging service and are not counted twice;
//! - every client address may make `anonymous_per_address_per_minute` calls
//!   a minute without a valid token (100, the seeds' per-IP limit): signing
//!   up and in, refreshing, resetting a password, and calls whose token is
//!   refused.
//!
//! The per-address budget covers only calls without an identity because a
//! company's whole office often shares one address: counting its signed-in
//! traffic there would throttle everyone for the busiest few. The budgets
//! live in the node rather than in Envoy so that they hold across nodes
//! (their counters are in the ephemeral store, Redis when configured) and
//! for clients that reach a node without Envoy.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::Error;
use crate::ephemeral::Ephemeral;

/// The length of a budget's window.
const WINDOW: Duration = Duration::from_secs(60);

/// Methods that read, by their name's first word; every other method
/// changes something.
const READING: &[&str] =
    &["Get", "List", "BatchGet", "Browse", "Search", "Check", "Export", "Verify", "Subscribe", "Connect"];

/// Methods counted in a budget of their own elsewhere.
const OWN_BUDGET: &[&str] =
    &["/colink.messaging.v1.MessagingService/SendMessage", "/colink.threads.v1.ThreadsService/ReplyToThread"];

/// Public methods other nodes call, never counted against an address.
const NODE_CALLS: &[&str] = &["/colink.auth.v1.AuthService/GetJwks", "/colink.auth.v1.AuthService/CheckSession"];

pub struct RequestLimits {
    store: Arc<dyn Ephemeral>,
    mutations_per_minute: u32,
    anonymous_per_minute: u32,
}

impl RequestLimits {
    /// Budgets of 0 are off.
    pub fn new(store: Arc<dyn Ephemeral>, mutations_per_minute: u32, anonymous_per_minute: u32) -> Self {
        Self { store, mutations_per_minute, anonymous_per_minute }
    }

    /// Counts a call without a valid token against its client address.
    pub async fn anonymous(&self, path: &str, client_ip: &str) -> Result<(), Status> {
        if client_ip.is_empty() || NODE_CALLS.contains(&path) {
            return Ok(());
        }
        let key = format!("ratelimit:anonymous:{client_ip}");
        let what = format!("more than {} requests without signing in from this address", self.anonymous_per_minute);
        self.spend(&key, self.anonymous_per_minute, what).await
    }

    /// Counts a signed-in user's call if it changes something.
    pub async fn signed_in(&self, path: &str, user_id: &str) -> Result<(), Status> {
        if !changes_something(path) || OWN_BUDGET.contains(&path) {
            return Ok(());
        }
        let key = format!("ratelimit:mutations:{user_id}");
        let what = format!("more than {} changes", self.mutations_per_minute);
        self.spend(&key, self.mutations_per_minute, what).await
    }

    async fn spend(&self, key: &str, per_minute: u32, what: String) -> Result<(), Status> {
        if per_minute == 0 {
            return Ok(());
        }
        match self.store.hit(key, WINDOW).await {
            Ok(count) if count > u64::from(per_minute) => {
                let now = crate::ids::now_micros();
                let window = WINDOW.as_micros() as i64;
                let left = Duration::from_micros(u64::try_from(window - now.rem_euclid(window)).unwrap_or(0));
                let message = format!("{what} in a minute; wait a moment and try again");
                Err(Error::Throttled { message, retry_after: left.max(Duration::from_secs(1)) }.into())
            }
            Ok(_) => Ok(()),
            // An outage of ephemeral state never stops the workspace.
            Err(err) => {
                tracing::warn!(error = %err, "request budget not checked");
                Ok(())
            }
        }
    }
}

/// Whether a gRPC path (`/package.Service/Method`) names a method that
/// changes something.
pub fn changes_something(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    !READING.iter().any(|word| {
        method
            .strip_prefix(word)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ephemeral::MemoryEphemeral;

    #[test]
    fn reading_methods_are_told_apart_from_changing_ones() {
        for reading in [
            "/colink.users.v1.UsersService/GetMe",
            "/colink.channels.v1.ChannelsService/BrowseChannels",
            "/colink.messaging.v1.MessagingService/BatchGetMessages",
            "/colink.admin.v1.AdminService/VerifyAuditChain",
        ] {
            assert!(!changes_something(reading), "{reading}");
        }
        for changing in [
            "/colink.reactions.v1.ReactionsService/AddReaction",
            "/colink.channels.v1.ChannelsService/CreateChannel",
            "/colink.presence.v1.PresenceService/Heartbeat",
            "/colink.auth.v1.AuthService/Logout",
        ] {
            assert!(changes_something(changing), "{changing}");
        }
    }

    #[tokio::test]
    async fn a_budget_counts_changes_per_user_and_anonymous_calls_per_address() {
        let limits = RequestLimits::new(Arc::new(MemoryEphemeral::default()), 2, 1);
        let add = "/colink.reactions.v1.ReactionsService/AddReaction";
        let read = "/colink.users.v1.UsersService/GetMe";
        let send = "/colink.messaging.v1.MessagingService/SendMessage";
        for _ in 0..2 {
            limits.signed_in(add, "u1").await.unwrap();
        }
        for _ in 0..5 {
            limits.signed_in(read, "u1").await.unwrap();
            limits.signed_in(send, "u1").await.unwrap();
        }
        let over = limits.signed_in(add, "u1").await.unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        limits.signed_in(add, "u2").await.unwrap();

        let login = "/colink.auth.v1.AuthService/Login";
        limits.anonymous(login, "192.0.2.1").await.unwrap();
        assert!(limits.anonymous(login, "192.0.2.1").await.is_err());
        limits.anonymous(login, "192.0.2.2").await.unwrap();
        limits.anonymous("/colink.auth.v1.AuthService/CheckSession", "192.0.2.1").await.unwrap();
    }
}

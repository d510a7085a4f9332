//! Slows down password guessing. Failed logins are counted per account and
//! per client address in ephemeral state (shared by every node when it is
//! Redis). Past a few free failures, each one holds back every further
//! attempt for a growing delay, and past many, for a lockout window. A held
//! back attempt is refused before its password is checked, even the right
//! one, so holding back costs no hashing.
//!
//! Unknown logins are counted under the name that was tried, exactly like
//! known ones, so the answers never tell whether an account exists.
//!
//! Registrations and mail requests (password resets, verifications) are
//! counted per client address: past the hourly limit an address must wait,
//! so one client cannot mint accounts or send mail by the thousand.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use colink_runtime::Error;
use colink_runtime::ephemeral::Ephemeral;
use colink_runtime::ids::now_micros;

/// Failures are counted in windows of this length.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest delay before the lockout.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// When failures for one key start to hold back attempts, and when they
/// lock them out.
struct Rule {
    name: &'static str,
    free: u64,
    lockout_at: u64,
    lockout: Duration,
}

/// One person mistyping gets a few tries before any delay.
const ACCOUNT: Rule = Rule { name: "account", free: 5, lockout_at: 20, lockout: Duration::from_secs(15 * 60) };
/// Many people may share an address (an office, a NAT), so it gets more.
const ADDRESS: Rule = Rule { name: "address", free: 20, lockout_at: 100, lockout: Duration::from_secs(15 * 60) };

impl Rule {
    /// How long the `failures`-th failure in a window holds back attempts.
    fn hold(&self, failures: u64) -> Option<Duration> {
        if failures < self.free {
            None
        } else if failures >= self.lockout_at {
            Some(self.lockout)
        } else {
            let doublings = u32::try_from(failures - self.free).unwrap_or(u32::MAX).min(16);
            Some(Duration::from_secs(1 << doublings).min(MAX_DELAY))
        }
    }
}

pub struct LoginThrottle {
    store: Arc<dyn Ephemeral>,
}

impl LoginThrottle {
    pub fn new(store: Arc<dyn Ephemeral>) -> Self {
        Self { store }
    }

    /// Refuses an attempt while its account or address is held back, with
    /// RESOURCE_EXHAUSTED and how long to wait. When the store cannot be
    /// reached, attempts go through: logging in matters more.
    pub async fn check(&self, login: &str, address: Option<&str>) -> Result<(), Error> {
        let keys: Vec<String> = keys(login, address).map(|(rule, key)| hold_key(rule, &key)).collect();
        let holds = match self.store.get_many(&keys).await {
            Ok(holds) => holds,
            Err(err) => {
                tracing::warn!(error = %err, "login throttle not checked");
                return Ok(());
            }
        };
        let now = now_micros();
        let until = holds.iter().flatten().filter_map(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok()).max();
        match until {
            Some(until) if until > now => {
                let wait = Duration::from_micros(u64::try_from(until - now).unwrap_or(0)).max(Duration::from_secs(1));
                Err(Error::Throttled {
                    message: format!(
                        "too many failed logins; wait {} s before trying again",
                        wait.as_secs_f64().ceil() as u64
                    ),
                    retry_after: wait,
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt, and holds back the next ones when failures
    /// have piled up.
    pub async fn failed(&self, login: &str, address: Option<&str>) {
        for (rule, key) in keys(login, address) {
            let failures = match self.store.hit(&format!("login:failures:{}:{key}", rule.name), WINDOW).await {
                Ok(failures) => failures,
                Err(err) => {
                    tracing::warn!(error = %err, "failed login not counted");
                    return;
                }
            };
            if let Some(hold) = rule.hold(failures) {
                let until = now_micros() + i64::try_from(hold.as_micros()).unwrap_or(i64::MAX / 2);
                if let Err(err) = self.store.put(&hold_key(rule, &key), Bytes::from(until.to_string()), hold).await {
                    tracing::warn!(error = %err, "login hold not stored");
                }
            }
        }
    }
}

/// Registrations and mail requests are counted in windows of this length.
const HOURLY: Duration = Duration::from_secs(60 * 60);

impl LoginThrottle {
    /// Counts a request of a kind ("register", "mail") from `address`, and
    /// refuses it with RESOURCE_EXHAUSTED past `per_hour` in the window (0:
    /// no limit). When the store cannot be reached, requests go through.
    pub async fn per_address_hourly(&self, kind: &str, address: Option<&str>, per_hour: u32) -> Result<(), Error> {
        let Some(address) = address.filter(|_| per_hour > 0) else { return Ok(()) };
        if self.counted(&format!("{kind}:address:{address}"), HOURLY, u64::from(per_hour)).await {
            return Ok(());
        }
        let what = match kind {
            "register" => "accounts may be registered",
            _ => "mails may be asked for",
        };
        Err(Error::Throttled {
            message: format!("at most {per_hour} {what} from one address in an hour; try later"),
            retry_after: HOURLY,
        })
    }

    /// Counts one more under `key` in a window; false past `max`. When the
    /// store cannot be reached, it counts nothing and says true.
    pub async fn counted(&self, key: &str, window: Duration, max: u64) -> bool {
        match self.store.hit(key, window).await {
            Ok(count) => count <= max,
            Err(err) => {
                tracing::warn!(error = %err, key, "request not counted");
                true
            }
        }
    }
}

fn keys<'a>(login: &'a str, address: Option<&'a str>) -> impl Iterator<Item = (&'static Rule, String)> + 'a {
    std::iter::once((&ACCOUNT, login.to_string())).chain(address.map(|a| (&ADDRESS, a.to_string())))
}

fn hold_key(rule: &Rule, key: &str) -> String {
    format!("login:hold:{}:{key}", rule.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_lock_out() {
        let holds: Vec<Option<u64>> = (1..=21).map(|n| ACCOUNT.hold(n).map(|d| d.as_secs())).collect();
        assert_eq!(&holds[..4], &[None; 4]);
        assert_eq!(&holds[4..9], &[Some(1), Some(2), Some(4), Some(8), Some(16)]);
        assert_eq!(holds[11], Some(60), "capped");
        assert_eq!(holds[19], Some(15 * 60), "locked out");
        assert_eq!(holds[20], Some(15 * 60));
    }
}

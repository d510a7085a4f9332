//! Account rules: what a valid username, email and password are, and how
//! passwords and refresh tokens are hashed. Free of gRPC.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_runtime::config::AuthConfig;
use colink_runtime::error::{FieldError, Violations};
use colink_runtime::ids::check_text;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 128;

/// A validated new account.
pub struct NewAccount {
    pub username: String,
    pub email: String,
    pub password: String,
    pub display_name: String,
}

/// Validates registration input, reporting every bad field at once.
pub fn validate_registration(
    username: &str,
    email: &str,
    password: &str,
    display_name: &str,
) -> Result<NewAccount, Violations> {
    let mut v = Violations::default();
    let username = v.check(normalize_username(username));
    let email = v.check(normalize_email(email));
    v.check(check_password("password", password));
    let lowered = password.to_lowercase();
    let own_names = [username.as_deref(), email.as_deref(), email.as_deref().and_then(|e| e.split('@').next())];
    if own_names.into_iter().flatten().any(|name| name == lowered) {
        v.add("password", "must not be the username or the email address");
    }
    let display_name = display_name.trim();
    if !display_name.is_empty() {
        v.check(check_text("display_name", display_name, 1, 64));
    }
    match (username, email, v.is_empty()) {
        (Some(username), Some(email), true) => Ok(NewAccount {
            display_name: if display_name.is_empty() { username.clone() } else { display_name.to_string() },
            username,
            email,
            password: password.to_string(),
        }),
        _ => Err(v),
    }
}

/// Usernames are 3..=32 characters of lowercase letters, digits, '.', '_'
/// and '-', starting with a letter or digit. Input is lowercased.
pub fn normalize_username(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim().to_ascii_lowercase();
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let valid_start = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() {
        return Err(FieldError::new("username", "is required"));
    }
    if !(3..=32).contains(&name.len()) || !valid_chars || !valid_start {
        return Err(FieldError::new(
            "username",
            "must be 3 to 32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    Ok(name)
}

/// Emails are compared case-insensitively, so they are stored lowercased.
pub fn normalize_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(FieldError::new("email", "is required"));
    }
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        });
    if valid { Ok(email) } else { Err(FieldError::new("email", "must be a valid email address")) }
}

/// Passwords too common to accept, lowercased; the list and its source are
/// in `data/common-passwords.txt`.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt").lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
});

/// The password policy: 8 to 128 characters, and not one of the common
/// passwords that guessing tries first (whatever its letters' case).
pub fn check_password(field: &str, password: &str) -> Result<(), FieldError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(FieldError::new(field, format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")));
    }
    if COMMON_PASSWORDS.contains(password.to_lowercase().as_str()) {
        return Err(FieldError::new(field, "is one of the most common passwords; choose another"));
    }
    Ok(())
}

/// Argon2id with the configured cost.
///
/// Each hash needs `argon2_memory_kib` of working memory (19 MiB by
/// default). Allocating it per call let a burst of logins grow the node by
/// gigabytes that the allocator kept, so hashing runs on a fixed set of
/// worker threads, each of which reuses one buffer for its whole life:
/// memory stays at workers × buffer, and a burst waits in a bounded queue.
#[derive(Clone)]
pub struct PasswordHashing {
    jobs: mpsc::Sender<Job>,
}

enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, String>> },
    Verify { password: String, stored: String, reply: oneshot::Sender<bool> },
}

/// Jobs that may wait for a worker; senders beyond it wait their turn.
const QUEUE: usize = 256;

impl PasswordHashing {
    /// Starts `workers` hashing threads.
    pub fn new(config: &AuthConfig, workers: usize) -> Result<Self, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers.max(1) {
            let worker = Worker { params: params.clone(), memory: Vec::new() };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || worker.run(&queue))
                .map_err(|e| format!("cannot start a password hashing thread: {e}"))?;
        }
        Ok(Self { jobs })
    }

    /// A PHC-format hash with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Hash { password, reply }).await.map_err(|_| "password hashing stopped".to_string())?;
        answer.await.map_err(|_| "password hashing stopped".to_string())?
    }

    /// Whether a password matches a stored hash.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Verify { password, stored, reply };
        self.jobs.send(job).await.map_err(|_| "password hashing stopped".to_string())?;
        answer.await.map_err(|_| "password hashing stopped".to_string())
    }
}

/// One hashing thread and its working memory.
struct Worker {
    params: Params,
    memory: Vec<Block>,
}

impl Worker {
    fn run(mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let job = match queue.lock() {
                Ok(mut queue) => queue.blocking_recv(),
                Err(_) => None,
            };
            match job {
                Some(Job::Hash { password, reply }) => {
                    let _ = reply.send(self.hash(password.as_bytes()));
                }
                Some(Job::Verify { password, stored, reply }) => {
                    let _ = reply.send(self.verify(password.as_bytes(), &stored));
                }
                // Every sender is gone: the service stopped.
                None => return,
            }
        }
    }

    /// The working memory for `params`, grown only for a stored hash made
    /// with a larger cost than today's.
    fn memory(&mut self, params: &Params) -> &mut [Block] {
        if self.memory.len() < params.block_count() {
            self.memory = vec![Block::default(); params.block_count()];
        }
        &mut self.memory[..params.block_count()]
    }

    fn hash(&mut self, password: &[u8]) -> Result<String, String> {
        let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| e.to_string())?;
        let params = self.params.clone();
        let output = self.compute(password, &salt.as_salt(), Version::V0x13, &params).map_err(|e| e.to_string())?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(hash.to_string())
    }

    fn verify(&mut self, password: &[u8], stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else { return false };
        let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
        if hash.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let Ok(params) = Params::try_from(&hash) else { return false };
        let version = hash.version.map_or(Ok(Version::V0x13), Version::try_from).unwrap_or(Version::V0x13);
        let params = match Params::new(params.m_cost(), params.t_cost(), params.p_cost(), Some(expected.len())) {
            Ok(params) => params,
            Err(_) => return false,
        };
        // `Output` compares in constant time.
        self.compute(password, &salt, version, &params).is_ok_and(|output| output == expected)
    }

    fn compute(
        &mut self,
        password: &[u8],
        salt: &Salt<'_>,
        version: Version,
        params: &Params,
    ) -> password_hash::Result<Output> {
        let argon2 = Argon2::new(Algorithm::Argon2id, version, params.clone());
        let mut salt_bytes = [0_u8; Salt::MAX_LENGTH];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let memory = self.memory(params);
        Output::init_with(len, |out| {
            argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut *memory).map_err(Into::into)
        })
    }
}

/// Cryptographically random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0_u8; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(bytes)
}

/// A new opaque refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> Result<String, String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// What is stored for a refresh token: its SHA-256, so a database leak
/// yields no usable tokens.
pub fn hash_refresh_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_and_the_account_s_own_names_are_refused() {
        assert!(COMMON_PASSWORDS.len() > 15_000);
        for common in ["password", "PassWord1", "iloveyou", "qwertyuiop", "12345678"] {
            let refused = check_password("password", common).unwrap_err();
            assert!(format!("{refused:?}").contains("common"), "{common}: {refused:?}");
        }
        assert!(check_password("password", "short").is_err());
        check_password("password", "correct horse battery").unwrap();
        for own in ["gretchen.m", "GRETCHEN.M@example.com", "gretchen.m@example.com"] {
            let refused = validate_registration("gretchen.m", "gretchen.m@example.com", own, "").err().unwrap();
            assert!(format!("{refused:?}").contains("username or the email"), "{own}: {refused:?}");
        }
    }

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username(" Alice_1 ").unwrap(), "alice_1");
        for bad in ["", "ab", "-alice", "al ice", "émile", &"a".repeat(33)] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(normalize_email("Bob@Example.COM").unwrap(), "bob@example.com");
        for bad in ["", "bob", "bob@", "@x.org", "bob@localhost", "a@b@c.org", "a b@c.org"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registration_reports_every_bad_field() {
        let err = validate_registration("x", "nope", "short", "").err().unwrap();
        let text = err.to_string();
        assert!(text.contains("username") && text.contains("email") && text.contains("password"), "{text}");
    }

    fn hashing() -> PasswordHashing {
        let config = AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..AuthConfig::default() };
        PasswordHashing::new(&config, 2).unwrap()
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hashing = hashing();
        let hash = hashing.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(hashing.verify("correct horse".into(), hash.clone()).await.unwrap());
        assert!(!hashing.verify("wrong horse".into(), hash).await.unwrap());
        assert!(!hashing.verify("correct horse".into(), "not a hash".into()).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_elsewhere_with_other_costs_still_verify() {
        use argon2::PasswordHasher as _;
        let params = Params::new(128, 2, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let hashing = hashing();
        assert!(hashing.verify("correct horse".into(), stored.clone()).await.unwrap());
        assert!(!hashing.verify("wrong horse".into(), stored).await.unwrap());
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = new_refresh_token().unwrap();
        assert_ne!(a, new_refresh_token().unwrap());
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_ne!(hash_refresh_token(&a), a);
    }
}

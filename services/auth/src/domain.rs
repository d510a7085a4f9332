//! Account rules: what a valid username, email and password are, and how
//! passwords and refresh tokens are hashed. Free of gRPC.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_runtime::config::AuthConfig;
use colink_runtime::error::{FieldError, Violations};
use colink_runtime::ids::check_text;
use sha2::{Digest, Sha256};

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

pub fn check_password(field: &str, password: &str) -> Result<(), FieldError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        return Err(FieldError::new(field, format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")));
    }
    Ok(())
}

/// Argon2id with the configured cost.
#[derive(Clone)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, config.argon2_parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC-format hash with a fresh random salt. CPU-heavy: call from a
    /// blocking thread.
    pub fn hash(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| e.to_string())?;
        self.argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    }

    /// Whether a password matches a stored hash. CPU-heavy: call from a
    /// blocking thread.
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        PasswordHash::new(stored).is_ok_and(|hash| self.argon2().verify_password(password.as_bytes(), &hash).is_ok())
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

    #[test]
    fn passwords_hash_and_verify() {
        let config = AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..AuthConfig::default() };
        let hashing = PasswordHashing::new(&config).unwrap();
        let hash = hashing.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hashing.verify("correct horse", &hash));
        assert!(!hashing.verify("wrong horse", &hash));
        assert!(!hashing.verify("correct horse", "not a hash"));
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = new_refresh_token().unwrap();
        assert_ne!(a, new_refresh_token().unwrap());
        assert_eq!(hash_refresh_token(&a), hash_refresh_token(&a));
        assert_ne!(hash_refresh_token(&a), a);
    }
}

//! A software platform authenticator for passkey tests and benchmarks: a
//! P-256 key pair per credential, the attestation object and the assertion
//! built byte by byte as a platform authenticator builds them (CBOR, COSE
//! key, authenticator data, client data), so that a node's WebAuthn checks
//! run on what a browser would send.

// Test support: a malformed option is the node's bug, reported by a panic.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A platform authenticator holding passkeys for one site, answering as
/// the browser on `origin` would pass its answers on.
#[derive(Clone)]
pub struct Authenticator {
    pub rp_id: String,
    pub origin: String,
    passkeys: Vec<SoftPasskey>,
    made: u32,
}

#[derive(Clone)]
struct SoftPasskey {
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    key: SigningKey,
    sign_count: u32,
}

impl Authenticator {
    pub fn new(origin: &str) -> Self {
        Self { rp_id: "localhost".into(), origin: origin.into(), passkeys: Vec::new(), made: 0 }
    }

    /// navigator.credentials.create(): a new passkey for the options'
    /// user, as the registration JSON (`PublicKeyCredential.toJSON()`).
    pub fn create(&mut self, options_json: &str) -> Result<String, String> {
        let options: Value = serde_json::from_str(options_json).unwrap();
        let options = &options["publicKey"];
        let rp_id = options["rp"]["id"].as_str().unwrap();
        let excluded = options["excludeCredentials"].as_array().cloned().unwrap_or_default();
        let excluded: Vec<Vec<u8>> = excluded.iter().map(|c| decode(c["id"].as_str().unwrap())).collect();
        if self.passkeys.iter().any(|p| excluded.contains(&p.credential_id)) {
            return Err("InvalidStateError: this authenticator holds a passkey of the account already".into());
        }
        self.made += 1;
        let seed = Sha256::digest(format!("{}/{}/{}", self.origin, self.made, options["challenge"]));
        let key = SigningKey::from_slice(&seed).unwrap();
        let credential_id = Sha256::digest(seed).to_vec();
        let point = key.verifying_key().to_encoded_point(false);
        let mut cose_key = Vec::new();
        cbor_head(5, 5, &mut cose_key);
        for (label, value) in [(1, 2), (3, -7), (-1, 1)] {
            cbor_int(label, &mut cose_key);
            cbor_int(value, &mut cose_key);
        }
        cbor_int(-2, &mut cose_key);
        cbor_bytes(point.x().unwrap(), &mut cose_key);
        cbor_int(-3, &mut cose_key);
        cbor_bytes(point.y().unwrap(), &mut cose_key);
        // User present, user verified, attested credential data included.
        let mut auth_data = self.auth_data_head(rp_id, 0x45, 0);
        auth_data.extend([0u8; 16]);
        auth_data.extend((credential_id.len() as u16).to_be_bytes());
        auth_data.extend(&credential_id);
        auth_data.extend(cose_key);
        let mut attestation = Vec::new();
        cbor_head(5, 3, &mut attestation);
        cbor_text("fmt", &mut attestation);
        cbor_text("none", &mut attestation);
        cbor_text("attStmt", &mut attestation);
        cbor_head(5, 0, &mut attestation);
        cbor_text("authData", &mut attestation);
        cbor_bytes(&auth_data, &mut attestation);
        let client_data = self.client_data("webauthn.create", options["challenge"].as_str().unwrap());
        let user_handle = decode(options["user"]["id"].as_str().unwrap());
        self.passkeys.push(SoftPasskey { credential_id: credential_id.clone(), user_handle, key, sign_count: 0 });
        Ok(json!({
            "id": URL_SAFE_NO_PAD.encode(&credential_id),
            "rawId": URL_SAFE_NO_PAD.encode(&credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": URL_SAFE_NO_PAD.encode(attestation),
                "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
        .to_string())
    }

    /// navigator.credentials.get(): the newest passkey the options allow
    /// (any, when they name none) signs the challenge.
    pub fn get(&mut self, options_json: &str) -> String {
        let options: Value = serde_json::from_str(options_json).unwrap();
        let options = &options["publicKey"];
        let allowed = options["allowCredentials"].as_array().cloned().unwrap_or_default();
        let allowed: Vec<Vec<u8>> = allowed.iter().map(|c| decode(c["id"].as_str().unwrap())).collect();
        let rp_id = options["rpId"].as_str().unwrap_or(&self.rp_id).to_string();
        let client_data = self.client_data("webauthn.get", options["challenge"].as_str().unwrap());
        let passkey = self
            .passkeys
            .iter_mut()
            .rev()
            .find(|p| allowed.is_empty() || allowed.contains(&p.credential_id))
            .expect("a passkey for this site");
        passkey.sign_count += 1;
        let (count, credential_id, user_handle) =
            (passkey.sign_count, passkey.credential_id.clone(), passkey.user_handle.clone());
        let key = passkey.key.clone();
        let auth_data = self.auth_data_head(&rp_id, 0x05, count);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client_data));
        let signature: Signature = key.sign(&signed);
        json!({
            "id": URL_SAFE_NO_PAD.encode(&credential_id),
            "rawId": URL_SAFE_NO_PAD.encode(&credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": URL_SAFE_NO_PAD.encode(auth_data),
                "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data),
                "signature": URL_SAFE_NO_PAD.encode(signature.to_der().as_bytes()),
                "userHandle": URL_SAFE_NO_PAD.encode(user_handle),
            },
            "clientExtensionResults": {},
        })
        .to_string()
    }

    fn auth_data_head(&self, rp_id: &str, flags: u8, sign_count: u32) -> Vec<u8> {
        let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend(sign_count.to_be_bytes());
        data
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }
}

pub fn decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).unwrap()
}

fn cbor_head(major: u8, length: usize, out: &mut Vec<u8>) {
    match length {
        0..=23 => out.push(major << 5 | length as u8),
        24..=255 => out.extend([major << 5 | 24, length as u8]),
        _ => {
            out.push(major << 5 | 25);
            out.extend((length as u16).to_be_bytes());
        }
    }
}

fn cbor_int(value: i64, out: &mut Vec<u8>) {
    match value {
        0.. => cbor_head(0, value as usize, out),
        _ => cbor_head(1, (-1 - value) as usize, out),
    }
}

fn cbor_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, bytes.len(), out);
    out.extend(bytes);
}

fn cbor_text(text: &str, out: &mut Vec<u8>) {
    cbor_head(3, text.len(), out);
    out.extend(text.as_bytes());
}

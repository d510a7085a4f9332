//! The Ed25519 keys that sign access tokens. The newest unretired key signs;
//! every unretired key is published, so tokens stay valid across rotation.

use colink_proto::auth::v1::Jwk;
use colink_runtime::db::Db;
use colink_runtime::ids::now_micros;
use colink_runtime::token::encode_public_key;
use colink_runtime::{Error, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use sha2::{Digest, Sha256};

use crate::domain::random_bytes;
use crate::store::signing_key;

pub struct Keys {
    /// Newest first; never empty.
    active: Vec<(String, SigningKey)>,
}

impl Keys {
    pub async fn load_or_create(db: &Db) -> Result<Self> {
        let mut active = Self::load(db).await?;
        if active.is_empty() {
            let secret = random_bytes::<32>().map_err(Error::internal)?;
            let key = SigningKey::from_bytes(&secret);
            let digest = Sha256::digest(key.verifying_key().as_bytes());
            let kid: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            signing_key::ActiveModel {
                kid: Set(kid),
                secret_key: Set(secret.to_vec()),
                created_at: Set(now_micros()),
                retired_at: Set(None),
            }
            .insert(&db.writer)
            .await?;
            // Another node may have created one at the same moment; both are valid.
            active = Self::load(db).await?;
        }
        if active.is_empty() {
            return Err(Error::internal("no signing key after creating one"));
        }
        Ok(Self { active })
    }

    async fn load(db: &Db) -> Result<Vec<(String, SigningKey)>> {
        let rows = signing_key::Entity::find()
            .filter(signing_key::Column::RetiredAt.is_null())
            .order_by_desc(signing_key::Column::CreatedAt)
            .all(&db.writer)
            .await?;
        rows.into_iter()
            .map(|row| {
                let secret: [u8; 32] = row
                    .secret_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::internal(format!("signing key {} is corrupt", row.kid)))?;
                Ok((row.kid, SigningKey::from_bytes(&secret)))
            })
            .collect()
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> (&str, &SigningKey) {
        let (kid, key) = &self.active[0];
        (kid, key)
    }

    /// The public key of an unretired key.
    pub fn verifying(&self, kid: &str) -> Option<VerifyingKey> {
        self.active.iter().find(|(id, _)| id == kid).map(|(_, key)| key.verifying_key())
    }

    /// The public keys as JWKs.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.active
            .iter()
            .map(|(kid, key)| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: encode_public_key(&key.verifying_key()),
                kid: kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect()
    }
}

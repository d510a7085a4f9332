//! The Ed25519 keys that sign access tokens. The newest unretired key signs;
//! every unretired key is published, so tokens stay valid across rotation.

use colink_proto::auth::v1::Jwk;
use colink_runtime::db::Db;
use colink_runtime::ids::now_micros;
use colink_runtime::token::{decoding_key, encode_public_key, encoding_key};
use colink_runtime::{Error, Result};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use sha2::{Digest, Sha256};

use crate::domain::random_bytes;
use crate::store::signing_key;

pub struct Keys {
    /// Newest first; never empty.
    active: Vec<ActiveKey>,
}

struct ActiveKey {
    kid: String,
    key: SigningKey,
    /// The same key, as tokens are signed with it.
    signing: EncodingKey,
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

    async fn load(db: &Db) -> Result<Vec<ActiveKey>> {
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
                let key = SigningKey::from_bytes(&secret);
                let signing = encoding_key(&key).map_err(Error::internal)?;
                Ok(ActiveKey { kid: row.kid, key, signing })
            })
            .collect()
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> (&str, &EncodingKey) {
        let newest = &self.active[0];
        (&newest.kid, &newest.signing)
    }

    /// The public key of an unretired key.
    pub fn verifying(&self, kid: &str) -> Option<DecodingKey> {
        self.active.iter().find(|k| k.kid == kid).map(|k| decoding_key(&k.key.verifying_key()))
    }

    /// The public keys as JWKs.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.active
            .iter()
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: encode_public_key(&k.key.verifying_key()),
                kid: k.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect()
    }
}

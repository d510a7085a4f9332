//! The auth service's tables.

pub mod credential {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub username: String,
        pub email: String,
        pub password_hash: String,
        pub role: i32,
        pub email_verified: bool,
        pub deactivated: bool,
        pub created_at: i64,
        pub updated_at: i64,
        pub deactivated_at: Option<i64>,
        pub deactivated_by: String,
        pub deactivation_reason: String,
        /// Suspended (banned from the workspace) until then.
        pub suspended_until: Option<i64>,
    }

    impl Model {
        /// Why the account may not sign in or keep a session now, if it
        /// may not.
        pub fn barred(&self, now: i64) -> Option<colink_runtime::Error> {
            if self.deactivated {
                return Some(colink_runtime::Error::denied("this account is deactivated"));
            }
            match self.suspended_until {
                Some(until) if until > now => Some(colink_runtime::Error::denied(format!(
                    "this account is suspended until {}",
                    colink_runtime::ids::rfc3339(until)
                ))),
                _ => None,
            }
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        pub user_id: String,
        pub device_name: String,
        pub created_at: i64,
        pub last_used_at: i64,
        pub expires_at: i64,
        pub revoked_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refresh_tokens")]
    pub struct Model {
        /// SHA-256 of the token; the token itself is never stored.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        pub session_id: String,
        pub created_at: i64,
        pub expires_at: i64,
        pub used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        /// The 32-byte Ed25519 secret key.
        pub secret_key: Vec<u8>,
        pub created_at: i64,
        pub retired_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod second_factor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "second_factors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub totp_secret: Vec<u8>,
        pub confirmed_at: Option<i64>,
        pub last_step: i64,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod recovery_code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "recovery_codes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// SHA-256 of the code.
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        pub used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_challenge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_challenges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub challenge_id: String,
        pub user_id: String,
        pub device_name: String,
        pub attempts: i32,
        pub expires_at: i64,
        pub used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod mail_code {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mail_codes")]
    pub struct Model {
        /// SHA-256 of the code.
        #[sea_orm(primary_key, auto_increment = false)]
        pub code_hash: String,
        pub user_id: String,
        /// "reset" or "verify".
        pub purpose: String,
        pub email: String,
        pub created_at: i64,
        pub expires_at: i64,
        pub used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod mail_outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "mail_outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub mail_id: String,
        pub recipient: String,
        pub subject: String,
        pub body: String,
        pub attempts: i32,
        pub next_attempt_at: i64,
        pub created_at: i64,
        pub sent_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod identity_link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub issuer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub subject: String,
        pub user_id: String,
        pub created_at: i64,
        pub last_sign_in_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sso_login {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sso_logins")]
    pub struct Model {
        /// SHA-256 of the state.
        #[sea_orm(primary_key, auto_increment = false)]
        pub state_hash: String,
        pub nonce: String,
        pub code_verifier: String,
        pub redirect_uri: String,
        pub device_name: String,
        pub created_at: i64,
        pub expires_at: i64,
        pub used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod passkey {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "passkeys")]
    pub struct Model {
        /// The WebAuthn credential id, base64url.
        #[sea_orm(primary_key, auto_increment = false)]
        pub credential_id: String,
        pub user_id: String,
        pub name: String,
        /// The credential as webauthn-rs keeps it (JSON): public key, sign
        /// count, backup flags.
        pub credential: String,
        pub created_at: i64,
        pub last_used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod passkey_ceremony {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "passkey_ceremonies")]
    pub struct Model {
        /// The registration's or sign-in's id; for the second step of a
        /// password sign-in, the login challenge's.
        #[sea_orm(primary_key, auto_increment = false)]
        pub ceremony_id: String,
        /// One of `PURPOSE_*` in `passkeys.rs`.
        pub purpose: String,
        /// Whose; empty for a sign-in, whose user the passkey tells.
        pub user_id: String,
        /// A registration's passkey name.
        pub name: String,
        /// The challenge state as webauthn-rs keeps it (JSON).
        pub state: String,
        pub expires_at: i64,
        pub used_at: Option<i64>,
        /// The passkey a finished registration stored.
        pub credential_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

//! Tables of the auth service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_integer_null, blob, boolean, integer, string, string_len, text};

use crate::{index, migration_name, outbox_table};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Initial),
            Box::new(SecondFactors),
            Box::new(AccountStatus),
            Box::new(Mail),
            Box::new(Suspension),
            Box::new(SingleSignOn),
            Box::new(Passkeys),
        ]
    }
}

migration_name!(Initial, "m0001_auth_initial");

#[async_trait::async_trait]
impl MigrationTrait for Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("credentials")
                    .if_not_exists()
                    .col(string_len("user_id", 36).primary_key())
                    .col(string_len("username", 32).unique_key())
                    .col(string_len("email", 254).unique_key())
                    .col(string("password_hash"))
                    .col(integer("role"))
                    .col(boolean("email_verified"))
                    .col(boolean("deactivated"))
                    .col(big_integer("created_at"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("sessions")
                    .if_not_exists()
                    .col(string_len("session_id", 36).primary_key())
                    .col(string_len("user_id", 36))
                    .col(string_len("device_name", 128))
                    .col(big_integer("created_at"))
                    .col(big_integer("last_used_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("revoked_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("sessions_by_user", "sessions", &["user_id"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("refresh_tokens")
                    .if_not_exists()
                    .col(string_len("token_hash", 64).primary_key())
                    .col(string_len("session_id", 36))
                    .col(big_integer("created_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("refresh_tokens_by_session", "refresh_tokens", &["session_id"])).await?;
        manager
            .create_table(
                Table::create()
                    .table("signing_keys")
                    .if_not_exists()
                    .col(string_len("kid", 64).primary_key())
                    .col(blob("secret_key"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("retired_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_table(outbox_table()).await
    }
}

migration_name!(SecondFactors, "m0002_auth_second_factors");

#[async_trait::async_trait]
impl MigrationTrait for SecondFactors {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("second_factors")
                    .if_not_exists()
                    .col(string_len("user_id", 36).primary_key())
                    .col(blob("totp_secret"))
                    // NULL until the user proves their app has the secret.
                    .col(big_integer_null("confirmed_at"))
                    // The last accepted time step: older codes never work again.
                    .col(big_integer("last_step"))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("recovery_codes")
                    .if_not_exists()
                    .col(string_len("user_id", 36))
                    .col(string_len("code_hash", 64))
                    .col(big_integer_null("used_at"))
                    .primary_key(Index::create().col("user_id").col("code_hash"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("login_challenges")
                    .if_not_exists()
                    .col(string_len("challenge_id", 36).primary_key())
                    .col(string_len("user_id", 36))
                    .col(string_len("device_name", 128))
                    .col(integer("attempts"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(AccountStatus, "m0003_auth_account_status");

#[async_trait::async_trait]
impl MigrationTrait for AccountStatus {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite alters no more at a time.
        let columns = [
            big_integer_null("deactivated_at"),
            string_len("deactivated_by", 36).default("").to_owned(),
            string_len("deactivation_reason", 1000).default("").to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table("credentials").add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }
}

migration_name!(Mail, "m0004_auth_mail");

#[async_trait::async_trait]
impl MigrationTrait for Mail {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Codes mailed for a password reset or an email verification, kept
        // as their SHA-256 only.
        manager
            .create_table(
                Table::create()
                    .table("mail_codes")
                    .if_not_exists()
                    .col(string_len("code_hash", 64).primary_key())
                    .col(string_len("user_id", 36))
                    .col(string_len("purpose", 16))
                    .col(string_len("email", 254))
                    .col(big_integer("created_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("mail_codes_by_user", "mail_codes", &["user_id", "purpose"])).await?;
        // Mail waiting to be sent, written in the transaction that asks for
        // it; the body is blanked once the server took it.
        manager
            .create_table(
                Table::create()
                    .table("mail_outbox")
                    .if_not_exists()
                    .col(string_len("mail_id", 36).primary_key())
                    .col(string_len("recipient", 254))
                    .col(string_len("subject", 200))
                    .col(text("body"))
                    .col(integer("attempts"))
                    .col(big_integer("next_attempt_at"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("sent_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("mail_outbox_due", "mail_outbox", &["sent_at", "next_attempt_at"])).await
    }
}

migration_name!(Suspension, "m0005_auth_suspension");

/// Until when an account is suspended (banned from the workspace).
#[async_trait::async_trait]
impl MigrationTrait for Suspension {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("credentials")
                    .add_column(sea_orm_migration::schema::big_integer_null("suspended_until"))
                    .to_owned(),
            )
            .await
    }
}

migration_name!(SingleSignOn, "m0006_auth_single_sign_on");

#[async_trait::async_trait]
impl MigrationTrait for SingleSignOn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Which provider account is which Colink account: one link per
        // issuer and subject.
        manager
            .create_table(
                Table::create()
                    .table("identity_links")
                    .if_not_exists()
                    .col(string_len("issuer", 512))
                    .col(string_len("subject", 255))
                    .col(string_len("user_id", 36))
                    .col(big_integer("created_at"))
                    .col(big_integer("last_sign_in_at"))
                    .primary_key(Index::create().col("issuer").col("subject"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("identity_links_by_user", "identity_links", &["user_id"])).await?;
        // Sign-ins under way: what the provider hands back (the state, kept
        // as its SHA-256) and what only Colink knows (nonce, PKCE verifier).
        manager
            .create_table(
                Table::create()
                    .table("sso_logins")
                    .if_not_exists()
                    .col(string_len("state_hash", 64).primary_key())
                    .col(string_len("nonce", 64))
                    .col(string_len("code_verifier", 128))
                    .col(string_len("redirect_uri", 2048))
                    .col(string_len("device_name", 128))
                    .col(big_integer("created_at"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("sso_logins_by_expiry", "sso_logins", &["expires_at"])).await
    }
}

migration_name!(Passkeys, "m0007_auth_passkeys");

#[async_trait::async_trait]
impl MigrationTrait for Passkeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Registered passkeys: the WebAuthn credential (public key, sign
        // count, flags) as webauthn-rs keeps it, under its credential id.
        manager
            .create_table(
                Table::create()
                    .table("passkeys")
                    .if_not_exists()
                    .col(string_len("credential_id", 1400).primary_key())
                    .col(string_len("user_id", 36))
                    .col(string_len("name", 256))
                    .col(text("credential"))
                    .col(big_integer("created_at"))
                    .col(big_integer_null("last_used_at"))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("passkeys_by_user", "passkeys", &["user_id", "created_at"])).await?;
        // Registrations and sign-ins under way, with the challenge state,
        // so that any node finishes what another began.
        manager
            .create_table(
                Table::create()
                    .table("passkey_ceremonies")
                    .if_not_exists()
                    .col(string_len("ceremony_id", 36).primary_key())
                    .col(string_len("purpose", 16))
                    .col(string_len("user_id", 36))
                    .col(string_len("name", 256))
                    .col(text("state"))
                    .col(big_integer("expires_at"))
                    .col(big_integer_null("used_at"))
                    .col(string_len("credential_id", 1400))
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("passkey_ceremonies_by_expiry", "passkey_ceremonies", &["expires_at"])).await
    }
}

//! The auth service: built-in identity. Registers accounts, checks
//! passwords, issues EdDSA access tokens and rotating refresh tokens, and
//! publishes the public keys that every node verifies tokens with.

mod domain;
mod keys;
mod mail;
mod passkeys;
mod recovery;
mod roles;
mod second_factor;
mod sessions;
mod sso;
mod status;
mod store;
mod suspension;
mod throttle;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use colink_proto::auth::v1 as pb;
use colink_proto::auth::v1::auth_service_server::{AuthService as AuthRpc, AuthServiceServer};
use colink_proto::events::v1::{UserCreated, event::Payload};
use colink_proto::users::v1::GetUserRequest;
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::with_token;
use colink_runtime::config::AuthConfig;
use colink_runtime::db::Db;
use colink_runtime::ephemeral::Ephemeral;
use colink_runtime::error::duplicate_as;
use colink_runtime::events::{self, Outbox, USER_EVENTS};
use colink_runtime::ids::{new_id, now_micros, timestamp};
use colink_runtime::oidc::OpenIdProvider;
use colink_runtime::pubsub::PubSub;
use colink_runtime::request_context::RequestContext;
use colink_runtime::token::{self, Claims};
use colink_runtime::{Error, Result, caller};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use tonic::{Code, Request, Response, Status};

use crate::domain::{PasswordHashing, check_password, hash_refresh_token, new_refresh_token, validate_registration};
use crate::keys::Keys;
use crate::sessions::Which;
use crate::store::{credential, refresh_token, session};
use crate::throttle::LoginThrottle;

/// Password hashing threads at most, however many cores: each holds the
/// Argon2 working memory (19 MiB by default) for as long as the node runs.
const MAX_HASHING_THREADS: usize = 4;

/// How long `Register` waits for the new account's profile to be created.
const PROFILE_WAIT: Duration = Duration::from_secs(5);

/// The auth service's state.
pub struct AuthService {
    db: Db,
    outbox: Outbox,
    config: AuthConfig,
    hashing: PasswordHashing,
    keys: Keys,
    users: UsersServiceClient<PeerChannel>,
    /// A real hash to check unknown logins against, so that answering "no such
    /// user" takes as long as "wrong password".
    decoy_hash: Arc<str>,
    throttle: LoginThrottle,
    /// Where ended sessions are announced to every node.
    pubsub: Arc<dyn PubSub>,
    /// Sends the outbox's mail; `None` when the workspace sends no mail.
    mailer: Option<Arc<mail::Mailer>>,
    /// The OpenID provider people sign in with; `None` for built-in
    /// passwords.
    provider: Option<Arc<OpenIdProvider>>,
    /// The WebAuthn relying party passkeys are made for.
    passkeys: webauthn_rs::Webauthn,
}

/// The shared backends the auth service uses besides its database.
pub struct Backends {
    pub ephemeral: Arc<dyn Ephemeral>,
    pub pubsub: Arc<dyn PubSub>,
    /// With `[auth] mode = "oidc"`, the provider (shared with the node's
    /// token checks).
    pub provider: Option<Arc<OpenIdProvider>>,
}

impl AuthService {
    /// Loads (or creates) the signing keys.
    pub async fn new(
        db: Db,
        outbox: Outbox,
        config: AuthConfig,
        users: PeerChannel,
        backends: Backends,
    ) -> Result<Self> {
        let Backends { ephemeral, pubsub, provider } = backends;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_HASHING_THREADS);
        let hashing = PasswordHashing::new(&config, workers).map_err(Error::internal)?;
        let passkeys = passkeys::relying_party(&config.passkeys).map_err(Error::internal)?;
        let keys = Keys::load_or_create(&db).await?;
        let decoy_hash = hashing.hash("decoy password for unknown logins".into()).await.map_err(Error::internal)?;
        let mailer = mail::Mailer::new(&config.mail).map_err(Error::internal)?;
        if let Some(mailer) = &mailer {
            tokio::spawn(mailer.clone().relay(db.clone()));
        }
        Ok(Self {
            db,
            outbox,
            config,
            hashing,
            keys,
            users: UsersServiceClient::new(users),
            decoy_hash: decoy_hash.into(),
            throttle: LoginThrottle::new(ephemeral),
            pubsub,
            mailer,
            provider,
            passkeys,
        })
    }

    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }

    async fn hash_password(&self, password: String) -> Result<String> {
        self.hashing.hash(password).await.map_err(Error::internal)
    }

    async fn password_matches(&self, password: String, stored: String) -> Result<bool> {
        self.hashing.verify(password, stored).await.map_err(Error::internal)
    }

    /// Creates a session with its first refresh token, inside `txn`.
    async fn open_session<C: sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        account: &credential::Model,
        device_name: &str,
    ) -> Result<pb::TokenPair> {
        let now = now_micros();
        let refresh_ttl = micros(self.config.refresh_token_ttl_secs);
        let session_id = new_id();
        session::ActiveModel {
            session_id: Set(session_id.clone()),
            user_id: Set(account.user_id.clone()),
            device_name: Set(device_name.chars().take(128).collect()),
            created_at: Set(now),
            last_used_at: Set(now),
            expires_at: Set(now + refresh_ttl),
            revoked_at: Set(None),
        }
        .insert(txn)
        .await?;
        self.issue_tokens(txn, account, &session_id, now).await
    }

    /// Stores a new refresh token for a session and signs an access token.
    async fn issue_tokens<C: sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        account: &credential::Model,
        session_id: &str,
        now: i64,
    ) -> Result<pb::TokenPair> {
        let refresh = new_refresh_token().map_err(Error::internal)?;
        let refresh_expires = now + micros(self.config.refresh_token_ttl_secs);
        refresh_token::ActiveModel {
            token_hash: Set(hash_refresh_token(&refresh)),
            session_id: Set(session_id.to_string()),
            created_at: Set(now),
            expires_at: Set(refresh_expires),
            used_at: Set(None),
        }
        .insert(txn)
        .await?;
        let now_secs = now / 1_000_000;
        let exp = now_secs + self.config.access_token_ttl_secs as i64;
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: account.user_id.clone(),
            sid: session_id.to_string(),
            usr: account.username.clone(),
            role: role_name(account.role).to_string(),
            iat: now_secs,
            exp,
        };
        let (kid, key) = self.keys.current();
        Ok(pb::TokenPair {
            access_token: token::sign(&claims, kid, key).map_err(Error::internal)?,
            access_token_expires_at: Some(timestamp(exp * 1_000_000)),
            refresh_token: refresh,
            refresh_token_expires_at: Some(timestamp(refresh_expires)),
            token_type: "Bearer".into(),
        })
    }

    async fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        self.require_passwords()?;
        let new = validate_registration(&req.username, &req.email, &req.password, &req.display_name)
            .map_err(Error::InvalidArgument)?;
        self.ensure_available(&new.username, &new.email).await?;
        let password_hash = self.hash_password(new.password.clone()).await?;
        let txn = self.db.writer.begin().await?;
        let role = if is_first_account(&txn).await? { pb::Role::Admin } else { pb::Role::Member };
        let account =
            NewAccount { username: new.username, email: new.email, password_hash, role, email_verified: false }
                .insert(&txn, &new.display_name, "username or email is already taken")
                .await?;
        let tokens = self.open_session(&txn, &account, "").await?;
        let mailing = self.queue_verification(&txn, &account).await?;
        txn.commit().await?;
        if let (true, Some(mailer)) = (mailing, &self.mailer) {
            mailer.wake();
        }
        // Let the profile exist before the client's next call; if the event
        // log is slow the profile follows shortly after.
        if !self.profile_exists(&account.user_id, &tokens.access_token).await {
            tracing::warn!(user_id = %account.user_id, "user.created not yet applied by users");
        }
        tracing::info!(user_id = %account.user_id, username = %account.username, "account registered");
        Ok(pb::RegisterResponse { account: Some(to_account(&account, false)), tokens: Some(tokens) })
    }

    /// Waits, up to `PROFILE_WAIT`, until the users service has applied the
    /// new account's `user.created`: at once with the in-process event log,
    /// after a Kafka round trip with the distributed one.
    async fn profile_exists(&self, user_id: &str, token: &str) -> bool {
        let deadline = tokio::time::Instant::now() + PROFILE_WAIT;
        if !self.outbox.flush(&self.db, PROFILE_WAIT).await.unwrap_or(false) {
            return false;
        }
        let mut pause = Duration::from_millis(10);
        loop {
            let request = with_token(token, GetUserRequest { user_id: user_id.to_string() });
            match self.users.clone().get_user(request).await {
                Ok(_) => return true,
                Err(status) if status.code() != Code::NotFound => {
                    tracing::warn!(%status, "cannot ask users for the new profile");
                    return false;
                }
                Err(_) if tokio::time::Instant::now() + pause > deadline => return false,
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    async fn ensure_available(&self, username: &str, email: &str) -> Result<()> {
        let taken = credential::Entity::find()
            .filter(
                Condition::any()
                    .add(credential::Column::Username.eq(username))
                    .add(credential::Column::Email.eq(email)),
            )
            .all(&self.db.reader)
            .await?;
        let mut v = colink_runtime::error::Violations::default();
        if taken.iter().any(|c| c.username == username) {
            v.add("username", "is already taken");
        }
        if taken.iter().any(|c| c.email == email) {
            v.add("email", "is already registered");
        }
        if v.is_empty() { Ok(()) } else { Err(Error::AlreadyExists(v.to_string())) }
    }

    async fn login(&self, req: pb::LoginRequest, address: Option<String>) -> Result<pb::LoginResponse> {
        self.require_passwords()?;
        let login = req.login.trim().to_lowercase();
        let mut v = colink_runtime::error::Violations::default();
        if login.is_empty() {
            v.add("login", "is required");
        }
        if req.password.is_empty() {
            v.add("password", "is required");
        }
        if req.device_name.chars().count() > 128 {
            v.add("device_name", "must be at most 128 characters long");
        }
        v.finish()?;
        let found = credential::Entity::find()
            .filter(
                Condition::any().add(credential::Column::Username.eq(&login)).add(credential::Column::Email.eq(&login)),
            )
            .one(&self.db.reader)
            .await?;
        // Known or not, an account is throttled under the user id if the
        // login names one, else under what was typed.
        let throttled_as = found.as_ref().map_or(login.as_str(), |c| c.user_id.as_str());
        self.throttle.check(throttled_as, address.as_deref()).await?;
        // An account made by single sign-on has no password: it is
        // checked against the decoy too, and never matches.
        let has_password = found.as_ref().is_some_and(|c| !c.password_hash.is_empty());
        let stored = match &found {
            Some(c) if has_password => c.password_hash.clone(),
            _ => self.decoy_hash.to_string(),
        };
        let matches = self.password_matches(req.password, stored).await?;
        let account = match found {
            Some(account) if matches && has_password => account,
            _ => {
                self.throttle.failed(throttled_as, address.as_deref()).await;
                return Err(Error::Unauthenticated("invalid login or password".into()));
            }
        };
        if let Some(barred) = account.barred(now_micros()) {
            return Err(barred);
        }
        if self.second_factor_enabled(&self.db.reader, &account.user_id).await? {
            let challenge = self.challenge(&account.user_id, &req.device_name).await?;
            return Ok(pb::LoginResponse {
                result: Some(pb::login_response::Result::Challenge(challenge)),
                account: Some(to_account(&account, true)),
            });
        }
        let txn = self.db.writer.begin().await?;
        let tokens = self.open_session(&txn, &account, &req.device_name).await?;
        txn.commit().await?;
        Ok(pb::LoginResponse {
            result: Some(pb::login_response::Result::Tokens(tokens)),
            account: Some(to_account(&account, false)),
        })
    }

    async fn refresh(&self, req: pb::RefreshRequest) -> Result<pb::RefreshResponse> {
        if req.refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        let rejected = || Error::Unauthenticated("invalid or expired refresh token".into());
        let hash = hash_refresh_token(&req.refresh_token);
        let now = now_micros();
        let txn = self.db.writer.begin().await?;
        let Some(presented) = refresh_token::Entity::find_by_id(hash.clone()).one(&txn).await? else {
            return Err(rejected());
        };
        let Some(session) = session::Entity::find_by_id(presented.session_id.clone()).one(&txn).await? else {
            return Err(rejected());
        };
        if session.revoked_at.is_some() || session.expires_at <= now || presented.expires_at <= now {
            return Err(rejected());
        }
        // Spend the token; only one presenter can win this update.
        let spent = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(hash))
            .filter(refresh_token::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if spent.rows_affected != 1 {
            // A rotated token came back: it was stolen or replayed. End the
            // session so neither party can continue with it.
            let ended = self.end_sessions(&txn, &session.user_id, Which::Only(&session.session_id)).await?;
            txn.commit().await?;
            self.announce_ended(&ended).await;
            tracing::warn!(session_id = %session.session_id, user_id = %session.user_id, "refresh token reuse; session revoked");
            return Err(Error::Unauthenticated("refresh token was already used; the session has been revoked".into()));
        }
        let Some(account) = credential::Entity::find_by_id(session.user_id.clone()).one(&txn).await? else {
            return Err(rejected());
        };
        if let Some(barred) = account.barred(now_micros()) {
            return Err(barred);
        }
        session::Entity::update_many()
            .col_expr(session::Column::LastUsedAt, Expr::value(now))
            .filter(session::Column::SessionId.eq(&session.session_id))
            .exec(&txn)
            .await?;
        let tokens = self.issue_tokens(&txn, &account, &session.session_id, now).await?;
        txn.commit().await?;
        Ok(pb::RefreshResponse { tokens: Some(tokens) })
    }

    /// Ends sessions of a user and announces it; returns how many ended.
    async fn revoke_sessions(&self, user_id: &str, which: Which<'_>) -> Result<usize> {
        let ended = self.end_sessions(&self.db.writer, user_id, which).await?;
        self.announce_ended(&ended).await;
        Ok(ended.len())
    }

    async fn change_password(&self, user_id: &str, session_id: &str, req: pb::ChangePasswordRequest) -> Result<()> {
        self.require_passwords()?;
        let mut v = colink_runtime::error::Violations::default();
        if req.current_password.is_empty() {
            v.add("current_password", "is required");
        }
        v.check(check_password("new_password", &req.new_password));
        v.finish()?;
        let account = credential::Entity::find_by_id(user_id.to_string())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found("account not found"))?;
        if !self.password_matches(req.current_password, account.password_hash.clone()).await? {
            return Err(Error::denied("current_password is wrong"));
        }
        let hash = self.hash_password(req.new_password).await?;
        credential::Entity::update_many()
            .col_expr(credential::Column::PasswordHash, Expr::value(hash))
            .col_expr(credential::Column::UpdatedAt, Expr::value(now_micros()))
            .filter(credential::Column::UserId.eq(user_id))
            .exec(&self.db.writer)
            .await?;
        self.revoke_sessions(user_id, Which::AllBut(session_id)).await?;
        Ok(())
    }

    async fn list_sessions(&self, user_id: &str, current: &str) -> Result<pb::ListSessionsResponse> {
        let now = now_micros();
        let sessions = session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::ExpiresAt.gt(now))
            .order_by_desc(session::Column::CreatedAt)
            .all(&self.db.reader)
            .await?;
        Ok(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::Session {
                    current: s.session_id == current,
                    session_id: s.session_id,
                    device_name: s.device_name,
                    create_time: Some(timestamp(s.created_at)),
                    last_used_time: Some(timestamp(s.last_used_at)),
                })
                .collect(),
        })
    }
}

/// Whether the workspace has no account yet: its first administers it.
async fn is_first_account<C: sea_orm::ConnectionTrait>(txn: &C) -> Result<bool> {
    Ok(credential::Entity::find().count(txn).await? == 0)
}

/// An account about to be made, by registration or single sign-on.
struct NewAccount {
    username: String,
    email: String,
    /// Empty for an account that signs in elsewhere only.
    password_hash: String,
    role: pb::Role,
    email_verified: bool,
}

impl NewAccount {
    /// Stores the account, with the `user.created` that makes its profile,
    /// inside `txn`; ALREADY_EXISTS saying `taken` when the username or
    /// email is.
    async fn insert<C: sea_orm::ConnectionTrait>(
        self,
        txn: &C,
        display_name: &str,
        taken: &str,
    ) -> Result<credential::Model> {
        let now = now_micros();
        let account = credential::ActiveModel {
            user_id: Set(new_id()),
            username: Set(self.username),
            email: Set(self.email),
            password_hash: Set(self.password_hash),
            role: Set(self.role as i32),
            email_verified: Set(self.email_verified),
            deactivated: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            deactivated_at: Set(None),
            deactivated_by: Set(String::new()),
            deactivation_reason: Set(String::new()),
            suspended_until: Set(None),
        }
        .insert(txn)
        .await
        .map_err(duplicate_as(taken))?;
        let display_name = if display_name.is_empty() { &account.username } else { display_name };
        let event = events::event(
            "user.created",
            &account.user_id,
            Payload::UserCreated(UserCreated {
                user_id: account.user_id.clone(),
                username: account.username.clone(),
                display_name: display_name.chars().take(64).collect(),
            }),
        );
        events::enqueue(txn, USER_EVENTS, &account.user_id, &event).await?;
        Ok(account)
    }
}

fn micros(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 2_000_000) * 1_000_000
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Moderator) => "moderator",
        Ok(pb::Role::Guest) => "guest",
        _ => "member",
    }
}

fn to_account(c: &credential::Model, second_factor_enabled: bool) -> pb::Account {
    pb::Account {
        user_id: c.user_id.clone(),
        username: c.username.clone(),
        email: c.email.clone(),
        role: c.role,
        email_verified: c.email_verified,
        second_factor_enabled,
        create_time: Some(timestamp(c.created_at)),
        deactivated: c.deactivated,
        deactivate_time: c.deactivated_at.filter(|_| c.deactivated).map(timestamp),
        deactivated_by_id: if c.deactivated { c.deactivated_by.clone() } else { String::new() },
        deactivation_reason: if c.deactivated { c.deactivation_reason.clone() } else { String::new() },
        suspended_until: c.suspended_until.filter(|until| *until > now_micros()).map(timestamp),
    }
}

#[tonic::async_trait]
impl AuthRpc for AuthService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let address = client_address();
        let limit = self.config.registrations_per_address_per_hour;
        self.throttle.per_address_hourly("register", address.as_deref(), limit).await?;
        Ok(Response::new(AuthService::register(self, request.into_inner()).await?))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let address = client_address();
        Ok(Response::new(AuthService::login(self, request.into_inner(), address).await?))
    }

    async fn verify_second_factor(
        &self,
        request: Request<pb::VerifySecondFactorRequest>,
    ) -> Result<Response<pb::VerifySecondFactorResponse>, Status> {
        Ok(Response::new(AuthService::verify_second_factor(self, request.into_inner()).await?))
    }

    async fn get_sign_in_options(
        &self,
        _request: Request<pb::GetSignInOptionsRequest>,
    ) -> Result<Response<pb::GetSignInOptionsResponse>, Status> {
        Ok(Response::new(self.sign_in_options()))
    }

    async fn begin_single_sign_on(
        &self,
        request: Request<pb::BeginSingleSignOnRequest>,
    ) -> Result<Response<pb::BeginSingleSignOnResponse>, Status> {
        Ok(Response::new(AuthService::begin_single_sign_on(self, request.get_ref()).await?))
    }

    async fn finish_single_sign_on(
        &self,
        request: Request<pb::FinishSingleSignOnRequest>,
    ) -> Result<Response<pb::FinishSingleSignOnResponse>, Status> {
        Ok(Response::new(AuthService::finish_single_sign_on(self, request.get_ref()).await?))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::RefreshResponse>, Status> {
        Ok(Response::new(AuthService::refresh(self, request.into_inner()).await?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&request)?;
        let which = if request.get_ref().all_sessions { Which::All } else { Which::Only(&caller.session_id) };
        let ended = self.revoke_sessions(&caller.user_id, which).await?;
        Ok(Response::new(pb::LogoutResponse { sessions_ended: i32::try_from(ended).unwrap_or(i32::MAX) }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse { keys: self.keys.jwks() }))
    }

    async fn set_account_role(
        &self,
        request: Request<pb::SetAccountRoleRequest>,
    ) -> Result<Response<pb::SetAccountRoleResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::set_account_role(self, caller, request.get_ref()).await?))
    }

    async fn set_account_status(
        &self,
        request: Request<pb::SetAccountStatusRequest>,
    ) -> Result<Response<pb::SetAccountStatusResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::set_account_status(self, caller, request.get_ref()).await?))
    }

    async fn set_account_suspension(
        &self,
        request: Request<pb::SetAccountSuspensionRequest>,
    ) -> Result<Response<pb::SetAccountSuspensionResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::set_account_suspension(self, caller, request.get_ref()).await?))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::get_account(self, caller, &request.get_ref().user_id).await?))
    }

    async fn check_session(
        &self,
        request: Request<pb::CheckSessionRequest>,
    ) -> Result<Response<pb::CheckSessionResponse>, Status> {
        Ok(Response::new(AuthService::check_session(self, &request.get_ref().access_token).await?))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = caller(&request)?.clone();
        AuthService::change_password(self, &caller.user_id, &caller.session_id, request.into_inner()).await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::list_sessions(self, &caller.user_id, &caller.session_id).await?))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&request)?;
        let session_id =
            colink_runtime::ids::parse_id("session_id", &request.get_ref().session_id).map_err(Error::from)?;
        if self.revoke_sessions(&caller.user_id, Which::Only(&session_id)).await? == 0 {
            return Err(Error::not_found("no such active session").into());
        }
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::enroll_totp(self, caller).await?))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::confirm_totp(self, caller, &request.get_ref().code).await?))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let caller = caller(&request)?;
        AuthService::disable_totp(self, caller, &request.get_ref().code).await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn begin_passkey_registration(
        &self,
        request: Request<pb::BeginPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::BeginPasskeyRegistrationResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::begin_passkey_registration(self, caller, request.get_ref()).await?))
    }

    async fn finish_passkey_registration(
        &self,
        request: Request<pb::FinishPasskeyRegistrationRequest>,
    ) -> Result<Response<pb::FinishPasskeyRegistrationResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::finish_passkey_registration(self, caller, request.get_ref()).await?))
    }

    async fn list_passkeys(
        &self,
        request: Request<pb::ListPasskeysRequest>,
    ) -> Result<Response<pb::ListPasskeysResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(AuthService::list_passkeys(self, caller).await?))
    }

    async fn delete_passkey(
        &self,
        request: Request<pb::DeletePasskeyRequest>,
    ) -> Result<Response<pb::DeletePasskeyResponse>, Status> {
        let caller = caller(&request)?;
        AuthService::delete_passkey(self, caller, &request.get_ref().credential_id).await?;
        Ok(Response::new(pb::DeletePasskeyResponse {}))
    }

    async fn begin_passkey_sign_in(
        &self,
        _request: Request<pb::BeginPasskeySignInRequest>,
    ) -> Result<Response<pb::BeginPasskeySignInResponse>, Status> {
        Ok(Response::new(AuthService::begin_passkey_sign_in(self).await?))
    }

    async fn finish_passkey_sign_in(
        &self,
        request: Request<pb::FinishPasskeySignInRequest>,
    ) -> Result<Response<pb::FinishPasskeySignInResponse>, Status> {
        let address = client_address();
        Ok(Response::new(AuthService::finish_passkey_sign_in(self, request.get_ref(), address.as_deref()).await?))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        AuthService::request_password_reset(self, request.get_ref()).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        AuthService::reset_password(self, request.into_inner()).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let caller = caller(&request)?;
        AuthService::verify_email(self, caller, &request.get_ref().code).await?;
        Ok(Response::new(pb::VerifyEmailResponse {}))
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        let caller = caller(&request)?;
        AuthService::request_email_verification(self, caller).await?;
        Ok(Response::new(pb::RequestEmailVerificationResponse {}))
    }
}

/// The address the request being handled came from (see
/// `RequestContext`: the peer's, or behind a trusted proxy the one it saw).
pub(crate) fn client_address() -> Option<String> {
    RequestContext::current().map(|c| c.client_ip.to_string()).filter(|ip| !ip.is_empty())
}

//! Single sign-on against a real OpenID provider (oidc-provider, standing
//! in for Keycloak): sign-in with the authorization-code flow and PKCE,
//! accounts made and mapped from claims, the provider's access tokens
//! accepted (RS256, ES256, EdDSA) or refused (wrong audience, expired), key
//! rotation, and deactivation reaching provider tokens.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_proto::admin::v1::DeactivateUserRequest;
use colink_proto::auth::v1::{
    BeginPasskeySignInRequest, BeginSingleSignOnRequest, EnrollTotpRequest, FinishSingleSignOnRequest,
    FinishSingleSignOnResponse, GetAccountRequest, GetSignInOptionsRequest, LoginRequest, RegisterRequest,
    RequestPasswordResetRequest, Role,
};
use colink_proto::users::v1::GetMeRequest;
use colink_runtime::clients::with_token;
use colink_runtime::config::{AuthMode, Config};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::cluster::server;
use crate::helpers::{TestApp, assert_code, assert_invalid, fresh_postgres};
use crate::servers::{Server, eventually};

const REDIRECT: &str = "http://127.0.0.1:9/sso/callback";
const CLI_REDIRECT: &str = "http://127.0.0.1/callback";

/// A person's browser at the provider: follows its redirects by hand,
/// keeps its cookies, and fills in its development login form (any login
/// name, any password).
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    issuer: String,
}

impl Browser {
    fn new(provider: &Server) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookies: HashMap::new(), issuer: format!("http://127.0.0.1:{}", provider.port) }
    }

    /// Signs in at the provider from `authorization_url` (unless this
    /// browser is signed in there already) and returns where it sends the
    /// browser back to.
    async fn sign_in(&mut self, authorization_url: &str, login: &str) -> String {
        let interaction = self.go(self.http.get(authorization_url)).await;
        if !interaction.starts_with(&self.issuer) {
            return interaction;
        }
        assert!(interaction.contains("/interaction/"), "{interaction}");
        let form = [("prompt", "login"), ("login", login), ("password", "any")];
        let resume = self.go(self.http.post(&interaction).form(&form)).await;
        self.go(self.http.get(&resume)).await
    }

    /// Sends a request with the cookies, keeps the new ones, and returns
    /// the redirect's target.
    async fn go(&mut self, request: reqwest::RequestBuilder) -> String {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = request.header("cookie", cookie).send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        assert!(response.status().is_redirection(), "{}: {:?}", response.status(), response.text().await);
        let location = response.headers()["location"].to_str().unwrap().to_string();
        if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location }
    }

    /// A provider access token for `resource` (which picks its audience,
    /// algorithm and lifetime), as a command-line client gets one: its own
    /// authorization-code flow with PKCE.
    async fn access_token(&mut self, login: &str, resource: &str) -> String {
        let verifier = URL_SAFE_NO_PAD.encode([7_u8; 32]);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let url = format!(
            "{}/auth?client_id=colink-cli&response_type=code&scope=openid&redirect_uri={CLI_REDIRECT}\
             &code_challenge={challenge}&code_challenge_method=S256&state=s&resource={resource}",
            self.issuer
        );
        let back = self.sign_in(&url, login).await;
        let code = query_value(&back, "code");
        let form = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CLI_REDIRECT),
            ("client_id", "colink-cli"),
            ("code_verifier", &verifier),
            ("resource", resource),
        ];
        let answer: serde_json::Value =
            self.http.post(format!("{}/token", self.issuer)).form(&form).send().await.unwrap().json().await.unwrap();
        answer["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {answer}")).to_string()
    }
}

fn query_value(url: &str, key: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {url}"));
    percent_decode(raw)
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A node signing people in with the provider, roles from Keycloak's
/// realm roles, and one second of leeway.
async fn sso_node(provider: &Server) -> TestApp {
    TestApp::spawn_with(signing_in_at(provider)).await
}

fn signing_in_at(provider: &Server) -> impl FnOnce(&mut Config) {
    let issuer = format!("http://127.0.0.1:{}", provider.port);
    move |c| {
        c.auth.mode = AuthMode::Oidc;
        c.auth.oidc.issuer = issuer;
        c.auth.oidc.client_id = "colink".into();
        c.auth.oidc.client_secret = "colink-secret".into();
        c.auth.oidc.redirect_urls = vec![REDIRECT.into()];
        c.auth.oidc.role_claim = "realm_access.roles".into();
        c.auth.oidc.admin_roles = vec!["colink-admin".into()];
        c.auth.oidc.moderator_roles = vec!["colink-moderator".into()];
        c.auth.oidc.guest_roles = vec!["colink-guest".into()];
        c.auth.oidc.leeway_secs = 1;
        c.auth.oidc.display_name = "Acme SSO".into();
    }
}

async fn sign_in(app: &TestApp, browser: &mut Browser, login: &str) -> FinishSingleSignOnResponse {
    let begun = app
        .auth()
        .begin_single_sign_on(BeginSingleSignOnRequest { redirect_uri: String::new(), device_name: "tests".into() })
        .await
        .unwrap()
        .into_inner();
    let back = browser.sign_in(&begun.authorization_url, login).await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_value(&back, "state"), begun.state);
    let finish = FinishSingleSignOnRequest { state: begun.state.clone(), code: query_value(&back, "code") };
    let done = app.auth().finish_single_sign_on(finish.clone()).await.unwrap().into_inner();
    // A state works once.
    assert_invalid(app.auth().finish_single_sign_on(finish).await, "state");
    done
}

#[tokio::test]
#[ignore = "needs oidc-provider: set COLINK_TEST_OIDC (the full suite does)"]
async fn people_sign_in_with_an_openid_provider_and_its_tokens_work_everywhere() {
    let mut provider = Server::oidc(1, REDIRECT).await;
    let app = sso_node(&provider).await;
    let mut browser = Browser::new(&provider);

    // The workspace says how to sign in; passwords are off.
    let options = app.auth().get_sign_in_options(GetSignInOptionsRequest {}).await.unwrap().into_inner();
    assert!(options.single_sign_on && !options.password, "{options:?}");
    assert_eq!(options.single_sign_on_name, "Acme SSO");
    let register = RegisterRequest {
        username: "mallory".into(),
        email: "mallory@example.com".into(),
        password: "correct horse battery".into(),
        display_name: String::new(),
    };
    assert_code(app.auth().register(register).await, Code::FailedPrecondition);
    let login = LoginRequest { login: "ada".into(), password: "x".into(), device_name: String::new() };
    assert_code(app.auth().login(login).await, Code::FailedPrecondition);
    let reset = RequestPasswordResetRequest { email: "ada@example.test".into() };
    assert_code(app.auth().request_password_reset(reset).await, Code::FailedPrecondition);
    // Passkeys too are the provider's business.
    assert!(!options.passkeys && options.passkey_rp_id.is_empty(), "{options:?}");
    let passkey = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await;
    assert_code(passkey, Code::FailedPrecondition);

    // Bad input names its field and changes nothing.
    let elsewhere =
        BeginSingleSignOnRequest { redirect_uri: "https://evil.example/cb".into(), device_name: String::new() };
    assert_invalid(app.auth().begin_single_sign_on(elsewhere).await, "redirect_uri");
    let unknown = FinishSingleSignOnRequest { state: "made-up".into(), code: "c".into() };
    assert_invalid(app.auth().finish_single_sign_on(unknown).await, "state");
    assert_invalid(app.auth().finish_single_sign_on(FinishSingleSignOnRequest::default()).await, "code");

    // The first account administers the workspace; later ones get the role
    // their provider roles give, and their name and email from the claims.
    let ada = sign_in(&app, &mut browser, "ada").await;
    assert!(ada.created);
    assert_eq!(ada.account.as_ref().unwrap().role, Role::Admin as i32);
    let mut alice_browser = Browser::new(&provider);
    let alice = sign_in(&app, &mut alice_browser, "alice").await;
    let account = alice.account.clone().unwrap();
    assert!(alice.created);
    assert_eq!((account.username.as_str(), account.email.as_str()), ("alice", "alice@example.test"));
    assert_eq!(account.role, Role::Member as i32);
    assert!(account.email_verified);
    let alice_token = alice.tokens.as_ref().unwrap().access_token.clone();
    let me = app.users().get_me(with_token(&alice_token, GetMeRequest {})).await.unwrap().into_inner();
    assert_eq!(me.user.unwrap().display_name, "Alice");
    // Second factors are the provider's to ask for.
    assert_code(app.auth().enroll_totp(with_token(&alice_token, EnrollTotpRequest {})).await, Code::FailedPrecondition);
    let moderator = sign_in(&app, &mut Browser::new(&provider), "mod-mia").await;
    assert_eq!(moderator.account.unwrap().role, Role::Moderator as i32);
    let guest = sign_in(&app, &mut Browser::new(&provider), "guest-gus").await;
    assert_eq!(guest.account.unwrap().role, Role::Guest as i32);
    // Signing in again finds the same account.
    let again = sign_in(&app, &mut Browser::new(&provider), "alice").await;
    assert!(!again.created);
    assert_eq!(again.account.unwrap().user_id, account.user_id);
    // The provider gives ada no admin role, yet cannot take the workspace's
    // last admin away.
    let ada_again = sign_in(&app, &mut Browser::new(&provider), "ada").await;
    assert_eq!(ada_again.account.unwrap().role, Role::Admin as i32);

    // A code the provider never gave is refused.
    let begun = app.auth().begin_single_sign_on(BeginSingleSignOnRequest::default()).await.unwrap().into_inner();
    let forged = FinishSingleSignOnRequest { state: begun.state, code: "not-a-code".into() };
    assert_code(app.auth().finish_single_sign_on(forged).await, Code::Unauthenticated);

    // The provider's own access tokens work on every call, whichever
    // algorithm signs them, and name the same account.
    for resource in ["urn:colink:rs256", "urn:colink:es256", "urn:colink:eddsa"] {
        let token = alice_browser.access_token("alice", resource).await;
        let me = app.users().get_me(with_token(&token, GetMeRequest {})).await;
        assert_eq!(me.unwrap().into_inner().user.unwrap().user_id, account.user_id, "{resource}");
    }
    // A token for another audience is refused, and so is one past its
    // expiry (plus the leeway).
    let foreign = alice_browser.access_token("alice", "urn:other").await;
    let refused = assert_code(app.users().get_me(with_token(&foreign, GetMeRequest {})).await, Code::Unauthenticated);
    assert!(refused.message().contains("audience"), "{refused:?}");
    let short = alice_browser.access_token("alice", "urn:colink:short").await;
    app.users().get_me(with_token(&short, GetMeRequest {})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = assert_code(app.users().get_me(with_token(&short, GetMeRequest {})).await, Code::Unauthenticated);
    assert!(refused.message().contains("expired"), "{refused:?}");

    // Someone first seen through an access token gets an account with the
    // role the token's claims give.
    let mo = Browser::new(&provider).access_token("mod-moe", "urn:colink:es256").await;
    let by_moe = GetAccountRequest { user_id: account.user_id.clone() };
    let seen = app.auth().get_account(with_token(&mo, by_moe.clone())).await.unwrap().into_inner();
    assert_eq!(seen.account.unwrap().username, "alice", "a moderator may look up accounts");
    assert_code(app.auth().get_account(with_token(&alice_token, by_moe)).await, Code::PermissionDenied);

    // The provider rotates its keys: new tokens are signed by keys the
    // node has never seen, and work.
    provider.rotate_keys(2).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let rotated = Browser::new(&provider).access_token("alice", "urn:colink:es256").await;
    assert!(rotated != foreign);
    let me = app.users().get_me(with_token(&rotated, GetMeRequest {})).await;
    assert_eq!(me.unwrap().into_inner().user.unwrap().user_id, account.user_id);

    // Deactivating the account stops its provider tokens at once too.
    let ada_token = ada.tokens.unwrap().access_token;
    let deactivate = DeactivateUserRequest {
        user_id: account.user_id.clone(),
        reason: "left the company".into(),
        idempotency_key: String::new(),
    };
    app.admin().deactivate_user(with_token(&ada_token, deactivate)).await.unwrap();
    eventually(Duration::from_secs(1), "the provider token to stop working", || async {
        let me = app.users().get_me(with_token(&rotated, GetMeRequest {})).await;
        (me.err()?.code() == Code::Unauthenticated).then_some(())
    })
    .await;
    assert_code(app.users().get_me(with_token(&alice_token, GetMeRequest {})).await, Code::Unauthenticated);
}

#[tokio::test]
#[ignore = "needs oidc-provider, PostgreSQL and Redis: set COLINK_TEST_OIDC, COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn single_sign_on_holds_across_nodes() {
    let provider = Server::oidc(1, REDIRECT).await;
    let database = fresh_postgres(&server("COLINK_TEST_POSTGRES")).await;
    let redis = server("COLINK_TEST_REDIS");
    let node = |database: String, redis: String| {
        let sso = signing_in_at(&provider);
        TestApp::spawn_with(move |c| {
            sso(c);
            c.database.url = database;
            c.pubsub.url = redis;
        })
    };
    let (a, b) = (node(database.clone(), redis.clone()).await, node(database, redis).await);

    // A sign-in begun on one node finishes on the other.
    let ada = sign_in(&a, &mut Browser::new(&provider), "ada").await;
    let begun = b.auth().begin_single_sign_on(BeginSingleSignOnRequest::default()).await.unwrap().into_inner();
    let mut browser = Browser::new(&provider);
    let back = browser.sign_in(&begun.authorization_url, "alice").await;
    let finish = FinishSingleSignOnRequest { state: begun.state, code: query_value(&back, "code") };
    let alice = a.auth().finish_single_sign_on(finish).await.unwrap().into_inner().account.unwrap();

    // The provider's token works on both nodes and names one account.
    let token = browser.access_token("alice", "urn:colink:eddsa").await;
    for app in [&a, &b] {
        let me = app.users().get_me(with_token(&token, GetMeRequest {})).await.unwrap().into_inner();
        assert_eq!(me.user.unwrap().user_id, alice.user_id);
    }
    // Deactivated through node A, the token stops on node B within a second.
    let deactivate =
        DeactivateUserRequest { user_id: alice.user_id, reason: "left".into(), idempotency_key: String::new() };
    a.admin().deactivate_user(with_token(&ada.tokens.unwrap().access_token, deactivate)).await.unwrap();
    eventually(Duration::from_secs(1), "the provider token to stop on the other node", || async {
        let me = b.users().get_me(with_token(&token, GetMeRequest {})).await;
        (me.err()?.code() == Code::Unauthenticated).then_some(())
    })
    .await;
}

#[tokio::test]
async fn without_a_provider_single_sign_on_is_refused_and_passwords_work() {
    let app = TestApp::spawn().await;
    let options = app.auth().get_sign_in_options(GetSignInOptionsRequest {}).await.unwrap().into_inner();
    assert!(options.password && !options.single_sign_on, "{options:?}");
    assert_code(app.auth().begin_single_sign_on(BeginSingleSignOnRequest::default()).await, Code::FailedPrecondition);
    let finish = FinishSingleSignOnRequest { state: "s".into(), code: "c".into() };
    assert_code(app.auth().finish_single_sign_on(finish).await, Code::FailedPrecondition);
    app.register("alice").await;
}

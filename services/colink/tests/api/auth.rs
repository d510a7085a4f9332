use colink_proto::auth::v1::{
    ChangePasswordRequest, GetJwksRequest, ListSessionsRequest, LoginRequest, LogoutRequest, RefreshRequest,
    RegisterRequest, Role, login_response,
};
use colink_proto::realtime::v1::SubscribeRequest;
use colink_proto::users::v1::GetMeRequest;
use colink_runtime::clients::with_token;
use tonic::Code;

use crate::helpers::{TestApp, assert_code};

fn login(login: &str, password: &str) -> LoginRequest {
    LoginRequest { login: login.into(), password: password.into(), device_name: "tests".into() }
}

#[tokio::test]
async fn first_account_administers_the_workspace_and_others_are_members() {
    let app = TestApp::spawn().await;
    let admin = app.register("alice").await;
    let member = app
        .auth()
        .register(RegisterRequest {
            username: "Bob".into(),
            email: "BOB@Example.com".into(),
            password: "correct horse battery".into(),
            display_name: "Bob B.".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(member.role, Role::Member as i32);
    assert_eq!(member.username, "bob");
    assert_eq!(member.email, "bob@example.com");
    let me = app.users().get_me(admin.req(GetMeRequest {})).await.unwrap().into_inner().user.unwrap();
    assert_eq!(me.username, "alice");
    let bob = app.auth().login(login("bob", "correct horse battery")).await.unwrap().into_inner();
    assert_eq!(bob.account.unwrap().role, Role::Member as i32);
}

#[tokio::test]
async fn taken_usernames_and_emails_are_refused() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    for (username, email) in [("alice", "other@example.com"), ("other", "ALICE@example.com")] {
        let result = app
            .auth()
            .register(RegisterRequest {
                username: username.into(),
                email: email.into(),
                password: "correct horse battery".into(),
                display_name: String::new(),
            })
            .await;
        assert_code(result, Code::AlreadyExists);
    }
}

#[tokio::test]
async fn login_accepts_username_or_email_and_refuses_wrong_passwords_alike() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    for who in ["alice", "ALICE@example.com"] {
        let response = app.auth().login(login(who, "correct horse battery")).await.unwrap().into_inner();
        assert!(matches!(response.result, Some(login_response::Result::Tokens(_))));
    }
    let wrong = assert_code(app.auth().login(login("alice", "wrong password")).await, Code::Unauthenticated);
    let unknown = assert_code(app.auth().login(login("nobody", "wrong password")).await, Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message(), "the answer must not reveal which accounts exist");
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_session() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let first = alice.tokens.refresh_token.clone();
    let second =
        app.auth().refresh(RefreshRequest { refresh_token: first.clone() }).await.unwrap().into_inner().tokens.unwrap();
    assert_ne!(second.refresh_token, first);
    assert!(app.users().get_me(with_token(&second.access_token, GetMeRequest {})).await.is_ok());

    // Someone replays the spent token: the whole session ends.
    assert_code(app.auth().refresh(RefreshRequest { refresh_token: first }).await, Code::Unauthenticated);
    assert_code(
        app.auth().refresh(RefreshRequest { refresh_token: second.refresh_token }).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_its_refresh_token() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let other = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
    let Some(login_response::Result::Tokens(other)) = other.result else { panic!("tokens") };
    let sessions = app.auth().list_sessions(alice.req(ListSessionsRequest {})).await.unwrap().into_inner().sessions;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);

    let other_device = with_token(&other.access_token, GetMeRequest {});
    app.users().get_me(other_device).await.unwrap();
    let mut stream = app.realtime().subscribe(alice.req(SubscribeRequest::default())).await.unwrap().into_inner();

    app.users().get_me(alice.req(GetMeRequest {})).await.unwrap();
    let ended = app.auth().logout(alice.req(LogoutRequest { all_sessions: false })).await.unwrap().into_inner();
    assert_eq!(ended.sessions_ended, 1);
    let refresh = RefreshRequest { refresh_token: alice.tokens.refresh_token.clone() };
    assert_code(app.auth().refresh(refresh).await, Code::Unauthenticated);
    // Its access token stops at once, not when it expires, and so do its streams.
    assert_code(app.users().get_me(alice.req(GetMeRequest {})).await, Code::Unauthenticated);
    crate::helpers::assert_ends_unauthenticated(&mut stream).await;
    // The other device is still signed in.
    app.users().get_me(with_token(&other.access_token, GetMeRequest {})).await.unwrap();
    assert!(app.auth().refresh(RefreshRequest { refresh_token: other.refresh_token }).await.is_ok());
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let other = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
    let Some(login_response::Result::Tokens(other)) = other.result else { panic!("tokens") };
    let wrong = ChangePasswordRequest { current_password: "nope nope".into(), new_password: "a new password".into() };
    assert_code(app.auth().change_password(alice.req(wrong)).await, Code::PermissionDenied);
    let change = ChangePasswordRequest {
        current_password: "correct horse battery".into(),
        new_password: "a new password".into(),
    };
    app.users().get_me(with_token(&other.access_token, GetMeRequest {})).await.unwrap();
    app.auth().change_password(alice.req(change)).await.unwrap();
    let other_device = with_token(&other.access_token, GetMeRequest {});
    assert_code(app.users().get_me(other_device).await, Code::Unauthenticated);
    app.users().get_me(alice.req(GetMeRequest {})).await.unwrap();
    assert_code(app.auth().login(login("alice", "correct horse battery")).await, Code::Unauthenticated);
    assert!(app.auth().login(login("alice", "a new password")).await.is_ok());
    assert_code(app.auth().refresh(RefreshRequest { refresh_token: other.refresh_token }).await, Code::Unauthenticated);
    assert!(app.auth().refresh(RefreshRequest { refresh_token: alice.tokens.refresh_token }).await.is_ok());
}

#[tokio::test]
async fn tokens_are_checked_against_the_published_keys() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let keys = app.auth().get_jwks(GetJwksRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].kty.as_str(), keys[0].alg.as_str()), ("OKP", "EdDSA"));

    // A token with a forged payload (alice claims to be someone else).
    let mut parts: Vec<String> = alice.token().split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    let forged = parts.join(".");
    for token in [forged.as_str(), "not-a-token", ""] {
        assert_code(app.users().get_me(with_token(token, GetMeRequest {})).await, Code::Unauthenticated);
    }
    // A token signed by another Colink installation.
    let other = TestApp::spawn().await;
    let stranger = other.register("alice").await;
    assert_code(app.users().get_me(stranger.req(GetMeRequest {})).await, Code::Unauthenticated);
}

#[tokio::test]
async fn totp_turns_sign_in_into_two_steps() {
    use colink_auth::totp::{STEP_SECS, code_at, decode_base32};
    use colink_proto::auth::v1::{
        ConfirmTotpRequest, DisableTotpRequest, EnrollTotpRequest, SecondFactorMethod, VerifySecondFactorRequest,
    };

    let now_code = |secret: &[u8]| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        code_at(secret, now / STEP_SECS)
    };
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let enrolled = app.auth().enroll_totp(alice.req(EnrollTotpRequest {})).await.unwrap().into_inner();
    assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/colink:alice?secret="), "{}", enrolled.otpauth_uri);
    let secret = decode_base32(&enrolled.secret).unwrap();
    // Until confirmed, a password still signs in on its own.
    let before = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
    assert!(matches!(before.result, Some(login_response::Result::Tokens(_))));

    let wrong = ConfirmTotpRequest { code: "000000".into() };
    crate::helpers::assert_invalid(app.auth().confirm_totp(alice.req(wrong)).await, "code");
    let confirming_code = now_code(&secret);
    let confirm = ConfirmTotpRequest { code: confirming_code.clone() };
    let recovery = app.auth().confirm_totp(alice.req(confirm)).await.unwrap().into_inner().recovery_codes;
    assert_eq!(recovery.len(), 8);

    // Now the password only earns a challenge.
    let challenge = || async {
        let response = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
        assert!(response.account.unwrap().second_factor_enabled);
        match response.result {
            Some(login_response::Result::Challenge(c)) => c.challenge_id,
            other => panic!("expected a challenge, got {other:?}"),
        }
    };
    let answer = |challenge_id: String, code: String| VerifySecondFactorRequest {
        challenge_id,
        method: SecondFactorMethod::Totp as i32,
        code,
        webauthn_assertion_json: String::new(),
    };
    let first = challenge().await;
    let refused = app.auth().verify_second_factor(answer(first.clone(), "123456".into())).await;
    assert_code(refused, Code::Unauthenticated);
    // The confirming code was already used: a code works once.
    let replay = app.auth().verify_second_factor(answer(first.clone(), confirming_code)).await;
    assert_code(replay, Code::Unauthenticated);
    // A recovery code works, once.
    let signed_in =
        app.auth().verify_second_factor(answer(first.clone(), recovery[0].clone())).await.unwrap().into_inner();
    assert!(signed_in.tokens.is_some());
    assert_code(app.auth().verify_second_factor(answer(first, recovery[1].clone())).await, Code::Unauthenticated);
    let second = challenge().await;
    assert_code(app.auth().verify_second_factor(answer(second, recovery[0].clone())).await, Code::Unauthenticated);

    // Five wrong answers spend a challenge.
    let third = challenge().await;
    for _ in 0..5 {
        assert_code(
            app.auth().verify_second_factor(answer(third.clone(), "999999".into())).await,
            Code::Unauthenticated,
        );
    }
    assert_code(app.auth().verify_second_factor(answer(third, recovery[2].clone())).await, Code::Unauthenticated);

    // Disabling takes a recovery code too, after which a password suffices again.
    app.auth().disable_totp(alice.req(DisableTotpRequest { code: recovery[3].clone() })).await.unwrap();
    let after = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
    assert!(matches!(after.result, Some(login_response::Result::Tokens(_))));
}

/// The code in the newest mail to `to` whose subject has `subject`, once
/// it has arrived; mails counted in `seen` are skipped.
async fn mailed_code(smtp: &crate::servers::Server, seen: &mut usize, to: &str, subject: &str) -> String {
    let mail = crate::servers::eventually(std::time::Duration::from_secs(20), "a mail", || async {
        let mails = smtp.mails();
        (mails.len() > *seen).then(|| mails[*seen].clone())
    })
    .await;
    *seen += 1;
    assert!(mail.contains(&format!("To: {to}")), "{mail}");
    assert!(mail.contains(subject), "{mail}");
    let line = mail.lines().find(|l| l.contains(" code: ")).unwrap_or_else(|| panic!("no code in {mail}"));
    line.rsplit(' ').next().unwrap().trim().to_string()
}

#[tokio::test]
#[ignore = "needs aiosmtpd: set COLINK_TEST_AIOSMTPD (the full suite does)"]
async fn password_resets_and_email_verification_go_through_a_real_mail_server() {
    use colink_proto::auth::v1::{
        RequestEmailVerificationRequest, RequestPasswordResetRequest, ResetPasswordRequest, VerifyEmailRequest,
    };

    let smtp = crate::servers::Server::smtp().await;
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let app = TestApp::spawn_with(|c| {
        c.auth.mail.url = url;
        c.auth.mail.from = "Colink <colink@example.com>".into();
        c.auth.mail.requests_per_address_per_hour = 6;
    })
    .await;
    let mut seen = 0;
    let alice = app.register("alice").await;

    // Registration mails a verification code; a wrong one names the field.
    let code = mailed_code(&smtp, &mut seen, "alice@example.com", "Confirm your email").await;
    let verify = |code: &str| alice.req(VerifyEmailRequest { code: code.into() });
    crate::helpers::assert_invalid(app.auth().verify_email(verify("not-the-code")).await, "code");
    app.auth().verify_email(verify(&code)).await.unwrap();
    crate::helpers::assert_invalid(app.auth().verify_email(verify(&code)).await, "code");
    let signed_in = app.auth().login(login("alice", "correct horse battery")).await.unwrap().into_inner();
    assert!(signed_in.account.unwrap().email_verified);
    let Some(login_response::Result::Tokens(other)) = signed_in.result else { panic!("tokens") };
    app.users().get_me(with_token(&other.access_token, GetMeRequest {})).await.unwrap();
    // A verified email needs no new code.
    app.auth().request_email_verification(alice.req(RequestEmailVerificationRequest {})).await.unwrap();

    // Asking for a reset answers alike for unknown addresses, and mails
    // only the account's owner.
    let ask = |email: &str| RequestPasswordResetRequest { email: email.into() };
    app.auth().request_password_reset(ask("nobody@example.com")).await.unwrap();
    crate::helpers::assert_invalid(app.auth().request_password_reset(ask("not an address")).await, "email");
    app.auth().request_password_reset(ask("ALICE@example.com")).await.unwrap();
    let code = mailed_code(&smtp, &mut seen, "alice@example.com", "Reset your Colink password").await;
    let reset = |code: &str, password: &str| ResetPasswordRequest {
        email: "alice@example.com".into(),
        code: code.into(),
        new_password: password.into(),
    };
    crate::helpers::assert_invalid(app.auth().reset_password(reset("wrong", "a fresh passphrase")).await, "code");
    crate::helpers::assert_invalid(app.auth().reset_password(reset(&code, "password1")).await, "new_password");
    app.auth().reset_password(reset(&code, "a fresh passphrase")).await.unwrap();
    // Spent; the old password and every session are gone.
    crate::helpers::assert_invalid(app.auth().reset_password(reset(&code, "another passphrase")).await, "code");
    assert_code(app.auth().login(login("alice", "correct horse battery")).await, Code::Unauthenticated);
    app.auth().login(login("alice", "a fresh passphrase")).await.unwrap();
    assert_code(app.users().get_me(with_token(&other.access_token, GetMeRequest {})).await, Code::Unauthenticated);
    let refresh = RefreshRequest { refresh_token: alice.tokens.refresh_token.clone() };
    assert_code(app.auth().refresh(refresh).await, Code::Unauthenticated);
    assert_eq!(smtp.mails().len(), seen, "nobody@example.com got nothing");

    // One address asks for a bounded number of mails an hour: 6 here, two
    // asked above and four more; the seventh is refused.
    for _ in 0..4 {
        app.auth().request_password_reset(ask("nobody@example.com")).await.unwrap();
    }
    assert_code(app.auth().request_password_reset(ask("nobody@example.com")).await, Code::ResourceExhausted);

    // A workspace without mail says so.
    let quiet = TestApp::spawn().await;
    assert_code(quiet.auth().request_password_reset(ask("alice@example.com")).await, Code::FailedPrecondition);
}

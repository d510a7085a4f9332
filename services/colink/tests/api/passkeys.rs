//! Passkeys, registered and used through the real gRPC client by a software
//! authenticator: a P-256 key pair per credential, the attestation object
//! and assertion built byte by byte as a platform authenticator builds them
//! (CBOR, COSE key, authenticator data, client data), so the node's
//! WebAuthn checks run on what a browser would send.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use colink_proto::admin::v1::DeactivateUserRequest;
use colink_proto::auth::v1::{
    BeginPasskeyRegistrationRequest, BeginPasskeySignInRequest, ConfirmTotpRequest, DeletePasskeyRequest,
    EnrollTotpRequest, FinishPasskeyRegistrationRequest, FinishPasskeySignInRequest, FinishPasskeySignInResponse,
    GetSignInOptionsRequest, ListPasskeysRequest, LoginRequest, SecondFactorMethod, VerifySecondFactorRequest,
    login_response,
};
use colink_proto::users::v1::GetMeRequest;
use colink_runtime::clients::with_token;
use serde_json::{Value, json};
use tonic::Code;

use crate::cluster::two_nodes;
use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid};
use crate::soft_authenticator::{Authenticator, decode};

const ORIGIN: &str = "http://localhost:8080";

/// Registers a passkey named `name` for `user` on `authenticator`.
async fn register_passkey(app: &TestApp, user: &TestUser, authenticator: &mut Authenticator, name: &str) -> String {
    let begun = app
        .auth()
        .begin_passkey_registration(user.req(BeginPasskeyRegistrationRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner();
    let credential_json = authenticator.create(&begun.creation_options_json).unwrap();
    let finish = FinishPasskeyRegistrationRequest { registration_id: begun.registration_id, credential_json };
    let passkey = app.auth().finish_passkey_registration(user.req(finish)).await.unwrap().into_inner().passkey;
    passkey.unwrap().credential_id
}

/// Signs in with whichever passkey `authenticator` offers.
async fn sign_in(
    app: &TestApp,
    authenticator: &mut Authenticator,
) -> Result<FinishPasskeySignInResponse, tonic::Status> {
    let begun = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await?.into_inner();
    let credential_json = authenticator.get(&begun.request_options_json);
    let finish =
        FinishPasskeySignInRequest { sign_in_id: begun.sign_in_id, credential_json, device_name: "Phone".into() };
    Ok(app.auth().finish_passkey_sign_in(finish).await?.into_inner())
}

#[tokio::test]
async fn people_register_passkeys_and_sign_in_with_them_alone() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let mut phone = Authenticator::new(ORIGIN);

    let options = app.auth().get_sign_in_options(GetSignInOptionsRequest {}).await.unwrap().into_inner();
    assert!(options.password && options.passkeys, "{options:?}");
    assert_eq!(options.passkey_rp_id, "localhost");

    // Bad input names its field and starts nothing.
    for name in ["", "   ", &"x".repeat(65)] {
        let begin = BeginPasskeyRegistrationRequest { name: name.into() };
        assert_invalid(app.auth().begin_passkey_registration(ada.req(begin)).await, "name");
    }
    let anonymous = BeginPasskeyRegistrationRequest { name: "Phone".into() };
    assert_code(app.auth().begin_passkey_registration(anonymous).await, Code::Unauthenticated);

    // Registration: the options ask for a discoverable passkey that
    // verifies its user, for this site and this account.
    let begin = BeginPasskeyRegistrationRequest { name: " Ada's phone ".into() };
    let begun = app.auth().begin_passkey_registration(ada.req(begin)).await.unwrap().into_inner();
    let options: Value = serde_json::from_str(&begun.creation_options_json).unwrap();
    let public_key = &options["publicKey"];
    assert_eq!(public_key["rp"]["id"], "localhost");
    assert_eq!(public_key["user"]["name"], "ada");
    assert_eq!(decode(public_key["user"]["id"].as_str().unwrap()).len(), 16, "the user handle is the account's UUID");
    assert_eq!(public_key["authenticatorSelection"]["residentKey"], "preferred");
    assert_eq!(public_key["authenticatorSelection"]["userVerification"], "required");
    let registration_json = phone.create(&begun.creation_options_json).unwrap();
    let finish = |registration_id: &str, credential_json: &str| FinishPasskeyRegistrationRequest {
        registration_id: registration_id.into(),
        credential_json: credential_json.into(),
    };
    // Nobody else finishes it, and malformed answers name their field.
    let theirs = bob.req(finish(&begun.registration_id, &registration_json));
    assert_code(app.auth().finish_passkey_registration(theirs).await, Code::NotFound);
    let bad = app.auth().finish_passkey_registration(ada.req(finish("nope", &registration_json))).await;
    assert_invalid(bad, "registration_id");
    for garbage in ["", "{}", "not json"] {
        let bad = app.auth().finish_passkey_registration(ada.req(finish(&begun.registration_id, garbage))).await;
        assert_invalid(bad, "credential_json");
    }
    let stored =
        app.auth().finish_passkey_registration(ada.req(finish(&begun.registration_id, &registration_json))).await;
    let stored = stored.unwrap().into_inner().passkey.unwrap();
    assert_eq!(stored.name, "Ada's phone");
    assert!(stored.last_used_time.is_none());
    // A retry answers the same passkey and stores no second one.
    let again =
        app.auth().finish_passkey_registration(ada.req(finish(&begun.registration_id, &registration_json))).await;
    assert_eq!(again.unwrap().into_inner().passkey.unwrap(), stored);
    // Finished, it takes no other passkey.
    let other = Authenticator::new("http://localhost:9999").create(&begun.creation_options_json).unwrap();
    let refused = app.auth().finish_passkey_registration(ada.req(finish(&begun.registration_id, &other))).await;
    assert_code(refused, Code::FailedPrecondition);
    let listed = app.auth().list_passkeys(ada.req(ListPasskeysRequest {})).await.unwrap().into_inner().passkeys;
    assert_eq!(listed, vec![stored.clone()]);
    assert!(app.auth().list_passkeys(bob.req(ListPasskeysRequest {})).await.unwrap().into_inner().passkeys.is_empty());

    // The same authenticator is not asked for a second passkey of the
    // account; a page on another site cannot register one.
    let begin = BeginPasskeyRegistrationRequest { name: "Again".into() };
    let second = app.auth().begin_passkey_registration(ada.req(begin.clone())).await.unwrap().into_inner();
    assert!(phone.create(&second.creation_options_json).is_err(), "the existing passkey is excluded");
    let mut phishing = Authenticator::new("http://localhost.evil.test");
    let answer = phishing.create(&second.creation_options_json).unwrap();
    let refused = app.auth().finish_passkey_registration(ada.req(finish(&second.registration_id, &answer))).await;
    assert_invalid(refused, "credential_json");
    let mut other_site = Authenticator::new(ORIGIN);
    other_site.rp_id = "evil.test".into();
    let mut options: Value = serde_json::from_str(&second.creation_options_json).unwrap();
    options["publicKey"]["rp"]["id"] = "evil.test".into();
    let answer = other_site.create(&options.to_string()).unwrap();
    let refused = app.auth().finish_passkey_registration(ada.req(finish(&second.registration_id, &answer))).await;
    assert_invalid(refused, "credential_json");

    // Signing in needs no username and no password, and opens a session
    // that works everywhere.
    let signed_in = sign_in(&app, &mut phone).await.unwrap();
    assert_eq!(signed_in.account.as_ref().unwrap().user_id, ada.user_id);
    let token = signed_in.tokens.unwrap().access_token;
    let me = app.users().get_me(with_token(&token, GetMeRequest {})).await.unwrap().into_inner();
    assert_eq!(me.user.unwrap().username, "ada");
    let listed = app.auth().list_passkeys(ada.req(ListPasskeysRequest {})).await.unwrap().into_inner().passkeys;
    assert!(listed[0].last_used_time.is_some());

    // A sign-in works once; an answer to one challenge answers no other.
    let begun = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await.unwrap().into_inner();
    let request: Value = serde_json::from_str(&begun.request_options_json).unwrap();
    assert_eq!(request["publicKey"]["allowCredentials"], json!([]), "{request}");
    assert_eq!(request["publicKey"]["userVerification"], "required");
    let answer = phone.get(&begun.request_options_json);
    let finish_sign_in = |sign_in_id: &str, credential_json: &str| FinishPasskeySignInRequest {
        sign_in_id: sign_in_id.into(),
        credential_json: credential_json.into(),
        device_name: String::new(),
    };
    app.auth().finish_passkey_sign_in(finish_sign_in(&begun.sign_in_id, &answer)).await.unwrap();
    let replay = app.auth().finish_passkey_sign_in(finish_sign_in(&begun.sign_in_id, &answer)).await;
    assert_invalid(replay, "sign_in_id");
    let fresh = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await.unwrap().into_inner();
    let replay = app.auth().finish_passkey_sign_in(finish_sign_in(&fresh.sign_in_id, &answer)).await;
    assert_code(replay, Code::Unauthenticated);
    // Bad input names its field.
    assert_invalid(app.auth().finish_passkey_sign_in(finish_sign_in("x", &answer)).await, "sign_in_id");
    let fresh = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await.unwrap().into_inner();
    assert_invalid(app.auth().finish_passkey_sign_in(finish_sign_in(&fresh.sign_in_id, "[]")).await, "credential_json");
    let long_name =
        FinishPasskeySignInRequest { device_name: "d".repeat(129), ..finish_sign_in(&fresh.sign_in_id, &answer) };
    assert_invalid(app.auth().finish_passkey_sign_in(long_name).await, "device_name");
    // A forged signature is refused.
    let fresh = app.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await.unwrap().into_inner();
    let mut forged: Value = serde_json::from_str(&phone.get(&fresh.request_options_json)).unwrap();
    let mut signature = decode(forged["response"]["signature"].as_str().unwrap());
    let last = signature.len() - 1;
    signature[last] ^= 1;
    forged["response"]["signature"] = URL_SAFE_NO_PAD.encode(signature).into();
    let refused = app.auth().finish_passkey_sign_in(finish_sign_in(&fresh.sign_in_id, &forged.to_string())).await;
    assert_code(refused, Code::Unauthenticated);

    // A copy of the authenticator, answering with a sign count the node has
    // seen already, is refused.
    let mut clone = phone.clone();
    sign_in(&app, &mut phone).await.unwrap();
    let cloned = assert_code(sign_in(&app, &mut clone).await, Code::Unauthenticated);
    assert!(cloned.message().contains("does not check out"), "{cloned:?}");
    sign_in(&app, &mut phone).await.unwrap();

    // Deactivation bars passkey sign-in too.
    let mut bobs_key = Authenticator::new(ORIGIN);
    register_passkey(&app, &bob, &mut bobs_key, "Key").await;
    assert_eq!(sign_in(&app, &mut bobs_key).await.unwrap().account.unwrap().user_id, bob.user_id);
    let deactivate =
        DeactivateUserRequest { user_id: bob.user_id.clone(), reason: "left".into(), idempotency_key: String::new() };
    app.admin().deactivate_user(ada.req(deactivate)).await.unwrap();
    assert_code(sign_in(&app, &mut bobs_key).await, Code::PermissionDenied);

    // A deleted passkey signs nobody in; only its owner deletes it.
    let delete = |credential_id: &str| DeletePasskeyRequest { credential_id: credential_id.into() };
    let carol = app.register("carol").await;
    assert_code(app.auth().delete_passkey(carol.req(delete(&stored.credential_id))).await, Code::NotFound);
    for bad in ["", "not base64url!", &"a".repeat(2000)] {
        assert_invalid(app.auth().delete_passkey(ada.req(delete(bad))).await, "credential_id");
    }
    app.auth().delete_passkey(ada.req(delete(&stored.credential_id))).await.unwrap();
    assert_code(app.auth().delete_passkey(ada.req(delete(&stored.credential_id))).await, Code::NotFound);
    assert_code(sign_in(&app, &mut phone).await, Code::Unauthenticated);
    assert!(app.auth().list_passkeys(ada.req(ListPasskeysRequest {})).await.unwrap().into_inner().passkeys.is_empty());

    // An account keeps at most 20.
    for n in 0..20 {
        let mut device = Authenticator::new(&format!("http://localhost:{}", 9000 + n));
        register_passkey(&app, &carol, &mut device, &format!("Key {n}")).await;
    }
    let begin = BeginPasskeyRegistrationRequest { name: "One more".into() };
    assert_code(app.auth().begin_passkey_registration(carol.req(begin)).await, Code::FailedPrecondition);
}

#[tokio::test]
async fn a_passkey_answers_the_second_step_of_a_password_sign_in() {
    use colink_auth::totp::{STEP_SECS, code_at, decode_base32};

    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let mut phone = Authenticator::new(ORIGIN);
    let credential_id = register_passkey(&app, &ada, &mut phone, "Phone").await;
    let login =
        || LoginRequest { login: "ada".into(), password: "correct horse battery".into(), device_name: "Laptop".into() };
    // A passkey alone does not make the password sign-in two steps.
    let response = app.auth().login(login()).await.unwrap().into_inner();
    assert!(matches!(response.result, Some(login_response::Result::Tokens(_))));

    let enrolled = app.auth().enroll_totp(ada.req(EnrollTotpRequest {})).await.unwrap().into_inner();
    let secret = decode_base32(&enrolled.secret).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let confirm = ConfirmTotpRequest { code: code_at(&secret, now / STEP_SECS) };
    app.auth().confirm_totp(ada.req(confirm)).await.unwrap();

    let challenge = || async {
        match app.auth().login(login()).await.unwrap().into_inner().result {
            Some(login_response::Result::Challenge(c)) => c,
            other => panic!("expected a challenge, got {other:?}"),
        }
    };
    let answer = |challenge_id: &str, assertion: &str| VerifySecondFactorRequest {
        challenge_id: challenge_id.into(),
        method: SecondFactorMethod::Webauthn as i32,
        code: String::new(),
        webauthn_assertion_json: assertion.into(),
    };
    let first = challenge().await;
    assert_eq!(first.methods, vec![SecondFactorMethod::Totp as i32, SecondFactorMethod::Webauthn as i32]);
    let options: Value = serde_json::from_str(&first.webauthn_options_json).unwrap();
    let allowed: Vec<&str> = options["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(allowed, vec![credential_id.as_str()]);
    assert_invalid(app.auth().verify_second_factor(answer(&first.challenge_id, "")).await, "webauthn_assertion_json");
    assert_invalid(app.auth().verify_second_factor(answer(&first.challenge_id, "{")).await, "webauthn_assertion_json");
    // An answer to another challenge is a wrong answer.
    let second = challenge().await;
    let for_second = phone.get(&second.webauthn_options_json);
    assert_code(app.auth().verify_second_factor(answer(&first.challenge_id, &for_second)).await, Code::Unauthenticated);
    let signed_in = app.auth().verify_second_factor(answer(&second.challenge_id, &for_second)).await.unwrap();
    assert_eq!(signed_in.into_inner().account.unwrap().user_id, ada.user_id);
    // The challenge is spent.
    assert_code(
        app.auth().verify_second_factor(answer(&second.challenge_id, &for_second)).await,
        Code::Unauthenticated,
    );
    let third = challenge().await;
    let assertion = phone.get(&third.webauthn_options_json);
    app.auth().verify_second_factor(answer(&third.challenge_id, &assertion)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: set COLINK_TEST_POSTGRES and COLINK_TEST_REDIS (the full suite does)"]
async fn passkey_ceremonies_finish_on_any_node() {
    let (a, b) = two_nodes().await;
    let ada = a.register("ada").await;
    let mut phone = Authenticator::new(ORIGIN);

    // Registration begun on one node finishes on the other, once.
    let begin = BeginPasskeyRegistrationRequest { name: "Phone".into() };
    let begun = a.auth().begin_passkey_registration(ada.req(begin)).await.unwrap().into_inner();
    let credential_json = phone.create(&begun.creation_options_json).unwrap();
    let finish = FinishPasskeyRegistrationRequest { registration_id: begun.registration_id, credential_json };
    let on_b = b.auth().finish_passkey_registration(ada.req(finish.clone())).await.unwrap().into_inner();
    let on_a = a.auth().finish_passkey_registration(ada.req(finish)).await.unwrap().into_inner();
    assert_eq!(on_a, on_b);

    // So does a sign-in, and a spent one is spent everywhere.
    let begun = b.auth().begin_passkey_sign_in(BeginPasskeySignInRequest {}).await.unwrap().into_inner();
    let answer = FinishPasskeySignInRequest {
        sign_in_id: begun.sign_in_id,
        credential_json: phone.get(&begun.request_options_json),
        device_name: String::new(),
    };
    let signed_in = a.auth().finish_passkey_sign_in(answer.clone()).await.unwrap().into_inner();
    assert_eq!(signed_in.account.unwrap().user_id, ada.user_id);
    assert_invalid(b.auth().finish_passkey_sign_in(answer).await, "sign_in_id");
    let token = signed_in.tokens.unwrap().access_token;
    b.users().get_me(with_token(&token, GetMeRequest {})).await.unwrap();
}

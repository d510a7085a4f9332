use colink_proto::users::v1::{
    AddContactRequest, BatchGetUsersRequest, BlockUserRequest, CheckBlockedRequest, GetSettingsRequest, GetUserRequest,
    ListBlockedUsersRequest, ListContactsRequest, ListUsersRequest, Settings, Theme, UpdateMeRequest,
    UpdateSettingsRequest, User,
};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{TestApp, assert_code, assert_invalid};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

#[tokio::test]
async fn profiles_can_be_read_updated_and_looked_up_by_prefix() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    app.register("bobby").await;

    let update = UpdateMeRequest {
        user: Some(User {
            display_name: "Alice Liddell".into(),
            bio: "down the rabbit hole".into(),
            ..Default::default()
        }),
        update_mask: mask(&["display_name", "bio"]),
    };
    let updated = app.users().update_me(alice.req(update)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(updated.display_name, "Alice Liddell");
    let seen = app.users().get_user(bob.req(GetUserRequest { user_id: alice.user_id.clone() })).await.unwrap();
    assert_eq!(seen.into_inner().user.unwrap().bio, "down the rabbit hole");

    let page = |token: String| ListUsersRequest {
        username_prefix: "bob".into(),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    let first = app.users().list_users(alice.req(page(String::new()))).await.unwrap().into_inner();
    assert_eq!(first.users[0].username, "bob");
    let second = app.users().list_users(alice.req(page(first.next_page_token))).await.unwrap().into_inner();
    assert_eq!(second.users[0].username, "bobby");
    assert!(second.next_page_token.is_empty());

    let batch =
        BatchGetUsersRequest { user_ids: vec![bob.user_id.clone(), alice.user_id.clone()], ..Default::default() };
    let users = app.users().batch_get_users(alice.req(batch)).await.unwrap().into_inner().users;
    assert_eq!(users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["bob", "alice"]);
}

#[tokio::test]
async fn profile_updates_are_validated_field_by_field() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bad = UpdateMeRequest {
        user: Some(User { display_name: " ".into(), avatar_url: "ftp://x".into(), ..Default::default() }),
        update_mask: mask(&["display_name", "avatar_url"]),
    };
    assert_invalid(app.users().update_me(alice.req(bad)).await, "user.avatar_url");
    let unknown = UpdateMeRequest { user: Some(User::default()), update_mask: mask(&["username"]) };
    assert_invalid(app.users().update_me(alice.req(unknown)).await, "update_mask");
    let empty = UpdateMeRequest { user: Some(User::default()), update_mask: None };
    assert_invalid(app.users().update_me(alice.req(empty)).await, "update_mask");
    assert_invalid(app.users().get_user(alice.req(GetUserRequest { user_id: "42".into() })).await, "user_id");
    let missing = GetUserRequest { user_id: uuid::Uuid::now_v7().to_string() };
    assert_code(app.users().get_user(alice.req(missing)).await, Code::NotFound);
}

#[tokio::test]
async fn settings_contacts_and_blocks() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let defaults =
        app.users().get_settings(alice.req(GetSettingsRequest {})).await.unwrap().into_inner().settings.unwrap();
    assert_eq!(defaults.language, "en");
    let change = UpdateSettingsRequest {
        settings: Some(Settings { language: "pt-BR".into(), theme: Theme::Dark as i32, ..Default::default() }),
        update_mask: mask(&["language", "theme"]),
    };
    app.users().update_settings(alice.req(change)).await.unwrap();
    let now = app.users().get_settings(alice.req(GetSettingsRequest {})).await.unwrap().into_inner().settings.unwrap();
    assert_eq!((now.language.as_str(), now.theme), ("pt-BR", Theme::Dark as i32));

    let add = AddContactRequest { user_id: bob.user_id.clone(), relationship: "colleague".into() };
    app.users().add_contact(alice.req(add)).await.unwrap();
    let contacts = app.users().list_contacts(alice.req(ListContactsRequest::default())).await.unwrap().into_inner();
    assert_eq!(contacts.contacts.len(), 1);
    let self_contact = AddContactRequest { user_id: alice.user_id.clone(), relationship: String::new() };
    assert_invalid(app.users().add_contact(alice.req(self_contact)).await, "user_id");

    app.users().block_user(bob.req(BlockUserRequest { user_id: alice.user_id.clone() })).await.unwrap();
    let blocked =
        app.users().list_blocked_users(bob.req(ListBlockedUsersRequest::default())).await.unwrap().into_inner();
    assert_eq!(blocked.users[0].user_id, alice.user_id);
    let check = CheckBlockedRequest {
        user_id: alice.user_id.clone(),
        other_user_id: bob.user_id.clone(),
        ..Default::default()
    };
    assert!(app.users().check_blocked(alice.req(check)).await.unwrap().into_inner().blocked);
}

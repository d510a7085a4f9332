//! Idempotency keys on every call that changes something: a retry returns
//! the first answer and changes nothing, even after later changes; the same
//! key with another request is refused; keys are each caller's own.

use colink_proto::channels::v1::{
    ChannelKind, CreateInvitationRequest, JoinChannelRequest, LeaveChannelRequest, OpenDirectMessageRequest,
};
use colink_proto::messaging::v1::{
    DeleteMessageRequest, EditMessageRequest, GetMessageRequest, PinMessageRequest, UnpinMessageRequest,
};
use colink_proto::reactions::v1::{AddReactionRequest, RemoveReactionRequest};
use colink_proto::threads::v1::{FollowThreadRequest, ReplyToThreadRequest, UnfollowThreadRequest};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid};

/// A request carrying the key in the `Idempotency-Key` header, as REST
/// clients send it.
fn with_header<T>(user: &TestUser, key: &str, message: T) -> tonic::Request<T> {
    let mut request = user.req(message);
    request.metadata_mut().insert("idempotency-key", MetadataValue::try_from(key).unwrap());
    request
}

#[tokio::test]
async fn a_retried_edit_returns_the_first_answer_even_after_a_later_edit() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let m = app.send(&alice, &room.channel_id, "v1").await;
    let edit = |text: &str, key: &str| EditMessageRequest {
        message_id: m.message_id.clone(),
        text: text.into(),
        expected_version: 0,
        idempotency_key: key.into(),
    };
    let first = app.messaging().edit_message(alice.req(edit("v2", "edit-1"))).await.unwrap().into_inner();
    app.messaging().edit_message(alice.req(edit("v3", "edit-2"))).await.unwrap();
    // A late retry of the first edit must not undo the second.
    let retry = app.messaging().edit_message(alice.req(edit("v2", "edit-1"))).await.unwrap().into_inner();
    assert_eq!(retry, first);
    let now = app.messaging().get_message(alice.req(GetMessageRequest { message_id: m.message_id.clone() })).await;
    let now = now.unwrap().into_inner().message.unwrap();
    assert_eq!((now.text.as_str(), now.version), ("v3", 3));
    assert_invalid(app.messaging().edit_message(alice.req(edit("v4", "edit-1"))).await, "idempotency_key");
    assert_invalid(app.messaging().edit_message(alice.req(edit("v4", "bad key"))).await, "idempotency_key");
    // A failed request leaves its key free for a corrected one.
    let empty = app.messaging().edit_message(alice.req(edit("", "edit-3"))).await;
    assert_invalid(empty, "text");
    app.messaging().edit_message(alice.req(edit("v5", "edit-3"))).await.unwrap();

    // Pins by header, as REST clients send them.
    let pin = PinMessageRequest { message_id: m.message_id.clone(), ..Default::default() };
    let pinned = app.messaging().pin_message(with_header(&alice, "pin-1", pin.clone())).await.unwrap().into_inner();
    let unpin = UnpinMessageRequest { message_id: m.message_id.clone(), ..Default::default() };
    app.messaging().unpin_message(with_header(&alice, "unpin-1", unpin)).await.unwrap();
    let again = app.messaging().pin_message(with_header(&alice, "pin-1", pin)).await.unwrap().into_inner();
    assert_eq!(again, pinned);
    let now = app.messaging().get_message(alice.req(GetMessageRequest { message_id: m.message_id.clone() })).await;
    assert!(!now.unwrap().into_inner().message.unwrap().pinned, "the retry did not pin again");
    let other = app.send(&alice, &room.channel_id, "other").await;
    let elsewhere = PinMessageRequest { message_id: other.message_id, ..Default::default() };
    assert_invalid(app.messaging().pin_message(with_header(&alice, "pin-1", elsewhere)).await, "idempotency_key");

    // Keys are each caller's own.
    let bob = app.register("bob").await;
    app.channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: room.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let theirs = EditMessageRequest { idempotency_key: "edit-1".into(), ..edit("v9", "") };
    assert_code(app.messaging().edit_message(bob.req(theirs)).await, Code::PermissionDenied);

    let delete = DeleteMessageRequest { message_id: m.message_id.clone(), idempotency_key: "delete-1".into() };
    let deleted = app.messaging().delete_message(alice.req(delete.clone())).await.unwrap().into_inner();
    assert_eq!(app.messaging().delete_message(alice.req(delete)).await.unwrap().into_inner(), deleted);
}

#[tokio::test]
async fn retries_of_reactions_threads_and_memberships_change_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let m = app.send(&alice, &room.channel_id, "react").await;

    let add = AddReactionRequest { message_id: m.message_id.clone(), emoji: "👍".into(), ..Default::default() };
    app.reactions().add_reaction(bob.req(add)).await.unwrap();
    let remove = RemoveReactionRequest {
        message_id: m.message_id.clone(),
        emoji: "👍".into(),
        idempotency_key: "unreact-1".into(),
    };
    let first = app.reactions().remove_reaction(bob.req(remove.clone())).await.unwrap().into_inner();
    assert!(first.removed);
    let retry = app.reactions().remove_reaction(bob.req(remove)).await.unwrap().into_inner();
    assert!(retry.removed, "the retry answers as the first call did");

    let reply = ReplyToThreadRequest { thread_id: m.message_id.clone(), text: "r".into(), ..Default::default() };
    assert_code(app.threads().reply_to_thread(bob.req(reply)).await, Code::NotFound);
    let create = colink_proto::threads::v1::CreateThreadRequest {
        parent_message_id: m.message_id.clone(),
        text: "first".into(),
        ..Default::default()
    };
    app.threads().create_thread(bob.req(create)).await.unwrap();
    let unfollow = UnfollowThreadRequest { thread_id: m.message_id.clone(), idempotency_key: "unfollow-1".into() };
    app.threads().unfollow_thread(bob.req(unfollow.clone())).await.unwrap();
    let follow = FollowThreadRequest { thread_id: m.message_id.clone(), idempotency_key: "follow-1".into() };
    app.threads().follow_thread(bob.req(follow)).await.unwrap();
    let late = app.threads().unfollow_thread(bob.req(unfollow)).await.unwrap().into_inner();
    assert!(!late.thread.unwrap().viewer_state.unwrap().following, "the first answer, replayed");
    let listed = app
        .threads()
        .list_followed_threads(bob.req(colink_proto::threads::v1::ListFollowedThreadsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.threads.len(), 1, "and the follow made since still stands");

    // Leaving, joining again, then a late retry of the leave: still in.
    let leave = LeaveChannelRequest { channel_id: room.channel_id.clone(), idempotency_key: "leave-1".into() };
    app.channels().leave_channel(bob.req(leave.clone())).await.unwrap();
    let join = JoinChannelRequest { channel_id: room.channel_id.clone(), ..Default::default() };
    app.channels().join_channel(bob.req(join)).await.unwrap();
    app.channels().leave_channel(bob.req(leave)).await.unwrap();
    let channel = app
        .channels()
        .get_channel(bob.req(colink_proto::channels::v1::GetChannelRequest { channel_id: room.channel_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    assert_ne!(channel.viewer_role, 0, "the retried leave did not leave again");

    // Direct messages and invitations.
    let dm = OpenDirectMessageRequest { user_ids: vec![bob.user_id.clone()], idempotency_key: "dm-1".into() };
    let a = app.channels().open_direct_message(alice.req(dm.clone())).await.unwrap().into_inner();
    let b = app.channels().open_direct_message(alice.req(dm)).await.unwrap().into_inner();
    assert_eq!(a, b);
    let secret = app.create_channel(&alice, "secret", ChannelKind::Private, &[]).await;
    let invite = CreateInvitationRequest {
        channel_id: secret.channel_id.clone(),
        invitee_id: bob.user_id.clone(),
        ttl_hours: 0,
        idempotency_key: "invite-1".into(),
    };
    let first = app.channels().create_invitation(alice.req(invite.clone())).await.unwrap().into_inner();
    let again = app.channels().create_invitation(alice.req(invite.clone())).await.unwrap().into_inner();
    assert_eq!(first, again);
    let other = CreateInvitationRequest { invitee_id: alice.user_id.clone(), ..invite };
    assert_invalid(app.channels().create_invitation(alice.req(other)).await, "idempotency_key");
}

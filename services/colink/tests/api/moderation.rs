//! Moderation in conversations the moderator is not in: reading a message
//! in its context (audited), hiding it from everyone but its sender and
//! the moderators, restoring it, and deleting it for good.

use std::time::Duration;

use colink_proto::admin::v1::{
    GetMessageContextRequest, ListAuditLogsRequest, ModerateMessageRequest, ModerationAction, SetUserRoleRequest,
    UserRole,
};
use colink_proto::auth::v1::RefreshRequest;
use colink_proto::channels::v1::ChannelKind;
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{GetMessageRequest, ListChannelEventsRequest, Message};
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::search::v1::SearchMessagesRequest;
use tonic::Code;

use crate::admin::audit_entries;
use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid, frame};
use crate::servers::eventually;

fn moderate(message_id: &str, action: ModerationAction, reason: &str) -> ModerateMessageRequest {
    ModerateMessageRequest {
        message_id: message_id.into(),
        action: action as i32,
        reason: reason.into(),
        ..Default::default()
    }
}

async fn seen_by(app: &TestApp, user: &TestUser, message_id: &str) -> Message {
    let request = GetMessageRequest { message_id: message_id.into() };
    app.messaging().get_message(user.req(request)).await.unwrap().into_inner().message.unwrap()
}

async fn hits(app: &TestApp, user: &TestUser, text: &str, expected: usize) {
    eventually(Duration::from_secs(10), &format!("{expected} hits for {text:?}"), || async {
        let request = SearchMessagesRequest { query: text.into(), ..Default::default() };
        let found = app.search().search_messages(user.req(request)).await.unwrap().into_inner().hits;
        (found.len() == expected).then_some(())
    })
    .await;
}

/// The next event of a kind the test waits for, skipping others.
async fn next_event(stream: &mut tonic::Streaming<colink_proto::realtime::v1::SubscribeResponse>) -> Kind {
    loop {
        if let Frame::Event(e) = frame(stream).await
            && let Some(kind) = e.kind
            && !matches!(kind, Kind::MemberJoined(_))
        {
            return kind;
        }
    }
}

#[tokio::test]
async fn moderators_read_hide_restore_and_delete_in_private_conversations_they_are_not_in() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let mia = app.register("mia").await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let promote =
        SetUserRoleRequest { user_id: mia.user_id.clone(), role: UserRole::Moderator as i32, reason: "mods".into() };
    app.admin().set_user_role(root.req(promote)).await.unwrap();
    let tokens = app
        .auth()
        .refresh(RefreshRequest { refresh_token: mia.tokens.refresh_token.clone() })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let mia = TestUser { user_id: mia.user_id, tokens };
    let secret = app.create_channel(&ann, "secret", ChannelKind::Private, &[&bob]).await.channel_id;
    app.send(&ann, &secret, "before it").await;
    let rude = app.send(&ann, &secret, "rude zebra words").await;
    app.send(&bob, &secret, "after it").await;
    hits(&app, &bob, "zebra", 1).await;
    let mut bobs = app.subscribe(&bob, &secret, Some(rude.seq + 1)).await;

    // Members cannot use the moderators' read; bad input names its field.
    let context = |before, after| GetMessageContextRequest { message_id: rude.message_id.clone(), before, after };
    assert_code(app.admin().get_message_context(ann.req(context(1, 1))).await, Code::PermissionDenied);
    assert_invalid(app.admin().get_message_context(mia.req(context(51, 0))).await, "before");
    let unknown = GetMessageContextRequest { message_id: "x".into(), before: 0, after: 0 };
    assert_invalid(app.admin().get_message_context(mia.req(unknown)).await, "message_id");

    // The moderator reads the message in its context; the read is audited.
    let read = app.admin().get_message_context(mia.req(context(5, 5))).await.unwrap().into_inner();
    assert!(read.audited);
    let texts: Vec<&str> = read.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["before it", "rude zebra words", "after it"]);
    let reads = ListAuditLogsRequest { action: "moderation.private_read".into(), ..Default::default() };
    let entries = audit_entries(&app, &root, reads, 1).await;
    assert_eq!(
        (entries[0].actor_id.as_str(), entries[0].target_id.as_str()),
        (mia.user_id.as_str(), rude.message_id.as_str())
    );
    assert_eq!(entries[0].metadata["channel_id"], secret);

    // Hidden: bob sees where it was, its sender and the moderator see it.
    let hidden =
        app.admin().moderate_message(mia.req(moderate(&rude.message_id, ModerationAction::Hide, "rude"))).await;
    let hidden = hidden.unwrap().into_inner().moderation.unwrap();
    let for_bob = seen_by(&app, &bob, &rude.message_id).await;
    assert!(for_bob.hidden && for_bob.text.is_empty(), "{for_bob:?}");
    let for_ann = seen_by(&app, &ann, &rude.message_id).await;
    assert_eq!((for_ann.hidden, for_ann.text.as_str()), (true, "rude zebra words"));
    match next_event(&mut bobs).await {
        Kind::MessageHidden(h) => assert_eq!(h.message_id, rude.message_id),
        other => panic!("expected the message to be hidden, got {other:?}"),
    }
    hits(&app, &bob, "zebra", 0).await;
    let replay = ListChannelEventsRequest { channel_id: secret.clone(), after_seq: 0, page_size: 0 };
    let replayed = app.messaging().list_channel_events(bob.req(replay.clone())).await.unwrap().into_inner().events;
    for event in &replayed {
        if let Some(Kind::MessageCreated(m)) = &event.kind {
            assert!(!m.text.contains("zebra"), "replayed {m:?}");
        }
    }
    let for_sender = app.messaging().list_channel_events(ann.req(replay)).await.unwrap().into_inner().events;
    assert!(
        for_sender.iter().any(|e| matches!(&e.kind, Some(Kind::MessageCreated(m)) if m.text == "rude zebra words"))
    );
    // Hiding it again changes nothing and answers the same record.
    let again = app.admin().moderate_message(mia.req(moderate(&rude.message_id, ModerationAction::Hide, "rude"))).await;
    assert_eq!(again.unwrap().into_inner().moderation.unwrap(), hidden);

    // Restored: everyone sees it again, live and in search.
    let restore = moderate(&rude.message_id, ModerationAction::Restore, "");
    app.admin().moderate_message(mia.req(restore.clone())).await.unwrap();
    assert_eq!(seen_by(&app, &bob, &rude.message_id).await.text, "rude zebra words");
    match next_event(&mut bobs).await {
        Kind::MessageRestored(m) => assert_eq!(m.text, "rude zebra words"),
        other => panic!("expected the message to be restored, got {other:?}"),
    }
    hits(&app, &bob, "zebra", 1).await;
    assert_code(app.admin().moderate_message(mia.req(restore.clone())).await, Code::FailedPrecondition);

    // Deleted for good: it cannot be restored.
    app.admin().moderate_message(mia.req(moderate(&rude.message_id, ModerationAction::Delete, "rude"))).await.unwrap();
    assert!(seen_by(&app, &bob, &rude.message_id).await.deleted);
    assert_code(app.admin().moderate_message(mia.req(restore)).await, Code::FailedPrecondition);
    let hide_deleted = moderate(&rude.message_id, ModerationAction::Hide, "again");
    assert_code(app.admin().moderate_message(mia.req(hide_deleted)).await, Code::FailedPrecondition);

    // Every action is on record, marked as taken from outside.
    let moderated = ListAuditLogsRequest { action: "message.moderated".into(), ..Default::default() };
    let entries = audit_entries(&app, &root, moderated, 3).await;
    let actions: Vec<&str> = entries.iter().map(|e| e.metadata["moderation_action"].as_str()).collect();
    assert_eq!(actions, ["delete", "restore", "hide"]);
    assert!(entries.iter().all(|e| e.metadata["outside_conversation"] == "true"));
}

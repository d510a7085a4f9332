use std::collections::HashSet;

use colink_proto::channels::v1::{AddMembersRequest, ChannelKind, RemoveMemberRequest};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{DeleteMessageRequest, EditMessageRequest};
use colink_proto::realtime::v1::connect_request::Frame as ClientFrame;
use colink_proto::realtime::v1::realtime_service_client::RealtimeServiceClient;
use colink_proto::realtime::v1::server_frame::Frame;
use colink_proto::realtime::v1::{
    ChannelCursor, ConnectRequest, ConnectResponse, PingFrame, SubscribeFrame, SubscribeRequest, TypingFrame,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::helpers::{TestApp, TestUser, assert_quiet, event, events, frame};

/// Opens a bidirectional stream; returns the sender for client frames.
pub(crate) async fn connect(
    app: &TestApp,
    user: &TestUser,
) -> (mpsc::Sender<ConnectRequest>, Streaming<ConnectResponse>) {
    let (tx, rx) = mpsc::channel(16);
    let stream = app.realtime().connect(user.req(ReceiverStream::new(rx))).await.expect("connect").into_inner();
    (tx, stream)
}

pub(crate) fn subscribe(cursors: Vec<ChannelCursor>, all_channels: bool) -> ConnectRequest {
    ConnectRequest { frame: Some(ClientFrame::Subscribe(SubscribeFrame { cursors, all_channels })) }
}

pub(crate) fn cursor(channel_id: &str, last_seq: Option<i64>) -> ChannelCursor {
    ChannelCursor { channel_id: channel_id.into(), last_seq }
}

fn created_text(kind: &Option<Kind>) -> String {
    match kind {
        Some(Kind::MessageCreated(m)) => m.text.clone(),
        other => panic!("expected a new message, got {other:?}"),
    }
}

/// Waits for the Subscribed frame of a channel.
pub(crate) async fn subscribed(stream: &mut Streaming<ConnectResponse>) -> i64 {
    loop {
        if let Frame::Subscribed(s) = frame(stream).await {
            return s.head_seq;
        }
    }
}

#[tokio::test]
async fn two_users_chat_live() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[&bob]).await;

    let (alice_tx, mut alice_rx) = connect(&app, &alice).await;
    let (bob_tx, mut bob_rx) = connect(&app, &bob).await;
    alice_tx.send(subscribe(vec![cursor(&room.channel_id, None)], false)).await.unwrap();
    bob_tx.send(subscribe(vec![cursor(&room.channel_id, None)], false)).await.unwrap();
    subscribed(&mut alice_rx).await;
    subscribed(&mut bob_rx).await;

    app.send(&alice, &room.channel_id, "hi bob").await;
    app.send(&bob, &room.channel_id, "hi alice").await;
    for stream in [&mut alice_rx, &mut bob_rx] {
        let got = events(stream, 2).await;
        assert_eq!(got.iter().map(|e| created_text(&e.kind)).collect::<Vec<_>>(), ["hi bob", "hi alice"]);
        assert_eq!(got[1].seq, got[0].seq + 1);
    }

    // Pings are answered; typing reaches the other member only.
    alice_tx.send(ConnectRequest { frame: Some(ClientFrame::Ping(PingFrame { nonce: 7 })) }).await.unwrap();
    loop {
        if let Frame::Pong(p) = frame(&mut alice_rx).await {
            assert_eq!(p.nonce, 7);
            break;
        }
    }
    alice_tx
        .send(ConnectRequest {
            frame: Some(ClientFrame::Typing(TypingFrame { channel_id: room.channel_id.clone(), stopped: false })),
        })
        .await
        .unwrap();
    loop {
        if let Frame::Typing(t) = frame(&mut bob_rx).await {
            assert_eq!(t.user_id, alice.user_id);
            break;
        }
    }
}

#[tokio::test]
async fn a_reconnecting_client_receives_exactly_what_it_missed_then_live_events() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;

    let mut stream = app.subscribe(&bob, &room.channel_id, None).await;
    app.send(&alice, &room.channel_id, "before").await;
    let seen = event(&mut stream).await;
    assert_eq!(created_text(&seen.kind), "before");
    drop(stream);

    for i in 0..100 {
        app.send(&alice, &room.channel_id, &format!("missed {i}")).await;
    }
    let mut resumed = app.subscribe(&bob, &room.channel_id, Some(seen.seq)).await;
    let replayed = events(&mut resumed, 100).await;
    let seqs: Vec<i64> = replayed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, ((seen.seq + 1)..=(seen.seq + 100)).collect::<Vec<_>>(), "in order, no gap, no duplicate");
    assert_eq!(created_text(&replayed[99].kind), "missed 99");
    loop {
        match frame(&mut resumed).await {
            Frame::CaughtUp(c) => {
                assert_eq!(c.seq, seen.seq + 100);
                break;
            }
            Frame::Event(e) => panic!("event after the replay before caught-up: {e:?}"),
            _ => {}
        }
    }
    app.send(&alice, &room.channel_id, "live again").await;
    let live = event(&mut resumed).await;
    assert_eq!((live.seq, created_text(&live.kind)), (seen.seq + 101, "live again".to_string()));
    assert_quiet(&mut resumed).await;
}

#[tokio::test]
async fn a_replay_longer_than_a_page_comes_whole_after_the_head() {
    let app = TestApp::spawn_with(|c| c.realtime.replay_page_size = 4).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let first = app.send(&alice, &room.channel_id, "seen").await;
    for i in 0..10 {
        app.send(&alice, &room.channel_id, &format!("missed {i}")).await;
    }

    let request = SubscribeRequest { cursors: vec![cursor(&room.channel_id, Some(first.seq))], all_channels: false };
    let mut stream = app.realtime().subscribe(bob.req(request)).await.expect("subscribe").into_inner();
    match frame(&mut stream).await {
        Frame::Subscribed(s) => assert_eq!(s.head_seq, first.seq + 10),
        other => panic!("expected the head first, got {other:?}"),
    }
    let replayed = events(&mut stream, 10).await;
    let texts: Vec<String> = replayed.iter().map(|e| created_text(&e.kind)).collect();
    assert_eq!(texts, (0..10).map(|i| format!("missed {i}")).collect::<Vec<_>>());
    assert_eq!(
        replayed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        ((first.seq + 1)..=(first.seq + 10)).collect::<Vec<_>>()
    );
    match frame(&mut stream).await {
        Frame::CaughtUp(c) => assert_eq!(c.seq, first.seq + 10),
        other => panic!("expected caught-up, got {other:?}"),
    }
    assert_quiet(&mut stream).await;
}

#[tokio::test]
async fn edits_and_deletions_arrive_live() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;
    let mut stream = app.subscribe(&bob, &room.channel_id, None).await;
    let sent = app.send(&alice, &room.channel_id, "typo").await;
    let edit = EditMessageRequest {
        message_id: sent.message_id.clone(),
        text: "fixed".into(),
        expected_version: 0,
        ..Default::default()
    };
    app.messaging().edit_message(alice.req(edit)).await.unwrap();
    app.messaging()
        .delete_message(alice.req(DeleteMessageRequest { message_id: sent.message_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let got = events(&mut stream, 3).await;
    assert_eq!(created_text(&got[0].kind), "typo");
    match &got[1].kind {
        Some(Kind::MessageEdited(m)) => assert_eq!((m.text.as_str(), m.version), ("fixed", 2)),
        other => panic!("expected an edit, got {other:?}"),
    }
    match &got[2].kind {
        Some(Kind::MessageDeleted(d)) => assert_eq!(d.message_id, sent.message_id),
        other => panic!("expected a deletion, got {other:?}"),
    }
}

#[tokio::test]
async fn membership_changes_arrive_live_and_removal_ends_delivery() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "secret", ChannelKind::Private, &[]).await;

    // Bob follows all his conversations; he is in none yet.
    let (bob_tx, mut bob_rx) = connect(&app, &bob).await;
    bob_tx.send(subscribe(vec![], true)).await.unwrap();
    // Frames are handled in order: the pong means the subscription is in place.
    bob_tx.send(ConnectRequest { frame: Some(ClientFrame::Ping(PingFrame { nonce: 1 })) }).await.unwrap();
    while !matches!(frame(&mut bob_rx).await, Frame::Pong(_)) {}
    let add = AddMembersRequest {
        channel_id: room.channel_id.clone(),
        user_ids: vec![bob.user_id.clone()],
        role: 0,
        ..Default::default()
    };
    app.channels().add_members(alice.req(add)).await.unwrap();
    let joined = event(&mut bob_rx).await;
    assert!(matches!(&joined.kind, Some(Kind::MemberJoined(m)) if m.user_id == bob.user_id), "{joined:?}");
    app.send(&alice, &room.channel_id, "welcome").await;
    let welcome = event(&mut bob_rx).await;
    assert_eq!((created_text(&welcome.kind), welcome.seq), ("welcome".to_string(), joined.seq + 1));

    let remove =
        RemoveMemberRequest { channel_id: room.channel_id.clone(), user_id: bob.user_id.clone(), ..Default::default() };
    app.channels().remove_member(alice.req(remove)).await.unwrap();
    let left = event(&mut bob_rx).await;
    assert!(matches!(&left.kind, Some(Kind::MemberLeft(m)) if m.user_id == bob.user_id), "{left:?}");
    loop {
        if let Frame::Unsubscribed(u) = frame(&mut bob_rx).await {
            assert_eq!((u.channel_id.as_str(), u.reason.as_str()), (room.channel_id.as_str(), "removed"));
            break;
        }
    }
    app.send(&alice, &room.channel_id, "bob cannot see this").await;
    assert_quiet(&mut bob_rx).await;
}

#[tokio::test]
async fn a_slow_client_is_told_to_resume_and_never_stalls_the_others() {
    let app = TestApp::spawn_with(|c| {
        c.realtime.stream_buffer = 16;
        c.realtime.slow_client_grace_ms = 200;
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "busy", ChannelKind::Public, &[&bob]).await;
    // The slow reader has a connection of its own with a small HTTP/2 window,
    // so the server's bounded buffer, not the client's, is what fills up.
    let slow_connection = tonic::transport::Endpoint::from_shared(app.uri())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let request = bob.req(SubscribeRequest { cursors: vec![cursor(&room.channel_id, None)], all_channels: false });
    let mut slow = RealtimeServiceClient::new(slow_connection).subscribe(request).await.unwrap().into_inner();
    assert!(matches!(frame(&mut slow).await, Frame::Subscribed(_)));
    let mut fast = app.subscribe(&alice, &room.channel_id, None).await;
    let total = 200;
    let filler = "x".repeat(2_000);
    let mut fast_seen = Vec::new();
    for i in 0..total {
        app.send(&alice, &room.channel_id, &format!("m{i} {filler}")).await;
        // The fast reader keeps up while the slow one reads nothing.
        fast_seen.push(event(&mut fast).await.seq);
    }
    assert_eq!(fast_seen.len(), total);

    // The slow reader gets a prefix of the events, in order, then a resume hint
    // whose cursor is exactly where that prefix ends.
    let mut delivered = Vec::new();
    let resume = loop {
        match frame(&mut slow).await {
            Frame::Event(e) => delivered.push(e.seq),
            Frame::ResumeRequired(r) => break r,
            _ => {}
        }
    };
    assert_eq!(resume.reason, "slow_consumer");
    assert!(delivered.len() < total, "the buffer is far smaller than the burst");
    assert!(delivered.windows(2).all(|w| w[1] == w[0] + 1), "no gap inside what was delivered");
    let cursor = resume.cursors.iter().find(|c| c.channel_id == room.channel_id).and_then(|c| c.last_seq).unwrap();
    assert_eq!(Some(&cursor), delivered.last());

    // Resuming from that cursor yields the rest: nothing lost, nothing twice.
    let mut resumed = app.subscribe(&bob, &room.channel_id, Some(cursor)).await;
    let rest = events(&mut resumed, fast_seen.iter().filter(|s| **s > cursor).count()).await;
    let all: HashSet<i64> = delivered.iter().copied().chain(rest.iter().map(|e| e.seq)).collect();
    assert!(fast_seen.iter().all(|s| all.contains(s)));
    assert_eq!(all.len(), delivered.len() + rest.len());
}

#[tokio::test]
async fn streams_renew_their_token_and_unsubscribe_on_request() {
    use colink_proto::auth::v1::RefreshRequest;
    use colink_proto::realtime::v1::{ReauthenticateFrame, UnsubscribeFrame};

    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let (tx, mut rx) = connect(&app, &alice).await;
    tx.send(subscribe(vec![cursor(&room.channel_id, None)], false)).await.unwrap();
    subscribed(&mut rx).await;

    let fresh = app.auth().refresh(RefreshRequest { refresh_token: alice.tokens.refresh_token.clone() }).await.unwrap();
    let renew = |token: String| ConnectRequest {
        frame: Some(ClientFrame::Reauthenticate(ReauthenticateFrame { access_token: token })),
    };
    tx.send(renew(fresh.into_inner().tokens.unwrap().access_token)).await.unwrap();
    // Someone else's token cannot take the stream over.
    tx.send(renew(mallory.token().to_string())).await.unwrap();
    match frame(&mut rx).await {
        Frame::Error(e) => assert_eq!(e.code, "PERMISSION_DENIED"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    tx.send(renew("garbage".into())).await.unwrap();
    match frame(&mut rx).await {
        Frame::Error(e) => assert_eq!(e.code, "UNAUTHENTICATED"),
        other => panic!("expected an error frame, got {other:?}"),
    }

    let unsubscribe = ClientFrame::Unsubscribe(UnsubscribeFrame { channel_ids: vec![room.channel_id.clone()] });
    tx.send(ConnectRequest { frame: Some(unsubscribe) }).await.unwrap();
    match frame(&mut rx).await {
        Frame::Unsubscribed(u) => assert_eq!(u.reason, "requested"),
        other => panic!("expected the unsubscription, got {other:?}"),
    }
    app.send(&alice, &room.channel_id, "nobody listens").await;
    assert_quiet(&mut rx).await;
}

#[tokio::test]
async fn a_browser_follows_a_channel_over_grpc_web() {
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[&bob]).await;

    let addr = app.uri().trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = SubscribeRequest { cursors: vec![cursor(&room.channel_id, None)], all_channels: false }.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&body);
    let request = format!(
        "POST /colink.realtime.v1.RealtimeService/Subscribe HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        bob.token(),
        framed.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&framed).await.unwrap();

    // Reads the open response until it holds `needle`.
    let mut received = Vec::new();
    let mut read_until = async |needle: &[u8]| {
        let mut chunk = [0u8; 4096];
        while !received.windows(needle.len()).any(|w| w == needle) {
            let n = tokio::time::timeout(crate::helpers::WAIT, socket.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&chunk[..n]);
        }
    };
    read_until(b"HTTP/1.1 200").await;
    // The Subscribed frame names the channel.
    read_until(room.channel_id.as_bytes()).await;
    app.send(&alice, &room.channel_id, "hello browser").await;
    read_until(b"hello browser").await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("application/grpc-web"), "{text}");
}

#[tokio::test]
async fn an_unknown_realtime_method_is_named_in_an_unimplemented_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let addr = app.uri().trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /colink.realtime.v1.RealtimeService/Teleport HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\n",
        alice.token()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(&[0, 0, 0, 0, 0]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(crate::helpers::WAIT, socket.read_to_end(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.contains("grpc-status: 12") || text.contains("grpc-status:12"), "{text}");
    assert!(text.contains("Teleport"), "the answer names the method: {text}");
}

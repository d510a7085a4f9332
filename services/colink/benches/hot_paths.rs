//! Micro-benchmarks of the three paths every message takes: checking the
//! caller's token, taking a sequence number and storing the message, and
//! fanning the stored event out to the streams that follow its channel.
//! `colink bench` measures the whole node; these isolate the parts. Two
//! sign-in costs stand beside them: a password check, and a whole passkey
//! sign-in.

use std::sync::Arc;
use std::time::Duration;

use colink_migrations::MigratorTrait;
use colink_proto::auth::v1::auth_service_client::AuthServiceClient;
use colink_proto::auth::v1::{
    BeginPasskeyRegistrationRequest, BeginPasskeySignInRequest, CheckSessionRequest, FinishPasskeyRegistrationRequest,
    FinishPasskeySignInRequest, RegisterRequest,
};
use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{ChannelEvent, Message};
use colink_proto::realtime::v1::{ServerFrame, server_frame::Frame as ServerFrameKind};
use colink_realtime::wire::{EventHead, Outgoing};
use colink_runtime::auth::TokenVerifier;
use colink_runtime::clients::PeerChannel;
use colink_runtime::config::DatabaseConfig;
use colink_runtime::events::{InProcessEventLog, spawn_relay};
use colink_runtime::ids::{new_id, now_micros, timestamp};
use colink_runtime::pubsub::{Frame, MemoryPubSub, PubSub, channel_topic};
use colink_runtime::token::{self, Claims};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use prost::Message as _;
use prost::bytes::Bytes;
use tokio::sync::broadcast::Receiver;

#[path = "../tests/api/soft_authenticator.rs"]
mod soft_authenticator;

const ISSUER: &str = "colink-bench";

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(err) => panic!("cannot start a tokio runtime: {err}"),
    }
}

fn signed_token(key: &SigningKey) -> String {
    let now = now_micros() / 1_000_000;
    let claims = Claims {
        iss: ISSUER.into(),
        sub: new_id(),
        sid: new_id(),
        usr: "bench".into(),
        role: "member".into(),
        iat: now,
        exp: now + 3_600,
    };
    let signing = token::encoding_key(key).unwrap_or_else(|e| panic!("bench key: {e}"));
    token::sign(&claims, "k1", &signing).unwrap_or_else(|e| panic!("cannot sign the bench token: {e}"))
}

fn token_check(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = token::decoding_key(&key.verifying_key());
    let token = signed_token(&key);
    let mut group = c.benchmark_group("token_check");
    group.bench_function("signature", |b| {
        b.iter(|| token::verify(std::hint::black_box(&token), &public, ISSUER));
    });
    // A node with a real auth service: the first use of a token on a node
    // checks its session there (one CheckSession call); later uses are
    // remembered until the session ends.
    let rt = runtime();
    let (node, _data, token) = rt.block_on(auth_node());
    // Channels spawn their connection task on the runtime.
    let _entered = rt.enter();
    let auth_channel = || {
        tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
            .unwrap_or_else(|e| panic!("node address: {e}"))
            .connect_lazy()
    };
    let verifier = TokenVerifier::new("colink".into(), PeerChannel::remote(auth_channel()));
    group.bench_function("remembered", |b| {
        b.to_async(&rt).iter(|| async {
            if verifier.verify(std::hint::black_box(&token)).await.is_err() {
                panic!("the bench token was refused");
            }
        });
    });
    let auth = AuthServiceClient::new(auth_channel());
    group.bench_function("session_check_first_use", |b| {
        b.to_async(&rt).iter(|| {
            let mut auth = auth.clone();
            let request = CheckSessionRequest { access_token: token.clone() };
            async move {
                if auth.check_session(request).await.is_err() {
                    panic!("the bench session was refused");
                }
            }
        });
    });
    group.finish();
    if let Err(err) = rt.block_on(node.shutdown()) {
        eprintln!("the bench node did not stop cleanly: {err}");
    }
}

/// A node on SQLite in a temporary directory, and an access token of an
/// account registered on it.
async fn auth_node() -> (colink::Node, tempfile::TempDir, String) {
    let data = tempfile::TempDir::new().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut config = colink_runtime::config::Config {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("address: {e}")),
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.auth.argon2_memory_kib = 64;
    config.auth.argon2_iterations = 1;
    // The benchmarks sign in far more often than one address may.
    config.ephemeral.anonymous_per_address_per_minute = 0;
    let node = colink::Node::start(config).await.unwrap_or_else(|e| panic!("node: {e}"));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
        .unwrap_or_else(|e| panic!("node address: {e}"));
    let mut auth = AuthServiceClient::new(endpoint.connect_lazy());
    let request = RegisterRequest {
        username: "bench".into(),
        email: "bench@example.com".into(),
        password: "correct horse battery".into(),
        display_name: String::new(),
    };
    let registered = auth.register(request).await.unwrap_or_else(|e| panic!("register: {e}")).into_inner();
    let token = registered.tokens.map(|t| t.access_token).unwrap_or_default();
    (node, data, token)
}

fn seq_and_insert(c: &mut Criterion) {
    let rt = runtime();
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => panic!("cannot make a temporary directory: {err}"),
    };
    let (writer, channels) = rt.block_on(async {
        let db = match colink_runtime::db::connect(&DatabaseConfig::default(), dir.path(), "messaging").await {
            Ok(db) => db,
            Err(err) => panic!("cannot open the bench database: {err}"),
        };
        if let Err(err) = colink_migrations::messaging::Migrator::up(&db.writer, None).await {
            panic!("cannot migrate the bench database: {err}");
        }
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let (outbox, _relay) = spawn_relay("messaging", db.clone(), Arc::new(InProcessEventLog::default()), shutdown);
        let pubsub: Arc<dyn PubSub> = Arc::new(MemoryPubSub::new(1024));
        let channels: Vec<String> = (0..16).map(|_| new_id()).collect();
        (colink_messaging::commit::GroupCommit::spawn(db, outbox, pubsub), channels)
    });
    let sender = new_id();
    let message = |i: usize| colink_messaging::commit::NewMessage {
        sender_id: sender.clone(),
        channel_id: channels[i % channels.len()].clone(),
        text: "a message of ordinary length, about sixty characters long".into(),
        thread: None,
        mentions: Default::default(),
        file_ids: Vec::new(),
        scanning_file_ids: Vec::new(),
        idempotency_key: Some(new_id()),
        request_fingerprint: Some(new_id()),
        origin: Default::default(),
    };
    let mut group = c.benchmark_group("seq_and_insert");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for concurrent in [1_usize, 64] {
        group.throughput(Throughput::Elements(concurrent as u64));
        group.bench_function(format!("{concurrent} concurrent sends"), |b| {
            b.to_async(&rt).iter_batched(
                || (0..concurrent).map(message).collect::<Vec<_>>(),
                |batch| async {
                    let sends = batch.into_iter().map(|m| {
                        let writer = writer.clone();
                        tokio::spawn(async move { writer.store(m).await })
                    });
                    for send in futures_util::future::join_all(sends).await {
                        if !matches!(send, Ok(Ok(_))) {
                            panic!("a bench send failed");
                        }
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let channel_id = new_id();
    let event = ChannelEvent {
        channel_id: channel_id.clone(),
        seq: 42,
        occur_time: Some(timestamp(now_micros())),
        actor_id: new_id(),
        kind: Some(Kind::MessageCreated(Message {
            message_id: new_id(),
            channel_id: channel_id.clone(),
            seq: 42,
            sender_id: new_id(),
            text: "a message of ordinary length, about sixty characters long".into(),
            version: 1,
            create_time: Some(timestamp(now_micros())),
            ..Default::default()
        })),
    };
    let mut group = c.benchmark_group("fan_out");
    for streams in [100_usize, 10_000] {
        group.throughput(Throughput::Elements(streams as u64));
        let pubsub = MemoryPubSub::new(16);
        let topic = channel_topic(&channel_id);
        let mut receivers = rt.block_on(async {
            let mut receivers = Vec::with_capacity(streams);
            for _ in 0..streams {
                receivers.push(pubsub.subscribe(&topic).await);
            }
            receivers
        });
        // One publish, then what each stream does with it. As streams did
        // first: decode the event and encode the frame its client receives.
        let mut out = Vec::with_capacity(1024);
        group.bench_function(format!("{streams} streams, decode and encode"), |b| {
            b.iter(|| {
                publish_to_all(&rt, &pubsub, &topic, &event, &mut receivers, |body| {
                    let Ok(delivered) = ChannelEvent::decode(body) else { panic!("undecodable event") };
                    let response = ServerFrame { frame: Some(ServerFrameKind::Event(delivered)) };
                    out.clear();
                    prost::encoding::message::encode(1, &response, &mut out);
                    out.len()
                })
            });
        });
        // As they do now: read the event's head, write the bytes as published.
        group.bench_function(format!("{streams} streams, head only"), |b| {
            b.iter(|| {
                publish_to_all(&rt, &pubsub, &topic, &event, &mut receivers, |body| {
                    let Ok(head) = EventHead::decode(body.clone()) else { panic!("undecodable event") };
                    assert_eq!(head.seq, 42);
                    out.clear();
                    Outgoing::Event(body).write(&mut out);
                    out.len()
                })
            });
        });
    }
    group.finish();
}

/// Publishes the event once and hands each stream's copy of its body to
/// `deliver`; returns the bytes written for all streams.
fn publish_to_all(
    rt: &tokio::runtime::Runtime,
    pubsub: &MemoryPubSub,
    topic: &str,
    event: &ChannelEvent,
    receivers: &mut [Receiver<Bytes>],
    mut deliver: impl FnMut(Bytes) -> usize,
) -> usize {
    let frame = Frame::Event(event.encode_to_vec().into()).encode();
    rt.block_on(pubsub.publish(topic, frame));
    let mut bytes = 0;
    for receiver in receivers {
        let Ok(payload) = receiver.try_recv() else { panic!("a stream missed the event") };
        let Some(Frame::Event(body)) = Frame::decode(payload) else { panic!("not an event frame") };
        bytes += deliver(body);
    }
    bytes
}

/// What one password sign-in costs in CPU: an Argon2id check at the
/// default cost (19 MiB, 2 passes, 1 lane), which is nearly all of a login;
/// one core does 1 / this many a second.
fn password_check(c: &mut Criterion) {
    use argon2::{Algorithm, Argon2, Params, Version};
    let defaults = colink_runtime::config::AuthConfig::default();
    let params = Params::new(defaults.argon2_memory_kib, defaults.argon2_iterations, defaults.argon2_parallelism, None)
        .unwrap_or_else(|e| panic!("argon2 parameters: {e}"));
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut stored = [0_u8; 32];
    let mut work = [0_u8; 32];
    if let Err(err) = argon2.hash_password_into(b"correct horse battery", b"sixteen byte salt", &mut stored) {
        panic!("hash: {err}");
    }
    let mut group = c.benchmark_group("password_check");
    group.sample_size(20);
    group.bench_function("argon2id_default_cost", |b| {
        b.iter(|| {
            if argon2.hash_password_into(b"correct horse battery", b"sixteen byte salt", &mut work).is_err()
                || work != stored
            {
                panic!("the password did not check");
            }
        });
    });
    group.finish();
}

/// A whole passkey sign-in through the gRPC client against a node on
/// SQLite: BeginPasskeySignIn, the authenticator's P-256 signature, and
/// FinishPasskeySignIn (the WebAuthn checks, the ceremony spent, the sign
/// count and a new session stored).
fn passkey_sign_in(c: &mut Criterion) {
    let rt = runtime();
    let (node, _data, token) = rt.block_on(auth_node());
    let _entered = rt.enter();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr()))
        .unwrap_or_else(|e| panic!("node address: {e}"));
    let auth = AuthServiceClient::new(endpoint.connect_lazy());
    let mut authenticator = soft_authenticator::Authenticator::new("http://localhost:7700");
    rt.block_on(async {
        let mut auth = auth.clone();
        let begin =
            colink_runtime::clients::with_token(&token, BeginPasskeyRegistrationRequest { name: "bench".into() });
        let begun = auth.begin_passkey_registration(begin).await.unwrap_or_else(|e| panic!("begin: {e}")).into_inner();
        let credential_json =
            authenticator.create(&begun.creation_options_json).unwrap_or_else(|e| panic!("create: {e}"));
        let finish = FinishPasskeyRegistrationRequest { registration_id: begun.registration_id, credential_json };
        if let Err(err) = auth.finish_passkey_registration(colink_runtime::clients::with_token(&token, finish)).await {
            panic!("finish: {err}");
        }
    });
    let authenticator = std::sync::Mutex::new(authenticator);
    let mut group = c.benchmark_group("passkey_sign_in");
    group.bench_function("begin_sign_finish", |b| {
        b.to_async(&rt).iter(|| {
            let mut auth = auth.clone();
            let authenticator = &authenticator;
            async move {
                let begun = auth.begin_passkey_sign_in(BeginPasskeySignInRequest {}).await;
                let begun = begun.unwrap_or_else(|e| panic!("begin: {e}")).into_inner();
                let credential_json = match authenticator.lock() {
                    Ok(mut authenticator) => authenticator.get(&begun.request_options_json),
                    Err(_) => panic!("the authenticator was poisoned"),
                };
                let finish = FinishPasskeySignInRequest {
                    sign_in_id: begun.sign_in_id,
                    credential_json,
                    device_name: String::new(),
                };
                if let Err(err) = auth.finish_passkey_sign_in(finish).await {
                    panic!("the passkey sign-in was refused: {err}");
                }
            }
        });
    });
    group.finish();
    if let Err(err) = rt.block_on(node.shutdown()) {
        eprintln!("the bench node did not stop cleanly: {err}");
    }
}

criterion_group!(hot_paths, token_check, seq_and_insert, fan_out, password_check, passkey_sign_in);
criterion_main!(hot_paths);

//! Unread counts against a model: random sequences of sends, replies,
//! edits, deletions, recalls, reads (on two sessions), mutes, leaving and
//! joining again, after each of which the server's counts for one user must
//! equal what a plain in-test model says.

use std::collections::BTreeMap;

use colink_proto::auth::v1::{LoginRequest, login_response};
use colink_proto::channels::v1::{
    ChannelKind, ChannelPreferences, JoinChannelRequest, LeaveChannelRequest, UpdateChannelPreferencesRequest,
};
use colink_proto::messaging::v1::{
    DeleteMessageRequest, EditMessageRequest, GetUnreadCountsRequest, MarkReadRequest, RecallMessageRequest,
    SendMessageRequest, UnreadCounts,
};
use prost_types::FieldMask;

use crate::helpers::{TestApp, TestUser, WAIT};

/// A small deterministic generator, so a failure repeats with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Debug)]
struct Msg {
    id: String,
    seq: i64,
    channel: usize,
    sender: usize,
    root: Option<String>,
    in_main: bool,
    mentions_me: bool,
    live: bool,
}

#[derive(Debug)]
struct Chan {
    id: String,
    member: bool,
    muted: bool,
    read: i64,
}

/// My follower row of a thread, as the server keeps it.
#[derive(Debug, Default)]
struct Follow {
    row: bool,
    following: bool,
    read: i64,
}

/// What the server should say, as (unread, mentions) per conversation and
/// per followed thread.
type Expected = (BTreeMap<String, (i64, i64, bool)>, BTreeMap<String, (i64, i64)>);

struct Model {
    chans: Vec<Chan>,
    msgs: Vec<Msg>,
    follows: BTreeMap<String, Follow>,
}

const ME: usize = 0;

impl Model {
    fn expected(&self) -> Expected {
        let mut channels = BTreeMap::new();
        for (i, c) in self.chans.iter().enumerate().filter(|(_, c)| c.member) {
            let unread =
                self.msgs.iter().filter(|m| m.channel == i && m.in_main && m.live && m.sender != ME && m.seq > c.read);
            let count = unread.clone().count() as i64;
            let mentions = unread.filter(|m| m.mentions_me).count() as i64;
            channels.insert(c.id.clone(), (if c.muted { 0 } else { count }, mentions, c.muted));
        }
        let mut threads = BTreeMap::new();
        for (root, f) in self.follows.iter().filter(|(_, f)| f.following) {
            let replies: Vec<&Msg> = self.msgs.iter().filter(|m| m.root.as_deref() == Some(root) && m.live).collect();
            if replies.is_empty() {
                continue;
            }
            let unread: Vec<&&Msg> = replies.iter().filter(|m| m.sender != ME && m.seq > f.read).collect();
            let mentions = unread.iter().filter(|m| m.mentions_me).count() as i64;
            threads.insert(root.clone(), (unread.len() as i64, mentions));
        }
        (channels, threads)
    }
}

fn observed(counts: &UnreadCounts) -> Expected {
    let channels =
        counts.channels.iter().map(|c| (c.channel_id.clone(), (c.unread_count, c.mention_count, c.muted))).collect();
    let threads = counts.threads.iter().map(|t| (t.thread_id.clone(), (t.unread_count, t.mention_count))).collect();
    (channels, threads)
}

async fn counts(app: &TestApp, user: &TestUser) -> UnreadCounts {
    let request = GetUnreadCountsRequest::default();
    app.messaging().get_unread_counts(user.req(request)).await.unwrap().into_inner().counts.unwrap()
}

/// Waits for changes that travel as events (mutes, joins, leaves).
async fn until_counts(app: &TestApp, user: &TestUser, done: impl Fn(&UnreadCounts) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&counts(app, user).await) {
        assert!(tokio::time::Instant::now() < deadline, "the change never showed in the counts");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn run(seed: u64, steps: usize) {
    let app = TestApp::spawn().await;
    let me = app.register("myself").await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    // The same user signed in on a second device.
    let login =
        LoginRequest { login: "myself".into(), password: "correct horse battery".into(), device_name: "phone".into() };
    let second = app.auth().login(login).await.unwrap().into_inner();
    let Some(login_response::Result::Tokens(tokens)) = second.result else { panic!("signed in") };
    let phone = TestUser { user_id: me.user_id.clone(), tokens };
    let people = [me.clone(), alice.clone(), carol.clone()];
    let mut model = Model { chans: Vec::new(), msgs: Vec::new(), follows: BTreeMap::new() };
    for name in ["one", "two"] {
        let c = app.create_channel(&alice, name, ChannelKind::Public, &[&me, &carol]).await;
        model.chans.push(Chan { id: c.channel_id, member: true, muted: false, read: 0 });
    }
    let ids: Vec<String> = model.chans.iter().map(|c| c.id.clone()).collect();
    until_counts(&app, &me, |c| c.channels.len() == 2).await;
    let mut rng = Rng(seed);
    let (mut checked, mut busiest) = (0, 0);
    for step in 0..steps {
        let op = rng.below(100);
        let chan = rng.below(model.chans.len());
        let sender = rng.below(3);
        let member = model.chans[chan].member;
        let mut done = format!("step {step}: ");
        match op {
            // Send a top-level message, perhaps naming me or everyone.
            0..=29 => {
                if sender == ME && !member {
                    continue;
                }
                let (text, named, everyone) = match rng.below(10) {
                    0..=2 if sender != ME => ("hey @myself", true, false),
                    3 if sender != ME => ("@channel heads up", false, true),
                    _ => ("chatter", false, false),
                };
                let m = app.send(&people[sender], &ids[chan], text).await;
                if sender == ME {
                    model.chans[chan].read = m.seq;
                }
                model.msgs.push(Msg {
                    id: m.message_id,
                    seq: m.seq,
                    channel: chan,
                    sender,
                    root: None,
                    in_main: true,
                    mentions_me: (named && member) || everyone,
                    live: true,
                });
                done.push_str(&format!("{sender} sent {text:?} to {chan}"));
            }
            // Reply in a thread, sometimes also to the channel.
            30..=49 => {
                let roots: Vec<Msg> =
                    model.msgs.iter().filter(|m| m.channel == chan && m.root.is_none() && m.live).cloned().collect();
                if roots.is_empty() || (sender == ME && !member) {
                    continue;
                }
                let root = roots[rng.below(roots.len())].clone();
                let also = rng.chance(30);
                let named = sender != ME && rng.chance(30);
                let text = if named { "reply for @myself" } else { "reply" };
                let request = SendMessageRequest {
                    channel_id: ids[chan].clone(),
                    thread_id: root.id.clone(),
                    text: text.into(),
                    also_send_to_channel: also,
                    ..Default::default()
                };
                let m = app.messaging().send_message(people[sender].req(request)).await.unwrap().into_inner();
                let m = m.message.unwrap();
                // The server's order: the replier, the root's author, those mentioned.
                let follow = model.follows.entry(root.id.clone()).or_default();
                if sender == ME {
                    follow.row = true;
                    follow.following = true;
                    follow.read = follow.read.max(m.seq);
                    if also {
                        model.chans[chan].read = m.seq;
                    }
                } else {
                    if root.sender == ME && member && !follow.row {
                        *follow = Follow { row: true, following: true, read: 0 };
                    }
                    if named && member {
                        if !follow.row {
                            follow.read = m.seq - 1;
                        }
                        follow.row = true;
                        follow.following = true;
                    }
                }
                model.msgs.push(Msg {
                    id: m.message_id,
                    seq: m.seq,
                    channel: chan,
                    sender,
                    root: Some(root.id),
                    in_main: also,
                    mentions_me: named && member,
                    live: true,
                });
                done.push_str(&format!("{sender} replied {text:?} in {chan} (also: {also})"));
            }
            // Edit, delete or recall someone else's message.
            50..=64 => {
                let theirs: Vec<usize> =
                    (0..model.msgs.len()).filter(|&i| model.msgs[i].live && model.msgs[i].sender != ME).collect();
                if theirs.is_empty() {
                    continue;
                }
                let i = theirs[rng.below(theirs.len())];
                let m = model.msgs[i].clone();
                let author = &people[m.sender];
                match rng.below(3) {
                    0 => {
                        let named = !m.mentions_me;
                        let text = if named { "edited for @myself" } else { "edited" };
                        let edit = EditMessageRequest {
                            message_id: m.id.clone(),
                            text: text.into(),
                            expected_version: 0,
                            ..Default::default()
                        };
                        app.messaging().edit_message(author.req(edit)).await.unwrap();
                        model.msgs[i].mentions_me = named && model.chans[m.channel].member;
                        done.push_str(&format!("edited {} to {text:?}", m.seq));
                    }
                    1 => {
                        let delete = DeleteMessageRequest { message_id: m.id.clone(), ..Default::default() };
                        app.messaging().delete_message(author.req(delete)).await.unwrap();
                        model.msgs[i].live = false;
                        done.push_str(&format!("deleted {}", m.seq));
                    }
                    _ => {
                        let recall = RecallMessageRequest { message_id: m.id.clone(), ..Default::default() };
                        app.messaging().recall_message(author.req(recall)).await.unwrap();
                        model.msgs[i].live = false;
                        done.push_str(&format!("recalled {}", m.seq));
                    }
                }
            }
            // Read up to some message, on either device.
            65..=84 => {
                let seqs: Vec<i64> = model.msgs.iter().filter(|m| m.channel == chan).map(|m| m.seq).collect();
                if !member || seqs.is_empty() {
                    continue;
                }
                let seq = seqs[rng.below(seqs.len())];
                let device = if rng.chance(50) { &me } else { &phone };
                let request = MarkReadRequest { channel_id: ids[chan].clone(), seq, ..Default::default() };
                app.messaging().mark_read(device.req(request)).await.unwrap();
                model.chans[chan].read = model.chans[chan].read.max(seq);
                done.push_str(&format!("read {chan} up to {seq}"));
            }
            // Mute or unmute.
            85..=92 => {
                if !member {
                    continue;
                }
                let muted = !model.chans[chan].muted;
                let request = UpdateChannelPreferencesRequest {
                    channel_id: ids[chan].clone(),
                    preferences: Some(ChannelPreferences { muted, ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["muted".into()] }),
                    ..Default::default()
                };
                app.channels().update_channel_preferences(me.req(request)).await.unwrap();
                model.chans[chan].muted = muted;
                let id = ids[chan].clone();
                until_counts(&app, &me, |c| c.channels.iter().any(|x| x.channel_id == id && x.muted == muted)).await;
                done.push_str(&format!("muted {chan}: {muted}"));
            }
            // Leave, or join again.
            _ => {
                let id = ids[chan].clone();
                if member {
                    app.channels()
                        .leave_channel(me.req(LeaveChannelRequest { channel_id: id.clone(), ..Default::default() }))
                        .await
                        .unwrap();
                    until_counts(&app, &me, |c| !c.channels.iter().any(|x| x.channel_id == id)).await;
                    model.chans[chan].member = false;
                    let roots: Vec<String> = model
                        .msgs
                        .iter()
                        .filter(|m| m.channel == chan && m.root.is_none())
                        .map(|m| m.id.clone())
                        .collect();
                    for root in roots {
                        if let Some(f) = model.follows.get_mut(&root) {
                            f.following = false;
                        }
                    }
                    done.push_str(&format!("left {chan}"));
                } else {
                    app.channels()
                        .join_channel(me.req(JoinChannelRequest { channel_id: id.clone(), ..Default::default() }))
                        .await
                        .unwrap();
                    until_counts(&app, &me, |c| c.channels.iter().any(|x| x.channel_id == id)).await;
                    // Everything before joining counts as read.
                    let read = model.msgs.iter().filter(|m| m.channel == chan).map(|m| m.seq).max().unwrap_or(0);
                    let c = &mut model.chans[chan];
                    c.member = true;
                    c.muted = false;
                    c.read = read;
                    done.push_str(&format!("joined {chan}"));
                }
            }
        }
        let got = observed(&counts(&app, &me).await);
        let want = model.expected();
        assert_eq!(got, want, "seed {seed}, after {done}");
        checked += 1;
        busiest =
            busiest.max(want.0.values().map(|c| c.0 + c.1).sum::<i64>() + want.1.values().map(|t| t.0).sum::<i64>());
    }
    // The sequence exercised the counts, not just empty ones.
    assert!(checked > steps / 2 && busiest >= 5, "seed {seed}: {checked} checks, at most {busiest} unread");
}

#[tokio::test]
async fn unread_counts_match_a_model_after_random_sequences() {
    for seed in [0x9e37_79b9_7f4a_7c15, 0x2545_f491_4f6c_dd1d, 42] {
        run(seed, 80).await;
    }
}

//! A stream's copy of its user's unread counts. It starts from the messaging
//! service's counts and follows the conversation events the stream already
//! receives, so a new message costs no call per member; whatever an event
//! cannot settle exactly (a broadcast mention, an edit that may change
//! mentions, a new follow) is counted again by the messaging service.

use std::collections::HashMap;

use colink_proto::messaging::v1::channel_event::Kind;
use colink_proto::messaging::v1::{ChannelEvent, ChannelUnread, MessageMentions, ThreadUnread, UnreadCounts};
use colink_proto::realtime::v1::UnreadCountsFrame;

/// What an event or a recount changed, and what must be counted again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub channels: Vec<String>,
    pub threads: Vec<String>,
    pub removed_channels: Vec<String>,
    pub removed_threads: Vec<String>,
    pub recount_channels: Vec<String>,
    pub recount_threads: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.threads.is_empty()
            && self.removed_channels.is_empty()
            && self.removed_threads.is_empty()
    }

    pub fn needs_recount(&self) -> bool {
        !self.recount_channels.is_empty() || !self.recount_threads.is_empty()
    }
}

pub struct Unread {
    me: String,
    channels: HashMap<String, ChannelUnread>,
    threads: HashMap<String, ThreadUnread>,
}

fn mentions_me(mentions: Option<&MessageMentions>, me: &str) -> bool {
    mentions.is_some_and(|m| m.user_ids.iter().any(|id| id == me))
}

fn broadcast(mentions: Option<&MessageMentions>) -> bool {
    mentions.is_some_and(|m| m.channel)
}

impl Unread {
    pub fn new(me: &str, counts: UnreadCounts) -> Self {
        let mut unread = Self { me: me.to_string(), channels: HashMap::new(), threads: HashMap::new() };
        unread.merge(counts, &[], &[]);
        unread
    }

    /// Takes recounted entries; those asked for but not answered are gone
    /// (the user left, or no longer follows).
    pub fn merge(&mut self, counts: UnreadCounts, asked_channels: &[String], asked_threads: &[String]) -> Delta {
        let mut delta = Delta::default();
        for c in counts.channels {
            delta.channels.push(c.channel_id.clone());
            self.channels.insert(c.channel_id.clone(), c);
        }
        for t in counts.threads {
            delta.threads.push(t.thread_id.clone());
            self.threads.insert(t.thread_id.clone(), t);
        }
        for id in asked_channels {
            if !delta.channels.contains(id) && self.channels.remove(id).is_some() {
                delta.removed_channels.push(id.clone());
            }
        }
        for id in asked_threads {
            if !delta.threads.contains(id) && self.threads.remove(id).is_some() {
                delta.removed_threads.push(id.clone());
            }
        }
        delta
    }

    /// Every count, as a snapshot frame.
    pub fn snapshot(&self) -> UnreadCountsFrame {
        UnreadCountsFrame {
            snapshot: true,
            counts: Some(
                self.totals(self.channels.values().cloned().collect(), self.threads.values().cloned().collect()),
            ),
            removed_channel_ids: Vec::new(),
            removed_thread_ids: Vec::new(),
        }
    }

    /// The frame that tells a client about a delta.
    pub fn frame(&self, delta: Delta) -> UnreadCountsFrame {
        let channels = delta.channels.iter().filter_map(|id| self.channels.get(id).cloned()).collect();
        let threads = delta.threads.iter().filter_map(|id| self.threads.get(id).cloned()).collect();
        UnreadCountsFrame {
            snapshot: false,
            counts: Some(self.totals(channels, threads)),
            removed_channel_ids: delta.removed_channels,
            removed_thread_ids: delta.removed_threads,
        }
    }

    fn totals(&self, channels: Vec<ChannelUnread>, threads: Vec<ThreadUnread>) -> UnreadCounts {
        UnreadCounts {
            total_unread_count: self.channels.values().map(|c| c.unread_count).sum(),
            total_mention_count: self.channels.values().map(|c| c.mention_count).sum(),
            total_thread_unread_count: self.threads.values().map(|t| t.unread_count).sum(),
            total_thread_mention_count: self.threads.values().map(|t| t.mention_count).sum(),
            channels,
            threads,
        }
    }

    /// Applies one conversation event, delivered in sequence order.
    pub fn apply(&mut self, event: &ChannelEvent) -> Delta {
        let mut delta = Delta::default();
        let channel_id = event.channel_id.as_str();
        let seq = event.seq;
        let me = self.me.clone();
        // Counts taken at or after this event already include it.
        let counted_in_channel = self.channels.get(channel_id).is_some_and(|c| c.as_of_seq >= seq);
        match &event.kind {
            Some(Kind::MessageCreated(m)) => {
                let in_channel = m.thread_id.is_empty() || m.also_sent_to_channel;
                let mentions = m.mentions.as_ref();
                if in_channel && !counted_in_channel {
                    if broadcast(mentions) && m.sender_id != me {
                        delta.recount_channels.push(channel_id.to_string());
                    } else if let Some(c) = self.channels.get_mut(channel_id) {
                        if m.sender_id == me {
                            // Sending reads the conversation up to the message.
                            c.unread_count = 0;
                            c.mention_count = 0;
                            c.last_read_seq = seq;
                        } else if seq > c.last_read_seq {
                            if !c.muted {
                                c.unread_count += 1;
                            }
                            if mentions_me(mentions, &me) {
                                c.mention_count += 1;
                            }
                        }
                        c.as_of_seq = seq;
                        delta.channels.push(channel_id.to_string());
                    }
                }
                if !m.thread_id.is_empty() {
                    self.apply_reply(&m.thread_id, seq, &m.sender_id, mentions, &mut delta);
                }
            }
            Some(Kind::MessageEdited(m)) => {
                let touched = mentions_me(m.mentions.as_ref(), &me) || broadcast(m.mentions.as_ref());
                let had = self.channels.get(channel_id).is_some_and(|c| c.mention_count > 0);
                if (touched || had) && !counted_in_channel && self.channels.contains_key(channel_id) {
                    delta.recount_channels.push(channel_id.to_string());
                }
                let thread_had = self.threads.get(&m.thread_id).is_some_and(|t| t.mention_count > 0);
                if !m.thread_id.is_empty() && (touched || thread_had) && self.threads.contains_key(&m.thread_id) {
                    delta.recount_threads.push(m.thread_id.clone());
                }
            }
            Some(Kind::MessageDeleted(d)) | Some(Kind::MessageRecalled(d)) => {
                let mentions = d.mentions.as_ref();
                if d.in_channel && !counted_in_channel && d.sender_id != me {
                    if broadcast(mentions) {
                        delta.recount_channels.push(channel_id.to_string());
                    } else if let Some(c) = self.channels.get_mut(channel_id) {
                        if d.message_seq > c.last_read_seq {
                            if !c.muted {
                                c.unread_count = (c.unread_count - 1).max(0);
                            }
                            if mentions_me(mentions, &me) {
                                c.mention_count = (c.mention_count - 1).max(0);
                            }
                        }
                        c.as_of_seq = seq;
                        delta.channels.push(channel_id.to_string());
                    }
                }
                if !d.thread_id.is_empty() && d.sender_id != me {
                    if broadcast(mentions) {
                        delta.recount_threads.push(d.thread_id.clone());
                    } else if let Some(t) = self.threads.get_mut(&d.thread_id).filter(|t| t.as_of_seq < seq) {
                        if d.message_seq > t.last_read_seq {
                            t.unread_count = (t.unread_count - 1).max(0);
                            if mentions_me(mentions, &me) {
                                t.mention_count = (t.mention_count - 1).max(0);
                            }
                        }
                        t.as_of_seq = seq;
                        delta.threads.push(d.thread_id.clone());
                    }
                }
            }
            // The root's author follows from the first reply, unless they
            // unfollowed before: only a recount can tell.
            Some(Kind::ThreadUpdated(t)) if t.root_sender_id == me && !self.threads.contains_key(&t.thread_id) => {
                delta.recount_threads.push(t.thread_id.clone());
            }
            // Read positions moved past what expired: counts start again.
            Some(Kind::MessagesExpired(_)) => {
                if self.channels.contains_key(channel_id) {
                    delta.recount_channels.push(channel_id.to_string());
                }
                let threads = self.threads.values().filter(|t| t.channel_id == channel_id);
                delta.recount_threads.extend(threads.map(|t| t.thread_id.clone()));
            }
            Some(Kind::MemberJoined(m)) if m.user_id == me => delta.recount_channels.push(channel_id.to_string()),
            Some(Kind::MemberLeft(m)) if m.user_id == me => {
                if self.channels.remove(channel_id).is_some() {
                    delta.removed_channels.push(channel_id.to_string());
                }
                let gone: Vec<String> =
                    self.threads.values().filter(|t| t.channel_id == channel_id).map(|t| t.thread_id.clone()).collect();
                for id in gone {
                    self.threads.remove(&id);
                    delta.removed_threads.push(id);
                }
            }
            _ => {}
        }
        delta
    }

    /// A reply in a thread.
    fn apply_reply(
        &mut self,
        thread_id: &str,
        seq: i64,
        sender_id: &str,
        mentions: Option<&MessageMentions>,
        delta: &mut Delta,
    ) {
        let me = self.me.as_str();
        match self.threads.get_mut(thread_id) {
            Some(t) if t.as_of_seq >= seq => {}
            Some(t) if sender_id == me => {
                t.unread_count = 0;
                t.mention_count = 0;
                t.last_read_seq = seq;
                t.as_of_seq = seq;
                delta.threads.push(thread_id.to_string());
            }
            Some(_) if broadcast(mentions) => delta.recount_threads.push(thread_id.to_string()),
            Some(t) => {
                if seq > t.last_read_seq {
                    t.unread_count += 1;
                    if mentions_me(mentions, me) {
                        t.mention_count += 1;
                    }
                }
                t.as_of_seq = seq;
                delta.threads.push(thread_id.to_string());
            }
            // Replying or being mentioned makes one a follower.
            None if sender_id == me || mentions_me(mentions, me) => delta.recount_threads.push(thread_id.to_string()),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use colink_proto::messaging::v1::{Message, MessageDeleted};

    use super::*;

    fn created(seq: i64, sender: &str, mentions: &[&str]) -> ChannelEvent {
        ChannelEvent {
            channel_id: "c".into(),
            seq,
            kind: Some(Kind::MessageCreated(Message {
                sender_id: sender.into(),
                seq,
                mentions: Some(MessageMentions {
                    user_ids: mentions.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn start() -> Unread {
        let counts = UnreadCounts {
            channels: vec![ChannelUnread {
                channel_id: "c".into(),
                last_read_seq: 3,
                as_of_seq: 5,
                unread_count: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        Unread::new("me", counts)
    }

    #[test]
    fn counts_new_messages_by_others_once() {
        let mut unread = start();
        assert!(unread.apply(&created(5, "bob", &[])).is_empty(), "already counted");
        let delta = unread.apply(&created(6, "bob", &["me"]));
        assert_eq!(delta.channels, ["c"]);
        let frame = unread.frame(delta);
        let counts = frame.counts.unwrap();
        assert_eq!((counts.total_unread_count, counts.total_mention_count), (3, 1));
        unread.apply(&created(7, "me", &[]));
        assert_eq!(unread.snapshot().counts.unwrap().total_unread_count, 0, "sending reads");
    }

    #[test]
    fn deletions_uncount_what_was_unread() {
        let mut unread = start();
        unread.apply(&created(6, "bob", &["me"]));
        let deleted = ChannelEvent {
            channel_id: "c".into(),
            seq: 7,
            kind: Some(Kind::MessageDeleted(MessageDeleted {
                message_seq: 6,
                sender_id: "bob".into(),
                in_channel: true,
                mentions: Some(MessageMentions { user_ids: vec!["me".into()], ..Default::default() }),
                ..Default::default()
            })),
            ..Default::default()
        };
        unread.apply(&deleted);
        let counts = unread.snapshot().counts.unwrap();
        assert_eq!((counts.total_unread_count, counts.total_mention_count), (2, 0));
    }

    #[test]
    fn broadcasts_and_new_follows_are_recounted() {
        let mut unread = start();
        let mut everyone = created(6, "bob", &[]);
        if let Some(Kind::MessageCreated(m)) = &mut everyone.kind {
            m.mentions = Some(MessageMentions { channel: true, ..Default::default() });
        }
        assert_eq!(unread.apply(&everyone).recount_channels, ["c"]);
        let mut reply = created(7, "bob", &["me"]);
        if let Some(Kind::MessageCreated(m)) = &mut reply.kind {
            m.thread_id = "t".into();
        }
        assert_eq!(unread.apply(&reply).recount_threads, ["t"]);
    }
}

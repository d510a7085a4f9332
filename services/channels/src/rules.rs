//! Who may do what to a conversation, and what valid input looks like.
//! Plain functions over stored rows: no gRPC, no database.

use colink_proto::channels::v1::{ChannelKind, MemberRole};
use colink_runtime::Role;
use colink_runtime::error::FieldError;

use crate::store::{channel, member};

pub fn kind(c: &channel::Model) -> ChannelKind {
    ChannelKind::try_from(c.kind).unwrap_or(ChannelKind::Unspecified)
}

pub fn role(m: &member::Model) -> MemberRole {
    MemberRole::try_from(m.role).unwrap_or(MemberRole::Unspecified)
}

pub fn is_direct(c: &channel::Model) -> bool {
    matches!(kind(c), ChannelKind::Direct | ChannelKind::GroupDirect)
}

/// Whether a caller may see a conversation at all (read it, list members,
/// stream it). Public channels are open to every member of the workspace;
/// everything else, and everything for guests, needs membership.
pub fn can_view(c: &channel::Model, membership: Option<&member::Model>, workspace_role: Role) -> bool {
    membership.is_some() || (kind(c) == ChannelKind::Public && workspace_role != Role::Guest)
}

/// Owners and channel admins manage a channel; so do workspace admins.
pub fn can_manage(membership: Option<&member::Model>, workspace_role: Role) -> bool {
    workspace_role == Role::Admin
        || membership.is_some_and(|m| matches!(role(m), MemberRole::Owner | MemberRole::Admin))
}

/// Adding people: any member of a public channel, managers of a private one.
pub fn can_add_members(c: &channel::Model, membership: Option<&member::Model>, workspace_role: Role) -> bool {
    match kind(c) {
        ChannelKind::Public => membership.is_some() || workspace_role == Role::Admin,
        ChannelKind::Private => can_manage(membership, workspace_role),
        _ => false,
    }
}

/// Channel names: 1..=80 characters of a-z, 0-9, '-' and '_'.
pub fn normalize_name(field: &str, raw: &str) -> Result<String, FieldError> {
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    let ok = name.len() <= 80
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(name) } else { Err(FieldError::new(field, "must be 1 to 80 characters of a-z, 0-9, '-' or '_'")) }
}

/// The key that makes one DM per set of people: sorted ids, comma-joined.
pub fn dm_key(participants: &[String]) -> String {
    let mut ids = participants.to_vec();
    ids.sort();
    ids.dedup();
    ids.join(",")
}

/// Role names as events carry them.
pub fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Owner => "owner",
        MemberRole::Admin => "admin",
        MemberRole::Member => "member",
        MemberRole::Unspecified => "",
    }
}

pub fn kind_name(kind: ChannelKind) -> &'static str {
    match kind {
        ChannelKind::Public => "public",
        ChannelKind::Private => "private",
        ChannelKind::Direct => "direct",
        ChannelKind::GroupDirect => "group_direct",
        ChannelKind::Unspecified => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: ChannelKind) -> channel::Model {
        channel::Model {
            channel_id: "c".into(),
            kind: kind as i32,
            name: Some("general".into()),
            topic: String::new(),
            description: String::new(),
            creator_id: "u".into(),
            archived: false,
            dm_key: None,
            member_count: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn member(role: MemberRole) -> member::Model {
        member::Model {
            channel_id: "c".into(),
            user_id: "u".into(),
            role: role as i32,
            muted: false,
            hidden: false,
            starred: false,
            joined_at: 0,
        }
    }

    #[test]
    fn private_and_direct_conversations_need_membership() {
        for kind in [ChannelKind::Private, ChannelKind::Direct, ChannelKind::GroupDirect] {
            assert!(!can_view(&channel(kind), None, Role::Member));
            assert!(!can_view(&channel(kind), None, Role::Admin));
            assert!(can_view(&channel(kind), Some(&member(MemberRole::Member)), Role::Guest));
        }
        assert!(can_view(&channel(ChannelKind::Public), None, Role::Member));
        assert!(!can_view(&channel(ChannelKind::Public), None, Role::Guest));
    }

    #[test]
    fn managing_needs_a_managing_role() {
        assert!(can_manage(Some(&member(MemberRole::Owner)), Role::Member));
        assert!(can_manage(Some(&member(MemberRole::Admin)), Role::Member));
        assert!(!can_manage(Some(&member(MemberRole::Member)), Role::Member));
        assert!(can_manage(None, Role::Admin));
        assert!(can_add_members(&channel(ChannelKind::Public), Some(&member(MemberRole::Member)), Role::Member));
        assert!(!can_add_members(&channel(ChannelKind::Private), Some(&member(MemberRole::Member)), Role::Member));
        assert!(!can_add_members(&channel(ChannelKind::Direct), Some(&member(MemberRole::Owner)), Role::Admin));
    }

    #[test]
    fn names_and_dm_keys() {
        assert_eq!(normalize_name("name", " Dev-Ops ").unwrap(), "dev-ops");
        assert!(normalize_name("name", "dev ops").is_err());
        assert!(normalize_name("name", "").is_err());
        assert_eq!(dm_key(&["b".into(), "a".into(), "b".into()]), "a,b");
    }
}

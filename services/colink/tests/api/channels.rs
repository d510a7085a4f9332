use colink_proto::channels::v1::{
    AddMembersRequest, ArchiveChannelRequest, BrowseChannelsRequest, ChannelFilter, ChannelKind, CreateChannelRequest,
    CreateInvitationRequest, GetChannelRequest, JoinChannelRequest, LeaveChannelRequest, ListMembersRequest,
    ListMyChannelsRequest, ListMyInvitationsRequest, MemberRole, OpenDirectMessageRequest, RemoveMemberRequest,
    RespondToInvitationRequest, UnarchiveChannelRequest, UpdateMemberRoleRequest,
};
use colink_proto::messaging::v1::SendMessageRequest;
use colink_proto::users::v1::BlockUserRequest;
use tonic::Code;

use crate::helpers::{TestApp, assert_code};

#[tokio::test]
async fn public_channels_can_be_found_joined_and_left() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let general = app.create_channel(&alice, "General", ChannelKind::Public, &[]).await;
    assert_eq!(general.name, "general");
    assert_eq!(general.viewer_role, MemberRole::Owner as i32);
    assert_eq!(general.member_count, 1);

    let found = app
        .channels()
        .browse_channels(bob.req(BrowseChannelsRequest { name_prefix: "gen".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].viewer_role, MemberRole::Unspecified as i32);

    let joined = app
        .channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: general.channel_id.clone(), ..Default::default() }))
        .await;
    let joined = joined.unwrap().into_inner().channel.unwrap();
    assert_eq!((joined.member_count, joined.viewer_role), (2, MemberRole::Member as i32));
    // Joining again changes nothing.
    app.channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: general.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let mine = app.channels().list_my_channels(bob.req(ListMyChannelsRequest::default())).await.unwrap().into_inner();
    assert_eq!(mine.channels.len(), 1);

    app.channels()
        .leave_channel(bob.req(LeaveChannelRequest { channel_id: general.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let after =
        app.channels().get_channel(alice.req(GetChannelRequest { channel_id: general.channel_id.clone() })).await;
    assert_eq!(after.unwrap().into_inner().channel.unwrap().member_count, 1);
    // The last owner cannot walk away from members.
    app.channels()
        .join_channel(bob.req(JoinChannelRequest { channel_id: general.channel_id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let leave = app
        .channels()
        .leave_channel(alice.req(LeaveChannelRequest { channel_id: general.channel_id.clone(), ..Default::default() }))
        .await;
    assert_code(leave, Code::FailedPrecondition);
}

#[tokio::test]
async fn private_channels_are_managed_by_owners_and_admins() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let secret = app.create_channel(&alice, "secret", ChannelKind::Private, &[&bob]).await;
    assert_eq!(secret.member_count, 2);

    let join = app
        .channels()
        .join_channel(carol.req(JoinChannelRequest { channel_id: secret.channel_id.clone(), ..Default::default() }))
        .await;
    assert_code(join, Code::NotFound);
    let add = |who: &str| AddMembersRequest {
        channel_id: secret.channel_id.clone(),
        user_ids: vec![who.to_string()],
        role: 0,
        ..Default::default()
    };
    assert_code(app.channels().add_members(bob.req(add(&carol.user_id))).await, Code::PermissionDenied);

    let promote = UpdateMemberRoleRequest {
        channel_id: secret.channel_id.clone(),
        user_id: bob.user_id.clone(),
        role: MemberRole::Admin as i32,
        ..Default::default()
    };
    app.channels().update_member_role(alice.req(promote)).await.unwrap();
    let added = app.channels().add_members(bob.req(add(&carol.user_id))).await.unwrap().into_inner().added;
    assert_eq!(added.len(), 1);
    // Adding an existing member adds nobody.
    assert!(app.channels().add_members(bob.req(add(&carol.user_id))).await.unwrap().into_inner().added.is_empty());
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_code(app.channels().add_members(bob.req(add(&unknown))).await, Code::NotFound);

    let members = app
        .channels()
        .list_members(carol.req(ListMembersRequest {
            channel_id: secret.channel_id.clone(),
            page_size: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 2);
    assert!(!members.next_page_token.is_empty());

    let remove = RemoveMemberRequest {
        channel_id: secret.channel_id.clone(),
        user_id: carol.user_id.clone(),
        ..Default::default()
    };
    app.channels().remove_member(bob.req(remove)).await.unwrap();
    let get = app.channels().get_channel(carol.req(GetChannelRequest { channel_id: secret.channel_id.clone() })).await;
    assert_code(get, Code::NotFound);
}

#[tokio::test]
async fn archived_channels_are_read_only() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let old = app.create_channel(&alice, "old", ChannelKind::Public, &[&bob]).await;
    let archive = ArchiveChannelRequest { channel_id: old.channel_id.clone(), ..Default::default() };
    assert_code(app.channels().archive_channel(bob.req(archive.clone())).await, Code::PermissionDenied);
    assert!(app.channels().archive_channel(alice.req(archive)).await.unwrap().into_inner().channel.unwrap().archived);
    let post = SendMessageRequest { channel_id: old.channel_id.clone(), text: "anyone?".into(), ..Default::default() };
    assert_code(app.messaging().send_message(bob.req(post.clone())).await, Code::FailedPrecondition);
    app.channels()
        .unarchive_channel(
            alice.req(UnarchiveChannelRequest { channel_id: old.channel_id.clone(), ..Default::default() }),
        )
        .await
        .unwrap();
    assert!(app.messaging().send_message(bob.req(post)).await.is_ok());
}

#[tokio::test]
async fn channel_creation_is_idempotent_and_names_are_unique() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let request = CreateChannelRequest {
        name: "launch".into(),
        kind: ChannelKind::Public as i32,
        idempotency_key: "create-launch-1".into(),
        ..Default::default()
    };
    let first = app.channels().create_channel(alice.req(request.clone())).await.unwrap().into_inner().channel.unwrap();
    let retry = app.channels().create_channel(alice.req(request.clone())).await.unwrap().into_inner().channel.unwrap();
    assert_eq!(first.channel_id, retry.channel_id);
    let other_key = CreateChannelRequest { idempotency_key: "create-launch-2".into(), ..request };
    assert_code(app.channels().create_channel(alice.req(other_key)).await, Code::AlreadyExists);
}

#[tokio::test]
async fn the_same_people_always_get_the_same_direct_message() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let open = |ids: Vec<String>| OpenDirectMessageRequest { user_ids: ids, ..Default::default() };
    let first =
        app.channels().open_direct_message(alice.req(open(vec![bob.user_id.clone()]))).await.unwrap().into_inner();
    assert!(first.created);
    let dm = first.channel.unwrap();
    assert_eq!(dm.kind, ChannelKind::Direct as i32);
    assert_eq!(dm.participant_ids.len(), 2);
    let again =
        app.channels().open_direct_message(bob.req(open(vec![alice.user_id.clone()]))).await.unwrap().into_inner();
    assert!(!again.created);
    assert_eq!(again.channel.unwrap().channel_id, dm.channel_id);

    let group = app
        .channels()
        .open_direct_message(alice.req(open(vec![bob.user_id.clone(), carol.user_id.clone()])))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    assert_eq!(group.kind, ChannelKind::GroupDirect as i32);
    assert_ne!(group.channel_id, dm.channel_id);

    let leave = app
        .channels()
        .leave_channel(alice.req(LeaveChannelRequest { channel_id: dm.channel_id.clone(), ..Default::default() }))
        .await;
    assert_code(leave, Code::FailedPrecondition);
    let dms = ListMyChannelsRequest { filter: ChannelFilter::DirectMessages as i32, ..Default::default() };
    assert_eq!(app.channels().list_my_channels(alice.req(dms)).await.unwrap().into_inner().channels.len(), 2);

    app.users().block_user(carol.req(BlockUserRequest { user_id: bob.user_id.clone() })).await.unwrap();
    let blocked = app.channels().open_direct_message(bob.req(open(vec![carol.user_id.clone()]))).await;
    assert_code(blocked, Code::PermissionDenied);
}

#[tokio::test]
async fn invitations_can_be_accepted_once() {
    let app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Private, &[]).await;
    let invite = CreateInvitationRequest {
        channel_id: room.channel_id.clone(),
        invitee_id: bob.user_id.clone(),
        ttl_hours: 0,
        ..Default::default()
    };
    app.channels().create_invitation(alice.req(invite)).await.unwrap();
    let pending =
        app.channels().list_my_invitations(bob.req(ListMyInvitationsRequest::default())).await.unwrap().into_inner();
    assert_eq!(pending.invitations.len(), 1);
    assert_eq!(pending.invitations[0].channel_name, "room");
    let respond = RespondToInvitationRequest {
        invitation_id: pending.invitations[0].invitation_id.clone(),
        accept: true,
        ..Default::default()
    };
    app.channels().respond_to_invitation(bob.req(respond.clone())).await.unwrap();
    assert_code(app.channels().respond_to_invitation(bob.req(respond)).await, Code::FailedPrecondition);
    let get = app.channels().get_channel(bob.req(GetChannelRequest { channel_id: room.channel_id.clone() })).await;
    assert_eq!(get.unwrap().into_inner().channel.unwrap().viewer_role, MemberRole::Member as i32);
}

#[tokio::test]
async fn my_conversations_page_with_filters_and_dm_participants() {
    use colink_proto::channels::v1::{
        ArchiveChannelRequest, ChannelFilter, ListMyChannelsRequest, OpenDirectMessageRequest,
    };
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let mut channels = Vec::new();
    for i in 0..5 {
        channels.push(app.create_channel(&ann, &format!("room-{i}"), ChannelKind::Public, &[]).await.channel_id);
    }
    let dm = OpenDirectMessageRequest { user_ids: vec![bob.user_id.clone()], ..Default::default() };
    let dm = app.channels().open_direct_message(ann.req(dm)).await.unwrap().into_inner().channel.unwrap();
    let archive = ArchiveChannelRequest { channel_id: channels[0].clone(), ..Default::default() };
    app.channels().archive_channel(ann.req(archive)).await.unwrap();
    let all = |filter: ChannelFilter, include_archived: bool| {
        let client = app.channels();
        let ann = &ann;
        async move {
            let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
            loop {
                let request =
                    ListMyChannelsRequest { filter: filter as i32, include_archived, page_size: 2, page_token: token };
                let page = client.clone().list_my_channels(ann.req(request)).await.unwrap().into_inner();
                assert!(page.channels.len() <= 2);
                seen.extend(page.channels);
                pages += 1;
                if page.next_page_token.is_empty() {
                    return (seen, pages);
                }
                token = page.next_page_token;
            }
        }
    };
    let (everything, pages) = all(ChannelFilter::Unspecified, true).await;
    assert_eq!(everything.len(), 6);
    assert_eq!(pages, 3);
    // Newest first; the DM shows who is in it.
    assert_eq!(everything[0].channel_id, dm.channel_id);
    let mut people = everything[0].participant_ids.clone();
    people.sort();
    let mut expected = vec![ann.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(people, expected);
    let (live, _) = all(ChannelFilter::Unspecified, false).await;
    assert_eq!(live.len(), 5, "the archived channel is left out");
    assert!(live.iter().all(|c| c.channel_id != channels[0]));
    let (direct, _) = all(ChannelFilter::DirectMessages, true).await;
    let direct: Vec<String> = direct.into_iter().map(|c| c.channel_id).collect();
    assert_eq!(direct, vec![dm.channel_id.clone()]);
    let (named, _) = all(ChannelFilter::Channels, true).await;
    assert_eq!(named.len(), 5);
}

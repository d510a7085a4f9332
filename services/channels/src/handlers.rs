//! The gRPC handlers: each decodes, claims the idempotency key, calls the
//! operation, and encodes.

use colink_proto::channels::v1 as pb;
use colink_proto::channels::v1::channels_service_server::ChannelsService as ChannelsRpc;
use colink_runtime::ids::idempotency_key;
use colink_runtime::{Error, Result, caller};
use tonic::{Request, Response, Status};

use colink_runtime::idempotency::key_of;

use crate::ChannelsService;

#[tonic::async_trait]
impl ChannelsRpc for ChannelsService {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotency_key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let request = pb::CreateChannelRequest { idempotency_key, ..request.into_inner() };
        let channel = ChannelsService::create_channel(self, &caller, request).await?;
        Ok(Response::new(pb::CreateChannelResponse { channel: Some(channel) }))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::GetChannelResponse>, Status> {
        let caller = caller(&request)?;
        let (channel, membership) = self.viewable(&self.db.reader, caller, &request.get_ref().channel_id).await?;
        let channel = self.to_proto(&self.db.reader, channel, membership.as_ref()).await?;
        Ok(Response::new(pb::GetChannelResponse { channel: Some(channel) }))
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::UpdateChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateChannel", &req, || async {
                Ok(pb::UpdateChannelResponse {
                    channel: Some(ChannelsService::update_channel(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_my_channels(
        &self,
        request: Request<pb::ListMyChannelsRequest>,
    ) -> Result<Response<pb::ListMyChannelsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(ChannelsService::list_my_channels(self, &caller, request.into_inner()).await?))
    }

    async fn browse_channels(
        &self,
        request: Request<pb::BrowseChannelsRequest>,
    ) -> Result<Response<pb::BrowseChannelsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.browse(&caller, request.into_inner()).await?))
    }

    async fn join_channel(
        &self,
        request: Request<pb::JoinChannelRequest>,
    ) -> Result<Response<pb::JoinChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::JoinChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "JoinChannel", &req, || async {
                Ok(pb::JoinChannelResponse { channel: Some(self.join(&caller, &req.channel_id).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn leave_channel(
        &self,
        request: Request<pb::LeaveChannelRequest>,
    ) -> Result<Response<pb::LeaveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::LeaveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "LeaveChannel", &req, || async {
                self.leave(&caller, &req.channel_id).await?;
                Ok(pb::LeaveChannelResponse {})
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::AddMembersResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::AddMembersRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "AddMembers", &req, || async {
                Ok(pb::AddMembersResponse { added: ChannelsService::add_members(self, &caller, req.clone()).await? })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RemoveMemberRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "RemoveMember", &req, || async {
                self.remove(&caller, req.clone()).await?;
                Ok(pb::RemoveMemberResponse {})
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(ChannelsService::list_members(self, &caller, request.into_inner()).await?))
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Result<Response<pb::UpdateMemberRoleResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateMemberRoleRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateMemberRole", &req, || async {
                Ok(pb::UpdateMemberRoleResponse {
                    member: Some(ChannelsService::update_member_role(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn archive_channel(
        &self,
        request: Request<pb::ArchiveChannelRequest>,
    ) -> Result<Response<pb::ArchiveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::ArchiveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "ArchiveChannel", &req, || async {
                Ok(pb::ArchiveChannelResponse {
                    channel: Some(self.set_archived(&caller, &req.channel_id, true).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn unarchive_channel(
        &self,
        request: Request<pb::UnarchiveChannelRequest>,
    ) -> Result<Response<pb::UnarchiveChannelResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UnarchiveChannelRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UnarchiveChannel", &req, || async {
                Ok(pb::UnarchiveChannelResponse {
                    channel: Some(self.set_archived(&caller, &req.channel_id, false).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn open_direct_message(
        &self,
        request: Request<pb::OpenDirectMessageRequest>,
    ) -> Result<Response<pb::OpenDirectMessageResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::OpenDirectMessageRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "OpenDirectMessage", &req, || async {
                self.open_dm(&caller, req.clone()).await
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::CreateInvitationRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "CreateInvitation", &req, || async {
                Ok(pb::CreateInvitationResponse {
                    invitation: Some(ChannelsService::create_invitation(self, &caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_my_invitations(
        &self,
        request: Request<pb::ListMyInvitationsRequest>,
    ) -> Result<Response<pb::ListMyInvitationsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.my_invitations(&caller, request.into_inner()).await?))
    }

    async fn respond_to_invitation(
        &self,
        request: Request<pb::RespondToInvitationRequest>,
    ) -> Result<Response<pb::RespondToInvitationResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RespondToInvitationRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "RespondToInvitation", &req, || async {
                Ok(pb::RespondToInvitationResponse { invitation: Some(self.respond(&caller, req.clone()).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn set_member_restriction(
        &self,
        request: Request<pb::SetMemberRestrictionRequest>,
    ) -> Result<Response<pb::SetMemberRestrictionResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.set_restriction(&caller, request.get_ref()).await?))
    }

    async fn update_channel_preferences(
        &self,
        request: Request<pb::UpdateChannelPreferencesRequest>,
    ) -> Result<Response<pb::UpdateChannelPreferencesResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UpdateChannelPreferencesRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UpdateChannelPreferences", &req, || async {
                Ok(pb::UpdateChannelPreferencesResponse {
                    preferences: Some(self.update_preferences(&caller, req.clone()).await?),
                })
            })
            .await?;
        Ok(Response::new(response))
    }
}

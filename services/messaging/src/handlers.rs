//! The gRPC handlers of colink.messaging.v1: each decodes, claims the
//! idempotency key, calls the operation, and encodes.

use colink_proto::messaging::v1 as pb;
use colink_proto::messaging::v1::messaging_service_server::MessagingService as MessagingRpc;
use colink_runtime::error::Violations;
use colink_runtime::idempotency::key_of;
use colink_runtime::ids::{idempotency_key, parse_id, parse_id_list, timestamp};
use colink_runtime::{Error, Result, caller};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};

use crate::store::{message, message_edit, read_state};
use crate::{MessagingService, read_states, to_proto};

#[tonic::async_trait]
impl MessagingRpc for MessagingService {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = caller(&request)?.clone();
        let idempotency_key = idempotency_key(&request.get_ref().idempotency_key, &request);
        let message = self.send(&caller, pb::SendMessageRequest { idempotency_key, ..request.into_inner() }).await?;
        Ok(Response::new(pb::SendMessageResponse { message: Some(message) }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::GetMessageResponse>, Status> {
        let caller = caller(&request)?;
        let (found, _) = self.visible_message(caller, &request.get_ref().message_id).await?;
        let message = self.decorate(caller, vec![to_proto(&found)]).await?.pop();
        Ok(Response::new(pb::GetMessageResponse { message }))
    }

    async fn batch_get_messages(
        &self,
        request: Request<pb::BatchGetMessagesRequest>,
    ) -> Result<Response<pb::BatchGetMessagesResponse>, Status> {
        let caller = caller(&request)?;
        let messages = self.batch_get(caller, request.get_ref()).await?;
        Ok(Response::new(pb::BatchGetMessagesResponse { messages }))
    }

    async fn export_messages(
        &self,
        request: Request<pb::ExportMessagesRequest>,
    ) -> Result<Response<pb::ExportMessagesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.export(caller, request.get_ref()).await?))
    }

    async fn apply_moderation(
        &self,
        request: Request<pb::ApplyModerationRequest>,
    ) -> Result<Response<pb::ApplyModerationResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(MessagingService::apply_moderation(self, caller, request.get_ref()).await?))
    }

    async fn read_for_moderation(
        &self,
        request: Request<pb::ReadForModerationRequest>,
    ) -> Result<Response<pb::ReadForModerationResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(MessagingService::read_for_moderation(self, caller, request.get_ref()).await?))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.list(&caller, request.into_inner()).await?))
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::EditMessageRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "EditMessage", &req, || async {
                Ok(pb::EditMessageResponse { message: Some(self.edit(&caller, req.clone()).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::DeleteMessageRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .keys
            .once(&caller.user_id, key, "DeleteMessage", &req, || async {
                Ok(pb::DeleteMessageResponse { message: Some(self.delete(caller, &req.message_id).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::RecallMessageRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .keys
            .once(&caller.user_id, key, "RecallMessage", &req, || async {
                Ok(pb::RecallMessageResponse { message: Some(self.recall(caller, &req.message_id).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_message_edits(
        &self,
        request: Request<pb::ListMessageEditsRequest>,
    ) -> Result<Response<pb::ListMessageEditsResponse>, Status> {
        let caller = caller(&request)?;
        let (found, _) = self.visible_message(caller, &request.get_ref().message_id).await?;
        // The history of a removed message goes with it.
        let edits = if found.deleted_at.is_some() || found.recalled {
            Vec::new()
        } else {
            message_edit::Entity::find()
                .filter(message_edit::Column::MessageId.eq(&found.message_id))
                .order_by_asc(message_edit::Column::Version)
                .all(&self.db.reader)
                .await
                .map_err(Error::from)?
        };
        let edits = edits
            .into_iter()
            .map(|e| pb::MessageEdit {
                version: e.version,
                text: e.text,
                editor_id: e.editor_id,
                edit_time: Some(timestamp(e.edited_at)),
            })
            .collect();
        Ok(Response::new(pb::ListMessageEditsResponse { edits }))
    }

    async fn pin_message(
        &self,
        request: Request<pb::PinMessageRequest>,
    ) -> Result<Response<pb::PinMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::PinMessageRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .keys
            .once(&caller.user_id, key, "PinMessage", &req, || async {
                Ok(pb::PinMessageResponse { message: Some(self.set_pinned(caller, &req.message_id, true).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn unpin_message(
        &self,
        request: Request<pb::UnpinMessageRequest>,
    ) -> Result<Response<pb::UnpinMessageResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::UnpinMessageRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let response = self
            .keys
            .once(&caller.user_id, key, "UnpinMessage", &req, || async {
                Ok(pb::UnpinMessageResponse { message: Some(self.set_pinned(caller, &req.message_id, false).await?) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn list_pinned_messages(
        &self,
        request: Request<pb::ListPinnedMessagesRequest>,
    ) -> Result<Response<pb::ListPinnedMessagesResponse>, Status> {
        let caller = caller(&request)?;
        let channel_id = parse_id("channel_id", &request.get_ref().channel_id).map_err(Error::from)?;
        self.access(caller, &channel_id).await?;
        let rows = message::Entity::find()
            .filter(message::Column::ChannelId.eq(&channel_id))
            .filter(message::Column::PinnedAt.is_not_null())
            .order_by_desc(message::Column::PinnedAt)
            .limit(100)
            .all(&self.db.reader)
            .await
            .map_err(Error::from)?;
        let messages = self.decorate(caller, rows.iter().map(to_proto).collect()).await?;
        Ok(Response::new(pb::ListPinnedMessagesResponse { messages }))
    }

    async fn mark_read(&self, request: Request<pb::MarkReadRequest>) -> Result<Response<pb::MarkReadResponse>, Status> {
        let caller = caller(&request)?.clone();
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let req = pb::MarkReadRequest { idempotency_key: String::new(), ..request.into_inner() };
        let response = self
            .keys
            .once(&caller.user_id, key, "MarkRead", &req, || async {
                let read_state = MessagingService::mark_read(self, &caller, req.clone()).await?;
                Ok(pb::MarkReadResponse { read_state: Some(read_state) })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_read_state(
        &self,
        request: Request<pb::GetReadStateRequest>,
    ) -> Result<Response<pb::GetReadStateResponse>, Status> {
        let caller = caller(&request)?;
        let channel_id = parse_id("channel_id", &request.get_ref().channel_id).map_err(Error::from)?;
        if !self.access(caller, &channel_id).await?.is_member() {
            return Err(Error::denied("only members have a read position").into());
        }
        let read_state = self.read_state(caller, &channel_id).await?;
        Ok(Response::new(pb::GetReadStateResponse { read_state: Some(read_state) }))
    }

    async fn list_read_receipts(
        &self,
        request: Request<pb::ListReadReceiptsRequest>,
    ) -> Result<Response<pb::ListReadReceiptsResponse>, Status> {
        let caller = caller(&request)?;
        let (found, _) = self.visible_message(caller, &request.get_ref().message_id).await?;
        let received = read_state::Entity::find()
            .filter(read_state::Column::ChannelId.eq(&found.channel_id))
            .filter(read_state::Column::DeliveredSeq.gte(found.seq))
            .filter(read_state::Column::UserId.ne(&found.sender_id))
            .order_by_asc(read_state::Column::UserId)
            .limit(2000)
            .all(&self.db.reader)
            .await
            .map_err(Error::from)?;
        let ids: Vec<String> =
            received.iter().filter(|r| r.last_read_seq >= found.seq).map(|r| r.user_id.clone()).collect();
        let silent = self.receipts_off(caller, &ids).await?;
        let (mut reader_ids, mut delivered_to_ids) = (Vec::new(), Vec::new());
        for r in received {
            if r.last_read_seq >= found.seq && !silent.contains(&r.user_id) {
                reader_ids.push(r.user_id);
            } else {
                delivered_to_ids.push(r.user_id);
            }
        }
        reader_ids.truncate(1000);
        delivered_to_ids.truncate(1000);
        Ok(Response::new(pb::ListReadReceiptsResponse { reader_ids, delivered_to_ids }))
    }

    async fn mark_delivered(
        &self,
        request: Request<pb::MarkDeliveredRequest>,
    ) -> Result<Response<pb::MarkDeliveredResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let channel_id = parse_id("channel_id", &req.channel_id).map_err(Error::from)?;
        if req.seq < 0 {
            return Err(Error::invalid("seq", "must not be negative").into());
        }
        if !self.member_access(caller, &channel_id).await?.is_member() {
            return Err(Error::denied("only members have a delivered position").into());
        }
        let seq = std::cmp::min(req.seq, self.head_seq(&channel_id).await?);
        read_states::mark_delivered(&self.db.writer, &channel_id, &caller.user_id, seq).await.map_err(Error::from)?;
        let delivered_seq = read_state::Entity::find_by_id((channel_id, caller.user_id.clone()))
            .one(&self.db.writer)
            .await
            .map_err(Error::from)?
            .map_or(0, |r| r.delivered_seq);
        Ok(Response::new(pb::MarkDeliveredResponse { delivered_seq }))
    }

    async fn get_unread_counts(
        &self,
        request: Request<pb::GetUnreadCountsRequest>,
    ) -> Result<Response<pb::GetUnreadCountsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let mut v = Violations::default();
        if req.channel_ids.len() + req.thread_ids.len() > 1000 {
            v.add("channel_ids", "must list at most 1,000 conversations and threads together");
        }
        let channel_ids = parse_id_list(&mut v, "channel_ids", &req.channel_ids);
        let thread_ids = parse_id_list(&mut v, "thread_ids", &req.thread_ids);
        v.finish()?;
        let counts = self.unread_counts(caller, &read_states::Only { channel_ids, thread_ids }).await?;
        Ok(Response::new(pb::GetUnreadCountsResponse { counts: Some(counts) }))
    }

    async fn list_mentions(
        &self,
        request: Request<pb::ListMentionsRequest>,
    ) -> Result<Response<pb::ListMentionsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(MessagingService::list_mentions(self, &caller, request.into_inner()).await?))
    }

    async fn list_channel_events(
        &self,
        request: Request<pb::ListChannelEventsRequest>,
    ) -> Result<Response<pb::ListChannelEventsResponse>, Status> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.channel_events(&caller, request.into_inner()).await?))
    }
}

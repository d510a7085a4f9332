//! The files service: uploads through signed URLs straight to the object
//! store, a type check of the bytes, a virus scan before anything is
//! served, downloads for those who may see a file, shares, attachments,
//! storage quotas and retention.

mod attachments;
pub mod blobs;
pub mod clamd;
mod export;
pub mod objects;
mod quota;
mod retention;
pub mod s3;
mod scanning;
mod shares;
pub mod signed;
pub mod sniff;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod thumbnails;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::channels::v1::{GetChannelRequest, MemberRole};
use colink_proto::events::v1::FileChanged;
use colink_proto::events::v1::event::Payload;
use colink_proto::files::v1 as pb;
use colink_proto::files::v1::files_service_server::{FilesService as FilesRpc, FilesServiceServer};
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::clients::PeerChannel;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::clock::Clock;
use colink_runtime::config::FilesConfig;
use colink_runtime::db::Db;
use colink_runtime::error::{Page, Violations};
use colink_runtime::events::{self, EventHandler, FILE_EVENTS, Outbox};
use colink_runtime::idempotency::{Keys, key_of};
use colink_runtime::ids::{encode_page_token, now_micros, opt_timestamp, parse_optional_id, timestamp};
use colink_runtime::pubsub::{Frame, PubSub, user_topic};
use colink_runtime::{Caller, Error, Result, Role, caller};
use prost::Message as _;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Code, Request, Response, Status};

use crate::clamd::Clamd;
use crate::objects::ObjectStore;
use crate::quota::Defaults;
use crate::store::file;

/// How long an upload URL works.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a download URL works.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(3600);

/// Everything the handlers share.
pub(crate) struct Shared {
    db: Db,
    outbox: Outbox,
    pubsub: Arc<dyn PubSub>,
    objects: Arc<dyn ObjectStore>,
    scanner: Option<Arc<Clamd>>,
    channels: ChannelsServiceClient<PeerChannel>,
    users: UsersServiceClient<PeerChannel>,
    keys: Keys,
    config: FilesConfig,
    /// What retention reads the time from.
    clock: Arc<dyn Clock>,
}

/// What the files service runs on besides its database.
pub struct Backends {
    pub pubsub: Arc<dyn PubSub>,
    pub objects: Arc<dyn ObjectStore>,
    /// None: files are marked UNSCANNED.
    pub scanner: Option<Arc<Clamd>>,
    pub clock: Arc<dyn Clock>,
}

/// The services the files service calls.
pub struct Peers {
    pub channels: PeerChannel,
    pub users: PeerChannel,
}

/// How far a caller may go with a file it can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Full,
    /// Through a view-only share: metadata and thumbnails.
    View,
}

#[derive(Clone)]
pub struct FilesService {
    shared: Arc<Shared>,
}

impl FilesService {
    pub fn new(db: Db, outbox: Outbox, backends: Backends, peers: Peers, config: FilesConfig) -> Self {
        let Backends { pubsub, objects, scanner, clock } = backends;
        let keys = Keys::new(db.clone());
        let channels = ChannelsServiceClient::new(peers.channels);
        let users = UsersServiceClient::new(peers.users);
        let shared = Shared { db, outbox, pubsub, objects, scanner, channels, users, keys, config, clock };
        Self { shared: Arc::new(shared) }
    }

    /// Starts the periodic retention run; it stops at `shutdown`.
    pub fn start_retention(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        retention::spawn(self.shared.clone(), shutdown);
    }

    pub fn into_server(self) -> FilesServiceServer<Self> {
        FilesServiceServer::new(self)
    }

    /// The consumer of `message.events` that records where files are
    /// attached.
    pub fn attachment_recorder(&self) -> Arc<dyn EventHandler> {
        Arc::new(attachments::AttachmentRecorder { shared: self.shared.clone() })
    }

    /// The consumer of `file.events` that scans confirmed files, when this
    /// node scans; its workers stop at `shutdown`.
    pub fn scanner(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Option<Arc<dyn EventHandler>> {
        let clamd = self.shared.scanner.clone()?;
        let workers = self.shared.config.scanner.concurrency;
        if workers == 0 {
            return None;
        }
        let pool = scanning::ScanPool::spawn(self.shared.clone(), clamd, workers, shutdown);
        Some(Arc::new(scanning::Scanner { pool }))
    }
}

impl Shared {
    fn defaults(&self) -> Defaults {
        Defaults { user_bytes: self.config.default_quota_bytes, workspace_bytes: self.config.workspace_quota_bytes }
    }

    async fn find(&self, raw_id: &str) -> Result<file::Model> {
        let id = colink_runtime::ids::parse_id("file_id", raw_id)?;
        file::Entity::find_by_id(id.clone())
            .one(&self.db.reader)
            .await?
            .ok_or_else(|| Error::not_found(format!("file {id} not found")))
    }

    /// A file the caller may see: its owner, an admin, a member of its
    /// channel when it is shared with the channel or of a conversation where
    /// it is attached to a message, or anyone but a guest when it is shared
    /// with the workspace, or a user it is shared with until the share
    /// expires. Deleted files are gone for everyone but admins.
    async fn visible(&self, caller: &Caller, raw_id: &str) -> Result<file::Model> {
        Ok(self.reach(caller, raw_id).await?.0)
    }

    async fn reach(&self, caller: &Caller, raw_id: &str) -> Result<(file::Model, Reach)> {
        let found = self.find(raw_id).await?;
        let gone = found.state == pb::FileState::Deleted as i32 || found.state == pb::FileState::Expired as i32;
        if caller.role == Role::Admin {
            return Ok((found, Reach::Full));
        }
        if gone {
            return Err(Error::not_found(format!("file {} not found", found.file_id)));
        }
        if found.owner_id == caller.user_id {
            return Ok((found, Reach::Full));
        }
        let ready = found.state == pb::FileState::Ready as i32;
        if ready && found.access == pb::FileAccess::Workspace as i32 && caller.role != Role::Guest {
            return Ok((found, Reach::Full));
        }
        if ready
            && found.access == pb::FileAccess::Channel as i32
            && !found.channel_id.is_empty()
            && self.is_member(caller, &found.channel_id).await?
        {
            return Ok((found, Reach::Full));
        }
        if ready {
            for channel_id in self.attached_in(&found.file_id).await? {
                if self.is_member(caller, &channel_id).await? {
                    return Ok((found, Reach::Full));
                }
            }
            if let Some(share) = self.share_of(&found.file_id, &caller.user_id).await? {
                let reach =
                    if share.permission == pb::SharePermission::Download as i32 { Reach::Full } else { Reach::View };
                return Ok((found, reach));
            }
        }
        Err(Error::denied("you cannot see this file"))
    }

    /// Whether the caller is a member of a conversation; false for ones it
    /// cannot see.
    async fn is_member(&self, caller: &Caller, channel_id: &str) -> Result<bool> {
        let request = GetChannelRequest { channel_id: channel_id.to_string() };
        match call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.get_channel(r).await }).await {
            Ok(answer) => Ok(answer.channel.is_some_and(|c| c.viewer_role != MemberRole::Unspecified as i32)),
            Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => Ok(false),
            Err(status) => Err(status.into()),
        }
    }

    /// Refuses an upload into a conversation the caller may not post in:
    /// one they are not a member of, or where a moderator muted them.
    pub(crate) async fn require_may_post(&self, caller: &Caller, channel_id: &str) -> Result<()> {
        let request = GetChannelRequest { channel_id: channel_id.to_string() };
        let channel =
            match call_on_behalf(&self.channels, caller, request, |mut c, r| async move { c.get_channel(r).await })
                .await
            {
                Ok(answer) => answer.channel,
                Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => None,
                Err(status) => return Err(status.into()),
            };
        match channel {
            Some(c) if c.viewer_role == MemberRole::Unspecified as i32 => {
                Err(Error::denied("you are not a member of this conversation"))
            }
            Some(c) if c.viewer_muted => Err(Error::denied("you are muted in this conversation")),
            Some(_) => Ok(()),
            None => Err(Error::denied("you are not a member of this conversation")),
        }
    }

    /// Writes a `file.*` event in the change's transaction, with the file
    /// as it is after the change, who may see it included (the search index
    /// keeps that).
    pub(crate) async fn event<C: ConnectionTrait>(
        &self,
        conn: &C,
        kind: &str,
        actor: &str,
        f: &file::Model,
    ) -> Result<()> {
        let payload = Payload::FileChanged(FileChanged {
            file_id: f.file_id.clone(),
            owner_id: f.owner_id.clone(),
            channel_id: f.channel_id.clone(),
            size_bytes: f.size_bytes,
            mime_type: f.mime_type.clone(),
            scan_status: scan_status_name(f.scan_status).into(),
            signature: f.scan_signature.clone(),
            filename: f.filename.clone(),
            description: f.description.clone(),
            file_type: short_name(pb::FileType::try_from(f.file_type).map(|t| t.as_str_name()), "FILE_TYPE_"),
            access: short_name(pb::FileAccess::try_from(f.access).map(|a| a.as_str_name()), "FILE_ACCESS_"),
            create_time: Some(timestamp(f.created_at)),
            attached_channel_ids: attachments::channels_of(conn, &f.file_id).await?,
            shared_with_user_ids: shares::recipients(conn, &f.file_id).await?,
            state: short_name(pb::FileState::try_from(f.state).map(|s| s.as_str_name()), "FILE_STATE_"),
        });
        events::enqueue(conn, FILE_EVENTS, &f.file_id, &events::event(kind, actor, payload)).await?;
        Ok(())
    }

    /// A file as the contract shows it.
    pub(crate) async fn file_proto(&self, f: &file::Model) -> Result<pb::File> {
        let mut files = self.files_proto(std::slice::from_ref(f)).await?;
        files.pop().ok_or_else(|| Error::internal("a file went missing on its way out"))
    }

    /// Files as the contract shows them, with their thumbnails.
    pub(crate) async fn files_proto(&self, rows: &[file::Model]) -> Result<Vec<pb::File>> {
        let with_thumbnails: Vec<&str> =
            rows.iter().filter(|f| thumbnails::may_have(f)).map(|f| f.file_id.as_str()).collect();
        let thumbnails = thumbnails::of(&self.db.reader, &with_thumbnails).await?;
        let policies = self.policies().await?;
        let files = rows.iter().map(|f| {
            let mut file = to_proto(f);
            if let Some(retention) = file.retention.as_mut() {
                retention.expire_time = retention::expires_at(f, &policies).map(timestamp);
                retention.auto_delete = policies.of(f.file_type).auto_delete;
            }
            file.thumbnails = thumbnails
                .iter()
                .filter(|t| t.file_id == f.file_id)
                .map(|t| pb::Thumbnail {
                    size: t.size,
                    width: t.width,
                    height: t.height,
                    mime_type: t.mime_type.clone(),
                    size_bytes: t.size_bytes,
                })
                .collect();
            file
        });
        Ok(files.collect())
    }

    /// Tells the owner's streams what became of their file.
    async fn tell_owner(&self, f: &file::Model) {
        match self.file_proto(f).await {
            Ok(file) => {
                let frame = Frame::File(file.encode_to_vec().into()).encode();
                self.pubsub.publish(&user_topic(&f.owner_id), frame).await;
            }
            Err(err) => tracing::warn!(file_id = %f.file_id, error = %err, "could not tell the owner about their file"),
        }
    }

    async fn get_download_url(
        &self,
        caller: &Caller,
        req: &pb::GetDownloadUrlRequest,
    ) -> Result<pb::GetDownloadUrlResponse> {
        let (found, reach) = self.reach(caller, &req.file_id).await?;
        let thumbnail = pb::ThumbnailSize::try_from(req.thumbnail_size)
            .map_err(|_| Error::invalid("thumbnail_size", "is not a known size"))?;
        if reach == Reach::View && thumbnail == pb::ThumbnailSize::Unspecified {
            return Err(Error::denied("this file is shared with you to view only"));
        }
        downloadable(&found, self.config.require_scan)?;
        let (key, mime_type, filename) = if thumbnail == pb::ThumbnailSize::Unspecified {
            (found.object_key, found.mime_type, found.filename)
        } else {
            let made = thumbnails::of(&self.db.reader, &[found.file_id.as_str()]).await?;
            let Some(made) = made.into_iter().find(|t| t.size == thumbnail as i32) else {
                return Err(Error::not_found(format!("file {} has no thumbnail of that size", found.file_id)));
            };
            let extension = if made.mime_type == "image/webp" { "webp" } else { "jpg" };
            (made.object_key, made.mime_type, format!("thumbnail-{}.{extension}", found.file_id))
        };
        let expires = now_micros() / 1_000_000 + DOWNLOAD_URL_TTL.as_secs() as i64;
        let url = self
            .objects
            .download_url(&key, &mime_type, &filename, req.as_attachment, expires)
            .await
            .map_err(Error::internal)?;
        Ok(pb::GetDownloadUrlResponse {
            url,
            expires_at: Some(timestamp(expires * 1_000_000)),
            scan_status: found.scan_status,
            filename,
            mime_type,
        })
    }

    async fn delete_file(&self, caller: &Caller, req: &pb::DeleteFileRequest) -> Result<pb::DeleteFileResponse> {
        let found = match self.visible(caller, &req.file_id).await {
            // Deleting twice changes nothing.
            Err(Error::NotFound(_)) => {
                let found = self.find(&req.file_id).await?;
                if found.owner_id == caller.user_id && found.state == pb::FileState::Deleted as i32 {
                    return Ok(pb::DeleteFileResponse { file: Some(self.file_proto(&found).await?) });
                }
                return Err(Error::not_found(format!("file {} not found", found.file_id)));
            }
            other => other?,
        };
        if found.owner_id != caller.user_id && !matches!(caller.role, Role::Admin | Role::Moderator) {
            return Err(Error::denied("only the owner, a moderator or an admin can delete a file"));
        }
        if found.state == pb::FileState::Deleted as i32 {
            return Ok(pb::DeleteFileResponse { file: Some(self.file_proto(&found).await?) });
        }
        let now = now_micros();
        let txn = sea_orm::TransactionTrait::begin(&self.db.writer).await?;
        if file::retire(&txn, &found.file_id, found.state, pb::FileState::Deleted as i32, now).await? {
            let delta = if found.state == pb::FileState::PendingUpload as i32 {
                quota::Delta { reserved: -found.size_bytes, ..Default::default() }
            } else {
                quota::Delta { used: -found.size_bytes, files: -1, ..Default::default() }
            };
            quota::adjust(&txn, &found.owner_id, delta).await?;
            let deleted = file::Model { state: pb::FileState::Deleted as i32, deleted_at: Some(now), ..found.clone() };
            self.event(&txn, "file.deleted", &caller.user_id, &deleted).await?;
        }
        txn.commit().await?;
        self.outbox.notify();
        // The row is the truth: bytes left behind by a failure here are
        // unreachable, never served.
        if let Err(err) = self.objects.delete(&found.object_key).await {
            tracing::warn!(file_id = %found.file_id, error = %err, "could not delete a deleted file's bytes");
        }
        thumbnails::remove(self, &found.file_id).await;
        let now_row = self.find(&found.file_id).await?;
        Ok(pb::DeleteFileResponse { file: Some(self.file_proto(&now_row).await?) })
    }

    async fn list_files(&self, caller: &Caller, req: &pb::ListFilesRequest) -> Result<pb::ListFilesResponse> {
        let mut v = Violations::default();
        let channel_id = v.check(parse_optional_id("channel_id", &req.channel_id)).flatten();
        let owner_id = v.check(parse_optional_id("owner_id", &req.owner_id)).flatten();
        if channel_id.is_some() && req.shared_with_me {
            v.add("channel_id", "cannot be combined with shared_with_me");
        }
        let file_type = pb::FileType::try_from(req.file_type).ok();
        if file_type.is_none() {
            v.add("file_type", "is not a known file type");
        }
        let page = v.page(req.page_size, &req.page_token, 50, 100);
        v.finish()?;
        let after = page_after(&page)?;
        let mut query = file::Entity::find()
            .filter(file::Column::State.is_in([pb::FileState::Ready as i32, pb::FileState::PendingUpload as i32]));
        if req.shared_with_me {
            let shared = Query::select()
                .column("file_id")
                .from("file_shares")
                .and_where(Expr::col("user_id").eq(caller.user_id.as_str()))
                .cond_where(
                    Condition::any()
                        .add(Expr::col("expires_at").is_null())
                        .add(Expr::col("expires_at").gt(now_micros())),
                )
                .to_owned();
            query = query.filter(file::Column::FileId.in_subquery(shared));
        }
        if let Some(channel_id) = &channel_id {
            if !self.is_member(caller, channel_id).await? {
                return Err(Error::denied("you are not a member of this conversation"));
            }
            let shared = Condition::any()
                .add(file::Column::OwnerId.eq(&caller.user_id))
                .add(file::Column::Access.is_in([pb::FileAccess::Channel as i32, pb::FileAccess::Workspace as i32]));
            let attached = Query::select()
                .column("file_id")
                .from("file_attachments")
                .and_where(Expr::col("channel_id").eq(channel_id.as_str()))
                .to_owned();
            let uploaded_here = Condition::all().add(file::Column::ChannelId.eq(channel_id)).add(shared);
            let attached_here = Condition::all()
                .add(file::Column::FileId.in_subquery(attached))
                .add(file::Column::State.eq(pb::FileState::Ready as i32));
            query = query.filter(Condition::any().add(uploaded_here).add(attached_here));
        }
        match owner_id.as_deref() {
            Some(owner) if owner != caller.user_id && caller.role != Role::Admin => {
                if caller.role == Role::Guest {
                    return Err(Error::denied("guests can list only their own files"));
                }
                query = query
                    .filter(file::Column::OwnerId.eq(owner))
                    .filter(file::Column::Access.eq(pb::FileAccess::Workspace as i32));
            }
            Some(owner) => query = query.filter(file::Column::OwnerId.eq(owner)),
            None if channel_id.is_none() && !req.shared_with_me => {
                query = query.filter(file::Column::OwnerId.eq(&caller.user_id));
            }
            None => {}
        }
        if let Some(kind) = file_type.filter(|k| *k != pb::FileType::Unspecified) {
            query = query.filter(file::Column::FileType.eq(kind as i32));
        }
        if let Some((at, id)) = &after {
            query = query.filter(
                Condition::any()
                    .add(file::Column::CreatedAt.lt(*at))
                    .add(Condition::all().add(file::Column::CreatedAt.eq(*at)).add(file::Column::FileId.lt(id))),
            );
        }
        let rows = query
            .order_by_desc(file::Column::CreatedAt)
            .order_by_desc(file::Column::FileId)
            .limit(page.limit + 1)
            .all(&self.db.reader)
            .await?;
        let more = rows.len() as u64 > page.limit;
        let files = self.files_proto(&rows[..rows.len().min(page.limit as usize)]).await?;
        let last = rows.get(page.limit as usize - 1).filter(|_| more).map(|f| (f.created_at, f.file_id.as_str()));
        Ok(pb::ListFilesResponse { files, next_page_token: page_token_after(last) })
    }

    async fn get_quota(&self, caller: &Caller, req: &pb::GetQuotaRequest) -> Result<pb::GetQuotaResponse> {
        let user_id = match parse_optional_id("user_id", &req.user_id)? {
            Some(id) if id != caller.user_id => {
                if caller.role != Role::Admin {
                    return Err(Error::denied("only admins can see another user's quota"));
                }
                id
            }
            _ => caller.user_id.clone(),
        };
        uploads::release_expired(self, &user_id).await?;
        Ok(pb::GetQuotaResponse { quota: Some(self.quota_of(&user_id).await?) })
    }

    async fn set_quota(&self, caller: &Caller, req: &pb::SetQuotaRequest) -> Result<pb::SetQuotaResponse> {
        let mut v = Violations::default();
        let user_id = v.id("user_id", &req.user_id);
        if !(0..=1 << 40).contains(&req.quota_bytes) {
            v.add("quota_bytes", "must be within 0..=1099511627776 (1 TiB)");
        }
        v.finish()?;
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can set quotas"));
        }
        quota::set_limit(&self.db.writer, &user_id, req.quota_bytes).await?;
        Ok(pb::SetQuotaResponse { quota: Some(self.quota_of(&user_id).await?) })
    }

    async fn quota_of(&self, user_id: &str) -> Result<pb::Quota> {
        let row = quota::read(&self.db.writer, user_id).await?;
        Ok(pb::Quota {
            user_id: user_id.to_string(),
            quota_bytes: row.quota_bytes.unwrap_or(self.config.default_quota_bytes),
            used_bytes: Ord::max(row.used_bytes, 0),
            reserved_bytes: Ord::max(row.reserved_bytes, 0),
            file_count: Ord::max(row.file_count, 0),
            max_file_size_bytes: self.config.max_file_size_bytes,
            update_time: (row.updated_at > 0).then(|| timestamp(row.updated_at)),
        })
    }
}

fn bad_token() -> Error {
    Error::invalid("page_token", "is not a valid page token")
}

/// Where a page of a list ordered by (time, id), newest first, starts.
fn page_after(page: &Page) -> Result<Option<(i64, String)>> {
    match page.after.as_deref().map(|a| a.split_once('/')) {
        None => Ok(None),
        Some(Some((at, id))) => Ok(Some((at.parse::<i64>().map_err(|_| bad_token())?, id.to_string()))),
        Some(None) => Err(bad_token()),
    }
}

/// The token of the page after the one that ended at `last`, if more follow.
fn page_token_after(last: Option<(i64, &str)>) -> String {
    last.map(|(at, id)| encode_page_token(&format!("{at}/{id}"))).unwrap_or_default()
}

/// Whether a file's bytes may be handed out.
fn downloadable(f: &file::Model, require_scan: bool) -> Result<()> {
    if f.state == pb::FileState::PendingUpload as i32 {
        return Err(Error::precondition("the upload is not confirmed yet"));
    }
    match pb::ScanStatus::try_from(f.scan_status) {
        Ok(pb::ScanStatus::Clean) => Ok(()),
        Ok(pb::ScanStatus::Unscanned) if !require_scan => Ok(()),
        Ok(pb::ScanStatus::Unscanned) => {
            Err(Error::precondition("this node serves only scanned files, and this one was never scanned"))
        }
        Ok(pb::ScanStatus::Pending) => Err(Error::precondition("the file is being scanned; retry after file.scanned")),
        Ok(pb::ScanStatus::Infected) => Err(Error::precondition("the file is infected and is never served")),
        _ => Err(Error::precondition("the file could not be scanned and is never served")),
    }
}

/// An enum value's name without its prefix, in lower case, as events
/// carry it ("FILE_TYPE_IMAGE" is "image"); empty for an unknown value.
fn short_name<E>(name: std::result::Result<&str, E>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_ascii_lowercase()).unwrap_or_default()
}

pub(crate) fn scan_status_name(status: i32) -> &'static str {
    match pb::ScanStatus::try_from(status) {
        Ok(pb::ScanStatus::Clean) => "clean",
        Ok(pb::ScanStatus::Infected) => "infected",
        Ok(pb::ScanStatus::Unscanned) => "unscanned",
        Ok(pb::ScanStatus::Failed) => "failed",
        _ => "pending",
    }
}

/// A file as the contract shows it, but for when it expires (see
/// `Shared::file_proto`).
fn to_proto(f: &file::Model) -> pb::File {
    pb::File {
        file_id: f.file_id.clone(),
        owner_id: f.owner_id.clone(),
        channel_id: f.channel_id.clone(),
        filename: f.filename.clone(),
        mime_type: f.mime_type.clone(),
        file_type: f.file_type,
        size_bytes: f.size_bytes,
        sha256: f.sha256.clone(),
        description: f.description.clone(),
        access: f.access,
        state: f.state,
        scan_status: f.scan_status,
        scan_time: opt_timestamp(f.scan_time),
        width: f.width,
        height: f.height,
        thumbnails: Vec::new(),
        retention: Some(pb::FileRetention {
            retention_days: f.retention_days,
            keep_forever: f.keep_forever,
            expire_time: None,
            auto_delete: false,
        }),
        create_time: Some(timestamp(f.created_at)),
        upload_time: opt_timestamp(f.uploaded_at),
        update_time: Some(timestamp(f.updated_at)),
        delete_time: opt_timestamp(f.deleted_at),
    }
}

#[tonic::async_trait]
impl FilesRpc for FilesService {
    async fn create_upload_url(
        &self,
        request: Request<pb::CreateUploadUrlRequest>,
    ) -> Result<Response<pb::CreateUploadUrlResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let mut asked = request.get_ref().clone();
        asked.idempotency_key.clear();
        let shared = &self.shared;
        let answer = shared
            .keys
            .once(&caller.user_id, key, "CreateUploadUrl", &asked, || uploads::create(shared, caller, &asked))
            .await?;
        uploads::still_valid(&answer)?;
        Ok(Response::new(answer))
    }

    async fn confirm_upload(
        &self,
        request: Request<pb::ConfirmUploadRequest>,
    ) -> Result<Response<pb::ConfirmUploadResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(uploads::confirm(&self.shared, caller, &request.get_ref().file_id).await?))
    }

    async fn get_file(&self, request: Request<pb::GetFileRequest>) -> Result<Response<pb::GetFileResponse>, Status> {
        let caller = caller(&request)?;
        let found = self.shared.visible(caller, &request.get_ref().file_id).await?;
        Ok(Response::new(pb::GetFileResponse { file: Some(self.shared.file_proto(&found).await?) }))
    }

    async fn update_file(
        &self,
        request: Request<pb::UpdateFileRequest>,
    ) -> Result<Response<pb::UpdateFileResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.update_file(caller, request.get_ref()).await?))
    }

    async fn get_download_url(
        &self,
        request: Request<pb::GetDownloadUrlRequest>,
    ) -> Result<Response<pb::GetDownloadUrlResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.get_download_url(caller, request.get_ref()).await?))
    }

    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.delete_file(caller, request.get_ref()).await?))
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.list_files(caller, request.get_ref()).await?))
    }

    async fn get_quota(&self, request: Request<pb::GetQuotaRequest>) -> Result<Response<pb::GetQuotaResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.get_quota(caller, request.get_ref()).await?))
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> Result<Response<pb::SetQuotaResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.set_quota(caller, request.get_ref()).await?))
    }

    async fn update_file_retention(
        &self,
        request: Request<pb::UpdateFileRetentionRequest>,
    ) -> Result<Response<pb::UpdateFileRetentionResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.update_file_retention(caller, request.get_ref()).await?))
    }

    async fn list_retention_runs(
        &self,
        request: Request<pb::ListRetentionRunsRequest>,
    ) -> Result<Response<pb::ListRetentionRunsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.list_retention_runs(caller, request.get_ref()).await?))
    }

    async fn list_file_retention_policies(
        &self,
        request: Request<pb::ListFileRetentionPoliciesRequest>,
    ) -> Result<Response<pb::ListFileRetentionPoliciesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.list_retention_policies(caller).await?))
    }

    async fn set_file_retention_policy(
        &self,
        request: Request<pb::SetFileRetentionPolicyRequest>,
    ) -> Result<Response<pb::SetFileRetentionPolicyResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.set_retention_policy(caller, request.get_ref()).await?))
    }

    async fn run_file_retention(
        &self,
        request: Request<pb::RunFileRetentionRequest>,
    ) -> Result<Response<pb::RunFileRetentionResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let asked = pb::RunFileRetentionRequest { idempotency_key: String::new(), ..request.get_ref().clone() };
        let shared = &self.shared;
        let answer = shared
            .keys
            .once(&caller.user_id, key, "RunFileRetention", &asked, || shared.run_retention_now(caller, &asked))
            .await?;
        Ok(Response::new(answer))
    }

    async fn share_file(
        &self,
        request: Request<pb::ShareFileRequest>,
    ) -> Result<Response<pb::ShareFileResponse>, Status> {
        let caller = caller(&request)?;
        let key = key_of(&request, &request.get_ref().idempotency_key).map_err(Error::from)?;
        let mut asked = request.get_ref().clone();
        asked.idempotency_key.clear();
        let shared = &self.shared;
        let answer =
            shared.keys.once(&caller.user_id, key, "ShareFile", &asked, || shared.share_file(caller, &asked)).await?;
        Ok(Response::new(answer))
    }

    async fn list_file_shares(
        &self,
        request: Request<pb::ListFileSharesRequest>,
    ) -> Result<Response<pb::ListFileSharesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.list_file_shares(caller, request.get_ref()).await?))
    }

    async fn check_attachments(
        &self,
        request: Request<pb::CheckAttachmentsRequest>,
    ) -> Result<Response<pb::CheckAttachmentsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.check_attachments(caller, request.get_ref()).await?))
    }

    async fn batch_get_files(
        &self,
        request: Request<pb::BatchGetFilesRequest>,
    ) -> Result<Response<pb::BatchGetFilesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.batch_get_files(caller, request.get_ref()).await?))
    }

    async fn export_files(
        &self,
        request: Request<pb::ExportFilesRequest>,
    ) -> Result<Response<pb::ExportFilesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.export_files(caller, request.get_ref()).await?))
    }

    async fn revoke_file_share(
        &self,
        request: Request<pb::RevokeFileShareRequest>,
    ) -> Result<Response<pb::RevokeFileShareResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.revoke_file_share(caller, request.get_ref()).await?))
    }
}

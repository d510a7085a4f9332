//! Files for services that keep file ids, such as search: the files a
//! caller can see among many ids at once, and every file, a page at a time,
//! for rebuilding an index.

use colink_proto::files::v1 as pb;
use colink_runtime::error::Violations;
use colink_runtime::ids::{encode_page_token, parse_id, parse_id_list};
use colink_runtime::{Caller, Error, Result, Role};
use futures_util::StreamExt;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::store::file;
use crate::{Shared, attachments, shares};

/// Ids one BatchGetFiles may ask about.
const MAX_IDS: usize = 100;

/// A file that may be shown: confirmed, not gone, and safe to download.
fn showable(f: &file::Model) -> bool {
    f.state == pb::FileState::Ready as i32
        && matches!(pb::ScanStatus::try_from(f.scan_status), Ok(pb::ScanStatus::Clean | pb::ScanStatus::Unscanned))
}

impl Shared {
    pub(crate) async fn batch_get_files(
        &self,
        caller: &Caller,
        req: &pb::BatchGetFilesRequest,
    ) -> Result<pb::BatchGetFilesResponse> {
        let mut v = Violations::default();
        if req.file_ids.is_empty() || req.file_ids.len() > MAX_IDS {
            v.add("file_ids", format!("must list 1 to {MAX_IDS} file ids"));
        }
        let ids = parse_id_list(&mut v, "file_ids", &req.file_ids);
        v.finish()?;
        // Each file asked about on its own, several at a time: who may see
        // one depends on its access, channel, attachments and shares.
        let asks = ids.into_iter().map(|id| async move { self.reach(caller, &id).await.map(|(f, _)| f) });
        let answers: Vec<Result<file::Model>> = futures_util::stream::iter(asks).buffered(16).collect().await;
        let mut seen = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer {
                Ok(f) if showable(&f) => seen.push(f),
                Ok(_) | Err(Error::NotFound(_) | Error::PermissionDenied(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(pb::BatchGetFilesResponse { files: self.files_proto(&seen).await? })
    }

    pub(crate) async fn export_files(
        &self,
        caller: &Caller,
        req: &pb::ExportFilesRequest,
    ) -> Result<pb::ExportFilesResponse> {
        if caller.role != Role::Admin {
            return Err(Error::denied("only admins can export files"));
        }
        let mut v = Violations::default();
        let page = v.page(req.page_size, &req.page_token, 500, 1000);
        let after = page.after.as_deref().map(|raw| v.check(parse_id("page_token", raw))).unwrap_or(None);
        v.finish()?;
        let mut query = file::Entity::find().filter(file::Column::State.eq(pb::FileState::Ready as i32));
        if let Some(after) = after {
            query = query.filter(file::Column::FileId.gt(after));
        }
        let rows = query.order_by_asc(file::Column::FileId).limit(page.limit + 1).all(&self.db.reader).await?;
        let more = rows.len() as u64 > page.limit;
        let rows = &rows[..rows.len().min(page.limit as usize)];
        let next_page_token = match rows.last() {
            Some(last) if more => encode_page_token(&last.file_id),
            _ => String::new(),
        };
        let mut files = Vec::with_capacity(rows.len());
        for (f, proto) in rows.iter().zip(self.files_proto(rows).await?) {
            files.push(pb::ExportedFile {
                file: Some(proto),
                attached_channel_ids: attachments::channels_of(&self.db.reader, &f.file_id).await?,
                shared_with_user_ids: shares::recipients(&self.db.reader, &f.file_id).await?,
            });
        }
        Ok(pb::ExportFilesResponse { files, next_page_token })
    }
}

//! The two steps of an upload: a URL and a quota reservation first, then
//! the confirmation that checks the bytes and hands them to the scanner.

use std::time::Duration;

use colink_proto::files::v1 as pb;
use colink_runtime::error::{FieldError, Violations};
use colink_runtime::ids::{micros_of, new_id, now_micros, parse_optional_id, timestamp};
use colink_runtime::{Caller, Error, Result, Role};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::sniff::{self, SNIFF_LEN};
use crate::store::file;
use crate::{Shared, UPLOAD_URL_TTL, quota, thumbnails};

/// An upload not confirmed this long after its URL expired is given up:
/// its reservation is released and its bytes deleted.
const ABANDONED_AFTER: Duration = Duration::from_secs(10 * 60);

/// Types refused whatever the allow-list says: programs and scripts.
const NEVER_ALLOWED: &[&str] = &[
    "application/x-msdownload",
    "application/x-executable",
    "application/x-elf",
    "application/x-mach-binary",
    "application/vnd.microsoft.portable-executable",
    "application/x-sh",
    "application/x-csh",
    "application/x-bat",
    "application/x-msi",
    "application/java-archive",
    "text/x-script",
    "text/x-shellscript",
    "text/javascript",
    "application/javascript",
    "text/html",
    "image/svg+xml",
];

pub(crate) fn check_filename(name: &str) -> std::result::Result<(), FieldError> {
    let len = name.chars().count();
    if !(1..=255).contains(&len) || name.trim().is_empty() {
        return Err(FieldError::new("filename", format!("must be 1 to 255 characters long (got {len})")));
    }
    if name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) || name == "." || name == ".." {
        return Err(FieldError::new("filename", "must not contain path separators or control characters"));
    }
    Ok(())
}

/// A declared type without parameters, in lower case.
fn normalize_type(raw: &str, allowed: &[String]) -> std::result::Result<String, FieldError> {
    let kind = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let well_formed = kind.split_once('/').is_some_and(|(family, sub)| {
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        token(family) && token(sub)
    });
    if !well_formed {
        return Err(FieldError::new("mime_type", "must be a MIME type such as image/png"));
    }
    if NEVER_ALLOWED.contains(&kind.as_str()) {
        return Err(FieldError::new("mime_type", format!("{kind} is never allowed")));
    }
    let family = kind.split('/').next().unwrap_or_default();
    let on_list = allowed.iter().any(|a| *a == kind || a.strip_suffix("/*") == Some(family));
    if !on_list {
        return Err(FieldError::new("mime_type", format!("{kind} is not an allowed type")));
    }
    Ok(kind)
}

pub(crate) async fn create(
    shared: &Shared,
    caller: &Caller,
    req: &pb::CreateUploadUrlRequest,
) -> Result<pb::CreateUploadUrlResponse> {
    let config = &shared.config;
    let mut v = Violations::default();
    v.check(check_filename(&req.filename));
    if !(1..=config.max_file_size_bytes).contains(&req.size_bytes) {
        v.add("size_bytes", format!("must be within 1..={} bytes", config.max_file_size_bytes));
    }
    let mime = v.check(normalize_type(&req.mime_type, &config.allowed_types));
    let channel_id = v.check(parse_optional_id("channel_id", &req.channel_id)).flatten();
    let hex_digest = |s: &str| s.len() == 64 && s.bytes().all(|b| b"0123456789abcdef".contains(&b));
    if !req.sha256.is_empty() && !hex_digest(&req.sha256) {
        v.add("sha256", "must be 64 lower-case hex digits");
    }
    let access = match pb::FileAccess::try_from(req.access) {
        Ok(pb::FileAccess::Unspecified) if channel_id.is_some() => pb::FileAccess::Channel,
        Ok(pb::FileAccess::Unspecified) => pb::FileAccess::Private,
        Ok(pb::FileAccess::Channel) if channel_id.is_none() => {
            v.add("access", "FILE_ACCESS_CHANNEL needs a channel_id");
            pb::FileAccess::Channel
        }
        Ok(pb::FileAccess::Workspace) if caller.role == Role::Guest => {
            v.add("access", "guests cannot share a file with the whole workspace");
            pb::FileAccess::Workspace
        }
        Ok(access) => access,
        Err(_) => {
            v.add("access", "is not a known access");
            pb::FileAccess::Private
        }
    };
    v.finish()?;
    let mime = mime.unwrap_or_default();
    if let Some(channel_id) = &channel_id {
        shared.require_may_post(caller, channel_id).await?;
    }
    release_expired(shared, &caller.user_id).await?;

    let now = now_micros();
    let file_id = new_id();
    let object_key = format!("uploads/{file_id}");
    let expires_at = now + UPLOAD_URL_TTL.as_micros() as i64;
    let upload = shared
        .objects
        .upload_url(&object_key, req.size_bytes as u64, &mime, &req.sha256, expires_at / 1_000_000)
        .await
        .map_err(Error::internal)?;
    let row = file::Model {
        file_id,
        owner_id: caller.user_id.clone(),
        channel_id: channel_id.unwrap_or_default(),
        filename: req.filename.clone(),
        description: String::new(),
        declared_type: mime.clone(),
        mime_type: mime.clone(),
        file_type: sniff::file_type(&mime) as i32,
        size_bytes: req.size_bytes,
        expected_sha256: req.sha256.clone(),
        sha256: String::new(),
        access: access as i32,
        state: pb::FileState::PendingUpload as i32,
        scan_status: pb::ScanStatus::Pending as i32,
        scan_signature: String::new(),
        scan_time: None,
        width: 0,
        height: 0,
        retention_days: 0,
        keep_forever: false,
        object_key,
        upload_expires_at: expires_at,
        created_at: now,
        uploaded_at: None,
        updated_at: now,
        deleted_at: None,
    };
    let txn = shared.db.writer.begin().await?;
    quota::reserve(&txn, &caller.user_id, req.size_bytes, shared.defaults()).await?;
    file::Entity::insert(file::ActiveModel::from(row.clone())).exec_without_returning(&txn).await?;
    txn.commit().await?;
    Ok(pb::CreateUploadUrlResponse {
        file: Some(shared.file_proto(&row).await?),
        upload_url: upload.url,
        upload_method: "PUT".into(),
        upload_headers: upload.headers.into_iter().collect(),
        expires_at: Some(timestamp(expires_at)),
    })
}

/// A repeated CreateUploadUrl gets its original URL only while it works.
pub(crate) fn still_valid(answer: &pb::CreateUploadUrlResponse) -> Result<()> {
    match &answer.expires_at {
        Some(at) if micros_of(at) < now_micros() => Err(Error::precondition(
            "the upload URL issued for this idempotency key has expired; start again with a new key",
        )),
        _ => Ok(()),
    }
}

pub(crate) async fn confirm(shared: &Shared, caller: &Caller, raw_id: &str) -> Result<pb::ConfirmUploadResponse> {
    let found = shared.find(raw_id).await?;
    if found.owner_id != caller.user_id {
        shared.visible(caller, raw_id).await?;
        return Err(Error::denied("only the uploader can confirm an upload"));
    }
    match pb::FileState::try_from(found.state) {
        Ok(pb::FileState::PendingUpload) => {}
        Ok(pb::FileState::Ready) => return answer(shared, &found).await,
        _ => return Err(Error::not_found(format!("file {} not found", found.file_id))),
    }
    // The bytes leave the upload URL's reach before they are checked, so
    // that nothing can replace them between the check and the scan.
    let kept_key = format!("files/{}", found.file_id);
    let objects = &shared.objects;
    if objects.size(&found.object_key).await.map_err(Error::internal)?.is_some() {
        objects.rename(&found.object_key, &kept_key).await.map_err(Error::internal)?;
    }
    let checked = check_bytes(shared, &found, &kept_key).await;
    let (sha256, mime) = match checked {
        Ok(ok) => ok,
        Err(err) => {
            // Put the bytes back where the URL can replace them.
            if objects.size(&kept_key).await.ok().flatten().is_some() {
                let _ = objects.rename(&kept_key, &found.object_key).await;
            }
            return Err(err);
        }
    };
    let now = now_micros();
    let scan_status = if shared.scanner.is_some() { pb::ScanStatus::Pending } else { pb::ScanStatus::Unscanned };
    let mut confirmed = file::Model {
        state: pb::FileState::Ready as i32,
        scan_status: scan_status as i32,
        file_type: sniff::file_type(&mime) as i32,
        mime_type: mime,
        sha256,
        object_key: kept_key,
        uploaded_at: Some(now),
        updated_at: now,
        ..found.clone()
    };
    // Unscanned files are served at once, so their thumbnails are made now;
    // scanned ones get theirs once they are found clean.
    let made = match scan_status {
        pb::ScanStatus::Unscanned => thumbnails::make(shared, &confirmed).await.map_err(Error::internal)?,
        _ => None,
    };
    if let Some(made) = &made {
        (confirmed.width, confirmed.height) = (made.width, made.height);
    }
    let txn = shared.db.writer.begin().await?;
    let update = file::Entity::update_many()
        .set(file::ActiveModel {
            state: Set(confirmed.state),
            scan_status: Set(confirmed.scan_status),
            file_type: Set(confirmed.file_type),
            mime_type: Set(confirmed.mime_type.clone()),
            sha256: Set(confirmed.sha256.clone()),
            object_key: Set(confirmed.object_key.clone()),
            uploaded_at: Set(confirmed.uploaded_at),
            width: Set(confirmed.width),
            height: Set(confirmed.height),
            updated_at: Set(now),
            ..Default::default()
        })
        .filter(file::Column::FileId.eq(&found.file_id))
        .filter(file::Column::State.eq(pb::FileState::PendingUpload as i32))
        .exec(&txn)
        .await?;
    if update.rows_affected == 0 {
        // Another confirmation won, and made the same thumbnails; or the
        // upload was deleted meanwhile, and they are nobody's.
        drop(txn);
        let now_row = shared.find(&found.file_id).await?;
        if made.is_some() && now_row.state != pb::FileState::Ready as i32 {
            thumbnails::remove(shared, &found.file_id).await;
        }
        return answer(shared, &now_row).await;
    }
    if let Some(made) = &made {
        thumbnails::record(&txn, made).await?;
    }
    let delta = quota::Delta { reserved: -found.size_bytes, used: found.size_bytes, files: 1 };
    quota::adjust(&txn, &found.owner_id, delta).await?;
    shared.event(&txn, "file.uploaded", &caller.user_id, &confirmed).await?;
    txn.commit().await?;
    shared.outbox.notify();
    answer(shared, &confirmed).await
}

async fn answer(shared: &Shared, f: &file::Model) -> Result<pb::ConfirmUploadResponse> {
    Ok(pb::ConfirmUploadResponse { file: Some(shared.file_proto(f).await?) })
}

/// The bytes' checksum and real type, or why they are refused.
async fn check_bytes(shared: &Shared, found: &file::Model, key: &str) -> Result<(String, String)> {
    let size = shared.objects.size(key).await.map_err(Error::internal)?;
    let size = match size {
        None if now_micros() > found.upload_expires_at => {
            return Err(Error::precondition("the upload URL expired before the bytes arrived; start again"));
        }
        None => return Err(Error::not_found(format!("no bytes were uploaded for file {}", found.file_id))),
        Some(size) => size,
    };
    if size != found.size_bytes as u64 {
        return Err(Error::precondition(format!("{size} bytes arrived but {} were declared", found.size_bytes)));
    }
    let mut reader = shared.objects.read(key).await.map_err(Error::internal)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    // Large reads: each is a hop to a blocking thread.
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buffer).await.map_err(Error::internal)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if head.len() < SNIFF_LEN {
            let take = n.min(SNIFF_LEN - head.len());
            head.extend_from_slice(&buffer[..take]);
        }
    }
    let sha256 = hex::encode(hasher.finalize());
    if !found.expected_sha256.is_empty() && sha256 != found.expected_sha256 {
        return Err(Error::precondition("the bytes do not match the declared sha256"));
    }
    let mime = sniff::confirm_type(&found.declared_type, sniff::sniff(&head)).map_err(Error::precondition)?;
    Ok((sha256, mime))
}

/// Gives up the user's uploads whose URL expired long ago unconfirmed.
pub(crate) async fn release_expired(shared: &Shared, user_id: &str) -> Result<()> {
    let cutoff = now_micros() - ABANDONED_AFTER.as_micros() as i64;
    let abandoned = file::Entity::find()
        .filter(file::Column::OwnerId.eq(user_id))
        .filter(file::Column::State.eq(pb::FileState::PendingUpload as i32))
        .filter(file::Column::UploadExpiresAt.lt(cutoff))
        .all(&shared.db.writer)
        .await?;
    for upload in abandoned {
        let now = now_micros();
        let txn = shared.db.writer.begin().await?;
        let (pending, deleted) = (pb::FileState::PendingUpload as i32, pb::FileState::Deleted as i32);
        if file::retire(&txn, &upload.file_id, pending, deleted, now).await? {
            quota::adjust(&txn, user_id, quota::Delta { reserved: -upload.size_bytes, ..Default::default() }).await?;
        }
        txn.commit().await?;
        if let Err(err) = shared.objects.delete(&upload.object_key).await {
            tracing::warn!(file_id = %upload.file_id, error = %err, "could not delete an abandoned upload");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_types_are_checked() {
        assert!(check_filename("report (final).pdf").is_ok());
        for bad in ["", " ", "../x", "a/b", "a\\b", "a\nb", ".."] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert!(check_filename(&"x".repeat(256)).is_err());
        let allowed = vec!["image/png".to_string(), "audio/*".to_string(), "application/*".to_string()];
        assert_eq!(normalize_type("Image/PNG; charset=x", &allowed).unwrap(), "image/png");
        assert_eq!(normalize_type("audio/ogg", &allowed).unwrap(), "audio/ogg");
        assert!(normalize_type("image/gif", &allowed).is_err());
        assert!(normalize_type("application/x-msdownload", &allowed).is_err());
        assert!(normalize_type("png", &allowed).is_err());
    }
}

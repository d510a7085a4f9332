//! Rebuilding the indices from the services that own the data, while
//! searches and indexing go on.
//!
//! The order is what makes it lose nothing:
//! 1. a new, empty generation of the index is started beside the live one;
//! 2. from then on the queue keeps every change, also after the live index
//!    has it, and every change still waiting is kept too;
//! 3. every message, person and file is read from the messaging, users and
//!    files services, as they are now, into the new generation;
//! 4. the kept changes are applied to it in their order, so whatever
//!    changed while it was read ends as it is now;
//! 5. between two batches of the live indexer, the last kept changes are
//!    applied and the new generation replaces the live one.
//!
//! A change whose event reaches the queue only later is applied by the
//! live indexer to the new generation, as to any.

use std::sync::Arc;

use colink_proto::files::v1::{ExportFilesRequest, ExportedFile, FileAccess, FileType, ScanStatus};
use colink_proto::messaging::v1::ExportMessagesRequest;
use colink_proto::search::v1::{Reindex, ReindexState};
use colink_proto::users::v1::ListUsersRequest;
use colink_runtime::clients::call_on_behalf;
use colink_runtime::ids::{now_micros, timestamp};
use colink_runtime::{Caller, Error, Result, Role};

use crate::Shared;
use crate::files::kind_name;
use crate::index::{Change, FileDoc, FileFacts, MessageDoc, UserDoc};

/// Messages read from the messaging service at a time.
const MESSAGE_PAGE: i32 = 1_000;
/// People read from the users service at a time (its largest page).
const USER_PAGE: i32 = 100;
/// Files read from the files service at a time.
const FILE_PAGE: i32 = 500;

/// What a rebuild step counts.
enum Counted {
    Messages(usize),
    Users(usize),
    Files(usize),
    Replayed(usize),
}

impl Shared {
    /// Starts a rebuild in the background, or returns the one running.
    pub(crate) fn start_reindex(self: &Arc<Self>, caller: &Caller) -> Result<Reindex> {
        admin_only(caller)?;
        let mut report = self.reindex.lock().map_err(|_| Error::internal("reindex state poisoned"))?;
        if report.state == ReindexState::Running as i32 {
            return Ok(report.clone());
        }
        *report = Reindex {
            state: ReindexState::Running as i32,
            start_time: Some(timestamp(now_micros())),
            ..Default::default()
        };
        let started = report.clone();
        drop(report);
        let shared = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            let outcome = shared.rebuild(&caller).await;
            if let Err(cause) = &outcome {
                tracing::error!(error = %cause, "rebuilding the search index failed; the old index stays");
                if let Err(err) = shared.index.abandon_rebuild().await {
                    tracing::warn!(error = %err, "could not remove a failed rebuild's index");
                }
                if let Err(err) = shared.queue.stop_retaining().await {
                    tracing::warn!(error = %err, "could not drop the changes kept for a failed rebuild");
                }
            }
            shared.finish_report(outcome.err());
        });
        Ok(started)
    }

    /// The running or last rebuild.
    pub(crate) fn reindex_report(&self, caller: &Caller) -> Result<Reindex> {
        admin_only(caller)?;
        let report = self.reindex.lock().map_err(|_| Error::internal("reindex state poisoned"))?;
        Ok(report.clone())
    }

    async fn rebuild(&self, caller: &Caller) -> std::result::Result<(), String> {
        let index = self.index.as_ref();
        index.begin_rebuild().await.map_err(|e| e.to_string())?;
        self.queue.start_retaining().await.map_err(|e| e.to_string())?;
        let mut token = String::new();
        loop {
            let request = ExportMessagesRequest { page_size: MESSAGE_PAGE, page_token: token };
            let page =
                call_on_behalf(&self.messaging, caller, request, |mut c, r| async move { c.export_messages(r).await })
                    .await
                    .map_err(|s| format!("reading messages: {}", s.message()))?;
            let changes: Vec<Change> = page
                .messages
                .into_iter()
                .map(|m| {
                    Change::Message(MessageDoc {
                        message_id: m.message_id,
                        channel_id: m.channel_id,
                        sender_id: m.sender_id,
                        thread_id: m.thread_id,
                        text: m.text,
                        has_file: m.has_files,
                    })
                })
                .collect();
            self.count(Counted::Messages(changes.len()));
            index.apply_rebuilt(changes).await.map_err(|e| e.to_string())?;
            // Keeps what piles up in the queue meanwhile small.
            self.count(Counted::Replayed(self.queue.replay(index).await?));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut token = String::new();
        loop {
            let request = ListUsersRequest {
                page_size: USER_PAGE,
                page_token: token,
                include_deactivated: true,
                ..Default::default()
            };
            let page = call_on_behalf(&self.users, caller, request, |mut c, r| async move { c.list_users(r).await })
                .await
                .map_err(|s| format!("reading people: {}", s.message()))?;
            let changes: Vec<Change> = page
                .users
                .into_iter()
                .map(|u| {
                    Change::User(UserDoc { user_id: u.user_id, username: u.username, display_name: u.display_name })
                })
                .collect();
            self.count(Counted::Users(changes.len()));
            index.apply_rebuilt(changes).await.map_err(|e| e.to_string())?;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut token = String::new();
        loop {
            let request = ExportFilesRequest { page_size: FILE_PAGE, page_token: token };
            let page = call_on_behalf(&self.files, caller, request, |mut c, r| async move { c.export_files(r).await })
                .await
                .map_err(|s| format!("reading files: {}", s.message()))?;
            self.count(Counted::Files(page.files.len()));
            let changes: Vec<Change> = page.files.iter().filter_map(file_change).collect();
            index.apply_rebuilt(changes).await.map_err(|e| e.to_string())?;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        // Catch up outside the live indexer's way; the last few go in the
        // take-over.
        while self.queue.replay(index).await.inspect(|n| self.count(Counted::Replayed(*n)))?
            >= crate::queue::BATCH as usize
        {}
        let last = self.queue.take_over(index).await?;
        self.count(Counted::Replayed(last));
        Ok(())
    }

    fn count(&self, counted: Counted) {
        if let Ok(mut report) = self.reindex.lock() {
            match counted {
                Counted::Messages(n) => report.messages += n as i64,
                Counted::Users(n) => report.users += n as i64,
                Counted::Files(n) => report.files += n as i64,
                Counted::Replayed(n) => report.changes_replayed += n as i64,
            }
        }
    }

    fn finish_report(&self, error: Option<String>) {
        if let Ok(mut report) = self.reindex.lock() {
            report.end_time = Some(timestamp(now_micros()));
            match error {
                None => report.state = ReindexState::Succeeded as i32,
                Some(error) => {
                    report.state = ReindexState::Failed as i32;
                    report.error = error;
                }
            }
        }
    }
}

/// A file as the export gives it, when it may be found.
fn file_change(exported: &ExportedFile) -> Option<Change> {
    let f = exported.file.as_ref()?;
    let showable = matches!(ScanStatus::try_from(f.scan_status), Ok(ScanStatus::Clean | ScanStatus::Unscanned));
    if !showable {
        return None;
    }
    let access = FileAccess::try_from(f.access).map(|a| a.as_str_name()).unwrap_or_default();
    Some(Change::File(FileDoc::from_facts(FileFacts {
        file_id: &f.file_id,
        owner_id: &f.owner_id,
        channel_id: &f.channel_id,
        access: &access.trim_start_matches("FILE_ACCESS_").to_ascii_lowercase(),
        filename: &f.filename,
        description: &f.description,
        file_type: &kind_name(FileType::try_from(f.file_type).unwrap_or_default()),
        attached_channel_ids: &exported.attached_channel_ids,
        shared_with_user_ids: &exported.shared_with_user_ids,
    })))
}

fn admin_only(caller: &Caller) -> Result<()> {
    if caller.role != Role::Admin {
        return Err(Error::denied("only admins can rebuild the search index"));
    }
    Ok(())
}

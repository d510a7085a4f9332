//! `colink search reindex`: starts a rebuild of the search indices on a
//! running node and follows it to the end.

use std::time::Duration;

use colink_proto::search::v1::search_service_client::SearchServiceClient;
use colink_proto::search::v1::{GetReindexRequest, Reindex, ReindexState, StartReindexRequest};
use colink_runtime::clients::with_token;
use tonic::transport::Endpoint;

/// How often the rebuild's progress is asked for.
const POLL: Duration = Duration::from_secs(1);

/// Rebuilds the indices of the node at `server` as the admin whose access
/// token is `token`; returns once the new index is live, or why not.
pub async fn reindex(server: &str, token: &str) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(server.to_string()).map_err(|e| format!("--server {server:?}: {e}"))?;
    let channel = endpoint.connect().await.map_err(|e| format!("cannot reach {server}: {e}"))?;
    let mut client = SearchServiceClient::new(channel);
    let started = client
        .start_reindex(with_token(token, StartReindexRequest {}))
        .await
        .map_err(|s| format!("starting the rebuild: {}", s.message()))?
        .into_inner()
        .reindex
        .unwrap_or_default();
    let mut shown = String::new();
    let mut report = started;
    loop {
        let line = progress(&report);
        if line != shown {
            println!("{line}");
            shown = line;
        }
        match ReindexState::try_from(report.state) {
            Ok(ReindexState::Succeeded) => return Ok(()),
            Ok(ReindexState::Failed) => return Err(format!("the rebuild failed: {}", report.error)),
            _ => {}
        }
        tokio::time::sleep(POLL).await;
        report = client
            .get_reindex(with_token(token, GetReindexRequest {}))
            .await
            .map_err(|s| format!("following the rebuild: {}", s.message()))?
            .into_inner()
            .reindex
            .unwrap_or_default();
    }
}

fn progress(report: &Reindex) -> String {
    let state = match ReindexState::try_from(report.state) {
        Ok(ReindexState::Running) => "running",
        Ok(ReindexState::Succeeded) => "done: the rebuilt index is live",
        Ok(ReindexState::Failed) => "failed: the old index stays",
        _ => "not started",
    };
    format!(
        "{state}: {} messages, {} people, {} files, {} changes made meanwhile",
        report.messages, report.users, report.files, report.changes_replayed
    )
}

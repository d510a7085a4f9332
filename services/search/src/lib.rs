//! The search service (colink.search.v1): full-text search over messages,
//! files and people, embedded (Tantivy) or on Elasticsearch/OpenSearch, never showing anyone
//! what they may not see.
//!
//! - `analysis`: how text becomes terms, for the index, queries and
//!   highlights alike;
//! - `query`: the query language;
//! - `matcher`: the check of a hit against the text as it is now, and its
//!   highlights;
//! - `index`: the `SearchIndex` trait; `embedded`: Tantivy; `elastic`:
//!   Elasticsearch/OpenSearch;
//! - `queue`: from the event log into the index, durably;
//! - `messages`: SearchMessages; `files`: SearchFiles; `users`: SearchUsers;
//! - `request`: what the three have in common in checking a request;
//! - `reindex`: rebuilding the indices while they serve.

pub mod analysis;
pub mod elastic;
pub mod embedded;
mod files;
pub mod index;
pub mod matcher;
mod messages;
pub mod query;
pub mod queue;
mod reindex;
mod request;
mod users;

use std::path::Path;
use std::sync::Arc;

use colink_proto::channels::v1::channels_service_client::ChannelsServiceClient;
use colink_proto::files::v1::files_service_client::FilesServiceClient;
use colink_proto::messaging::v1::messaging_service_client::MessagingServiceClient;
use colink_proto::search::v1 as pb;
use colink_proto::search::v1::search_service_server::{SearchService as SearchRpc, SearchServiceServer};
use colink_proto::users::v1::users_service_client::UsersServiceClient;
use colink_runtime::caller;
use colink_runtime::clients::PeerChannel;
use colink_runtime::db::Db;
use colink_runtime::events::EventHandler;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::elastic::ElasticIndex;
use crate::embedded::EmbeddedIndex;
use crate::index::{IndexError, SearchIndex};
use crate::queue::{FileIndexer, MessageIndexer, Queue, UserIndexer};

/// The services search asks at query time.
pub struct Peers {
    pub channels: PeerChannel,
    pub messaging: PeerChannel,
    pub users: PeerChannel,
    pub files: PeerChannel,
}

/// The search service.
#[derive(Clone)]
pub struct SearchService {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    index: Arc<dyn SearchIndex>,
    queue: Queue,
    channels: ChannelsServiceClient<PeerChannel>,
    messaging: MessagingServiceClient<PeerChannel>,
    users: UsersServiceClient<PeerChannel>,
    files: FilesServiceClient<PeerChannel>,
    /// The running or last rebuild of the indices on this node.
    reindex: std::sync::Mutex<pb::Reindex>,
}

/// Opens the index a configuration names: the embedded one under
/// `data_dir/search` when `url` is empty, else the Elasticsearch or
/// OpenSearch cluster at `url`, its indices named from `prefix`.
pub async fn open_index(url: &str, prefix: &str, data_dir: &Path) -> Result<Arc<dyn SearchIndex>, IndexError> {
    if url.is_empty() {
        return Ok(Arc::new(EmbeddedIndex::open(&data_dir.join("search"))?));
    }
    Ok(Arc::new(ElasticIndex::open(url, prefix).await?))
}

impl SearchService {
    pub fn new(db: Db, index: Arc<dyn SearchIndex>, peers: Peers) -> Self {
        Self {
            shared: Arc::new(Shared {
                index,
                queue: Queue::new(db),
                channels: ChannelsServiceClient::new(peers.channels),
                messaging: MessagingServiceClient::new(peers.messaging),
                users: UsersServiceClient::new(peers.users),
                files: FilesServiceClient::new(peers.files),
                reindex: std::sync::Mutex::new(pb::Reindex::default()),
            }),
        }
    }

    /// The consumer of `message.events` that queues messages for indexing.
    pub fn message_indexer(&self) -> Arc<dyn EventHandler> {
        Arc::new(MessageIndexer(self.shared.queue.clone()))
    }

    /// The consumer of `file.events` that queues files' names and who may
    /// see them.
    pub fn file_indexer(&self) -> Arc<dyn EventHandler> {
        Arc::new(FileIndexer(self.shared.queue.clone()))
    }

    /// The consumer of `user.events` that queues people's names.
    pub fn user_indexer(&self) -> Arc<dyn EventHandler> {
        Arc::new(UserIndexer(self.shared.queue.clone()))
    }

    /// Starts applying the queue to the index; it runs until shutdown.
    pub fn start_indexer(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        self.shared.queue.spawn_indexer(self.shared.index.clone(), shutdown)
    }

    pub fn into_server(self) -> SearchServiceServer<Self> {
        SearchServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SearchRpc for SearchService {
    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.search_messages(caller, request.get_ref()).await?))
    }

    async fn search_files(
        &self,
        request: Request<pb::SearchFilesRequest>,
    ) -> Result<Response<pb::SearchFilesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.search_files(caller, request.get_ref()).await?))
    }

    async fn search_users(
        &self,
        request: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(self.shared.search_users(caller, request.get_ref()).await?))
    }

    async fn start_reindex(
        &self,
        request: Request<pb::StartReindexRequest>,
    ) -> Result<Response<pb::StartReindexResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(pb::StartReindexResponse { reindex: Some(self.shared.start_reindex(caller)?) }))
    }

    async fn get_reindex(
        &self,
        request: Request<pb::GetReindexRequest>,
    ) -> Result<Response<pb::GetReindexResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(pb::GetReindexResponse { reindex: Some(self.shared.reindex_report(caller)?) }))
    }
}

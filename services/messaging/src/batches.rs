//! A queue in front of a task that writes in batches: what arrives while
//! one transaction is written goes into the next one together, and each
//! caller is answered once the transaction holding its item committed.

use std::future::Future;
use std::time::Duration;

use sea_orm::DbErr;
use tokio::sync::{mpsc, oneshot};

/// What a batch writer does with a batch.
pub trait BatchWrite: Send + Sync + 'static {
    type Item: Clone + Send + 'static;
    type Output: Send + 'static;

    /// Writes the items in one transaction; the outputs are in their order.
    /// An error fails the whole batch and changes nothing.
    fn write(&self, items: &[Self::Item]) -> impl Future<Output = Result<Vec<Self::Output>, DbErr>> + Send;

    /// How long after this batch began the next one may begin.
    fn spacing(&self, _items: &[Self::Item]) -> Option<Duration> {
        None
    }
}

struct Pending<W: BatchWrite> {
    item: W::Item,
    reply: oneshot::Sender<Result<W::Output, DbErr>>,
}

pub struct Batches<W: BatchWrite> {
    queue: mpsc::Sender<Pending<W>>,
    /// What the writer writes, for the error when it has stopped.
    what: &'static str,
}

impl<W: BatchWrite> Clone for Batches<W> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), what: self.what }
    }
}

impl<W: BatchWrite> Batches<W> {
    /// Starts the writer task, taking at most `max` items a batch; it ends
    /// when the last handle is dropped.
    pub fn spawn(writer: W, max: usize, what: &'static str) -> Self {
        let (queue, pending) = mpsc::channel(max * 2);
        tokio::spawn(write_batches(writer, pending, max));
        Self { queue, what }
    }

    /// Writes an item and answers once it is committed.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, DbErr> {
        let (reply, answer) = oneshot::channel();
        let stopped = || DbErr::Custom(format!("the {} writer has stopped", self.what));
        self.queue.send(Pending { item, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches<W: BatchWrite>(writer: W, mut pending: mpsc::Receiver<Pending<W>>, max: usize) {
    let mut batch = Vec::with_capacity(max);
    while pending.recv_many(&mut batch, max).await > 0 {
        let began = tokio::time::Instant::now();
        let items: Vec<W::Item> = batch.iter().map(|p| p.item.clone()).collect();
        match writer.write(&items).await {
            Ok(outputs) => {
                for (p, output) in batch.drain(..).zip(outputs) {
                    let _ = p.reply.send(Ok(output));
                }
            }
            // Alone, each item gets its own answer: one that fails must not
            // fail the others that happened to share its transaction.
            Err(_) if batch.len() > 1 => {
                for p in batch.drain(..) {
                    let result = writer.write(std::slice::from_ref(&p.item)).await;
                    let _ = p.reply.send(result.and_then(|mut outputs| {
                        outputs.pop().ok_or_else(|| DbErr::Custom("a write answered nothing".into()))
                    }));
                }
            }
            Err(err) => {
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(DbErr::Custom(err.to_string())));
                }
            }
        }
        if let Some(spacing) = writer.spacing(&items) {
            tokio::time::sleep_until(began + spacing).await;
        }
    }
}

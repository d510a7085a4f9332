//! How many streams one user may hold open on a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// Open streams per user on this node.
pub struct StreamCounts {
    per_user: Mutex<HashMap<String, usize>>,
    max: usize,
}

/// One open stream; gives its place back when dropped.
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    user_id: String,
}

impl StreamCounts {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { per_user: Mutex::new(HashMap::new()), max })
    }

    /// A place for one more stream of the user, or RESOURCE_EXHAUSTED.
    pub fn take(self: &Arc<Self>, user_id: &str) -> Result<StreamSlot, Status> {
        let mut per_user = self.per_user.lock().map_err(|_| Status::internal("stream counts unavailable"))?;
        let open = per_user.entry(user_id.to_string()).or_default();
        if *open >= self.max {
            return Err(Status::resource_exhausted(format!(
                "this account already has {} open streams on this node, the most allowed; close one first",
                self.max
            )));
        }
        *open += 1;
        Ok(StreamSlot { counts: self.clone(), user_id: user_id.to_string() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut per_user) = self.counts.per_user.lock()
            && let Some(open) = per_user.get_mut(&self.user_id)
        {
            *open -= 1;
            if *open == 0 {
                per_user.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_limit_and_dropped_slots_come_back() {
        let counts = StreamCounts::new(2);
        let first = counts.take("u").unwrap();
        let _second = counts.take("u").unwrap();
        assert_eq!(counts.take("u").err().map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
        assert!(counts.take("v").is_ok(), "other users are not affected");
        drop(first);
        assert!(counts.take("u").is_ok());
    }
}

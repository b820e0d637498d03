//! # Checkpoint writer
//!
//! Saving a checkpoint means an fsync of the metadata store. A pipeline hands its checkpoints to a writer
//! thread and goes on with the next batch; the thread saves the newest one it holds and drops older ones.
//! That is safe because every checkpoint handed over is already covered by a target commit: saving a
//! newer one later, or an older one after a crash, only changes how much is replayed.
//! [`CheckpointWriter::save_now`] waits for the save, for the few checkpoints that must be durable before the
//! pipeline writes anything (the stream start of an initial load).

use idaas_core::{Error, ErrorKind, Result};
use idaas_store::Store;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
struct State {
    pending: Option<(u64, serde_json::Value)>,
    next_seq: u64,
    saved_seq: u64,
    error: Option<String>,
    closed: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// Saves one pipeline's checkpoints on a background thread.
pub struct CheckpointWriter {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl CheckpointWriter {
    /// A writer for `pipeline`'s checkpoints in `store`.
    pub fn new(
        store: Arc<Store>,
        pipeline: String,
        on_saved: Box<dyn Fn(&serde_json::Value) + Send>,
    ) -> Self {
        let shared: Shared = Arc::default();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("checkpoint-{pipeline}"))
            .spawn(move || {
                loop {
                    let (seq, cp) = {
                        let mut st = lock(&s);
                        while st.pending.is_none() && !st.closed {
                            st = s.1.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        match st.pending.take() {
                            Some(p) => p,
                            None => return,
                        }
                    };
                    let r = store.save_checkpoint(&pipeline, &cp, &crate::stats::now_rfc3339());
                    let mut st = lock(&s);
                    match r {
                        Ok(()) => {
                            st.saved_seq = st.saved_seq.max(seq);
                            on_saved(&cp);
                        }
                        Err(e) => st.error = Some(format!("cannot save the checkpoint: {e}")),
                    }
                    s.1.notify_all();
                }
            })
            .expect("spawn checkpoint thread");
        CheckpointWriter { shared, thread: Some(thread) }
    }

    fn submit(&self, cp: serde_json::Value) -> Result<u64> {
        let mut st = lock(&self.shared);
        if let Some(e) = st.error.take() {
            return Err(Error::new(ErrorKind::Internal, e));
        }
        st.next_seq += 1;
        let seq = st.next_seq;
        st.pending = Some((seq, cp));
        self.shared.1.notify_all();
        Ok(seq)
    }

    /// Hands over a checkpoint; returns at once.
    pub fn save(&self, cp: serde_json::Value) -> Result<()> {
        self.submit(cp).map(|_| ())
    }

    /// Waits until every checkpoint handed over so far is durable.
    pub fn flush(&self) -> Result<()> {
        let mut st = lock(&self.shared);
        while st.saved_seq < st.next_seq {
            if let Some(e) = st.error.take() {
                return Err(Error::new(ErrorKind::Internal, e));
            }
            st = self.shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// Hands over a checkpoint and waits until it (or a newer one) is durable.
    pub fn save_now(&self, cp: serde_json::Value) -> Result<()> {
        let seq = self.submit(cp)?;
        let mut st = lock(&self.shared);
        while st.saved_seq < seq {
            if let Some(e) = st.error.take() {
                return Err(Error::new(ErrorKind::Internal, e));
            }
            st = self.shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    /// Saves what is pending, then stops the thread.
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_checkpoint_wins_and_drop_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store
            .insert_pipeline(&idaas_store::StoredPipeline {
                alias: "p".into(),
                spec: serde_json::json!({}),
                desired_state: "running".into(),
                last_error: None,
                created_at: "t".into(),
            })
            .unwrap();
        {
            let w = CheckpointWriter::new(store.clone(), "p".into(), Box::new(|_| {}));
            w.save_now(serde_json::json!({"n": 0})).unwrap();
            assert_eq!(store.load_checkpoint("p").unwrap(), Some(serde_json::json!({"n": 0})));
            for n in 1..=100 {
                w.save(serde_json::json!({ "n": n })).unwrap();
            }
        }
        assert_eq!(store.load_checkpoint("p").unwrap(), Some(serde_json::json!({"n": 100})));
    }
}

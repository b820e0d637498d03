//! # Handing change events to the engine
//!
//! A source's reader runs as its own task and hands events to the engine through a bounded channel. One
//! hand-over per event costs more than decoding the event: the two threads wake each other for every
//! event. [`Grouped`] collects events into groups of at most [`GROUP_EVENTS`] and hands over a group when
//! it is full or when the reader is about to wait for the server ([`Grouped::flush`]): a busy stream moves
//! in groups, and an event never waits for company while the reader waits for more.
//!
//! The channel holds [`CHANNEL_CAPACITY`] events in groups, so a slow target pushes back on the reader
//! (and through it on the server) as before.

use idaas_core::{ChangeEvent, ChangeStream, Error, Result};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Events in the channel between a reader and the engine, at most: back-pressure for large transactions.
pub const CHANNEL_CAPACITY: usize = 16_384;
/// Events go to the engine in groups of at most this many.
pub const GROUP_EVENTS: usize = 256;

/// The reader's end of a grouped event channel.
pub struct Grouped {
    tx: mpsc::Sender<Vec<Result<ChangeEvent>>>,
    group: Mutex<Vec<Result<ChangeEvent>>>,
}

/// A grouped channel: the reader's end, and the engine's end as a [`ChangeStream`].
pub fn channel() -> (Grouped, ChangeStream) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY / GROUP_EVENTS);
    let groups = futures::stream::unfold(rx, |mut rx: mpsc::Receiver<Vec<Result<ChangeEvent>>>| async move {
        rx.recv().await.map(|group| (futures::stream::iter(group), rx))
    });
    let grouped = Grouped { tx, group: Mutex::new(Vec::with_capacity(GROUP_EVENTS)) };
    (grouped, Box::pin(futures::StreamExt::flatten(groups)))
}

impl Grouped {
    /// Adds an event to the group; hands the group over once it is full.
    pub async fn send(&self, ev: ChangeEvent) -> Result<()> {
        let full = {
            let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
            group.push(Ok(ev));
            (group.len() >= GROUP_EVENTS)
                .then(|| std::mem::replace(&mut *group, Vec::with_capacity(GROUP_EVENTS)))
        };
        match full {
            Some(group) => self.tx.send(group).await.map_err(|_| closed()),
            None => Ok(()),
        }
    }

    /// Hands over the events grouped so far.
    pub async fn flush(&self) -> Result<()> {
        let group = {
            let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
            if group.is_empty() {
                return Ok(());
            }
            // The next group starts at the size of this one: full under a backlog, small when events
            // trickle in, and never grown step by step to its usual size.
            let size = group.len();
            std::mem::replace(&mut *group, Vec::with_capacity(size))
        };
        self.tx.send(group).await.map_err(|_| closed())
    }

    /// Ends the stream with `error`, after the events grouped before it.
    pub async fn fail(&self, error: Error) {
        let _ = self.flush().await;
        let _ = self.tx.send(vec![Err(error)]).await;
    }

    /// True once the engine dropped its end.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves once the engine dropped its end.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

fn closed() -> Error {
    Error::internal("change stream closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::StreamExt;
    use idaas_core::{Op, Position, SourceInfo};

    fn heartbeat(n: i64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Heartbeat,
            source: SourceInfo {
                connection: "src".into(),
                table: None,
                position: Position::default(),
                commit_ts_ms: None,
                read_ts_ms: Some(n),
                txid: None,
            },
            before: None,
            after: None,
            schema: None,
            ddl: None,
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_once_flushed_or_grouped() {
        let (tx, mut stream) = channel();
        let n = GROUP_EVENTS as i64 + 3;
        for i in 0..n {
            tx.send(heartbeat(i)).await.unwrap();
        }
        // A full group was handed over; the last three wait for the flush.
        for i in 0..GROUP_EVENTS as i64 {
            assert_eq!(stream.next().await.unwrap().unwrap().source.read_ts_ms, Some(i));
        }
        assert!(stream.next().now_or_never().is_none(), "nothing more before the flush");
        tx.flush().await.unwrap();
        for i in GROUP_EVENTS as i64..n {
            assert_eq!(stream.next().await.unwrap().unwrap().source.read_ts_ms, Some(i));
        }
        tx.send(heartbeat(n)).await.unwrap();
        tx.fail(Error::internal("lost")).await;
        assert_eq!(stream.next().await.unwrap().unwrap().source.read_ts_ms, Some(n));
        assert!(stream.next().await.unwrap().is_err(), "the error comes after the events before it");
        drop(stream);
        assert!(tx.is_closed());
        assert!(tx.send(heartbeat(0)).await.is_ok(), "a partial group is only kept");
        assert!(tx.flush().await.is_err());
    }
}

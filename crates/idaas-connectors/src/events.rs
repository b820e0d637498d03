//! # Handing change events to the engine
//!
//! A source's reader runs as its own task and hands events to the engine through a bounded channel. One
//! hand-over per event costs more than decoding the event: the two threads wake each other for every
//! event. [`Grouped`] collects events into groups of [`GROUP_EVENTS`] row events (with the commits and
//! heartbeats between them, at most [`GROUP_MAX_EVENTS`] events in all) and hands over a group when it is
//! full or when the reader is about to wait for the server ([`Grouped::flush`]): a busy stream moves in
//! groups, and an event never waits for company while the reader waits for more.
//!
//! The channel holds [`CHANNEL_CAPACITY`] row events in groups, so a slow target pushes back on the reader
//! (and through it on the server) as before. Rows, not events, are what costs memory and what the target
//! writes: counted in events, a backlog of one-row transactions (a row and a commit each) would come to the
//! engine in batches of half as many rows, each paying a target transaction's fixed costs. Emptied groups go back to the reader to be filled again
//! (up to [`SPARE_GROUPS`] of them): a group is about 50 kB, and taking fresh memory for every group cost
//! page faults and copies as it grew.

use futures::Stream;
use idaas_core::{ChangeEvent, ChangeStream, Error, Result};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::sync::mpsc;

/// Row events in the channel between a reader and the engine, at most: back-pressure for large
/// transactions.
pub const CHANNEL_CAPACITY: usize = 16_384;
/// Events go to the engine in groups of this many row events at most.
pub const GROUP_EVENTS: usize = 256;
/// Events of any kind in one group, at most (a stream of commits without rows also moves in groups).
pub const GROUP_MAX_EVENTS: usize = 4 * GROUP_EVENTS;
/// Emptied groups kept for the reader, at most.
pub const SPARE_GROUPS: usize = 8;

type Group = Vec<Result<ChangeEvent>>;

/// Emptied groups, shared by both ends of a channel.
#[derive(Default)]
struct Spare(Mutex<Vec<Group>>);

impl Spare {
    fn take(&self) -> Group {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(GROUP_EVENTS))
    }

    fn give(&self, mut group: Group) {
        if group.capacity() < GROUP_EVENTS {
            return;
        }
        group.clear();
        let mut spare = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_GROUPS {
            spare.push(group);
        }
    }
}

/// The reader's end of a grouped event channel.
pub struct Grouped {
    tx: mpsc::Sender<Group>,
    /// The group being filled and its row events.
    group: Mutex<(Group, usize)>,
    spare: Arc<Spare>,
}

/// The engine's end: the events of each group in turn.
struct Groups {
    rx: mpsc::Receiver<Group>,
    current: VecDeque<Result<ChangeEvent>>,
    spare: Arc<Spare>,
}

impl Stream for Groups {
    type Item = Result<ChangeEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(ev) = self.current.pop_front() {
                return Poll::Ready(Some(ev));
            }
            let Some(group) = ready!(self.rx.poll_recv(cx)) else { return Poll::Ready(None) };
            // An empty deque gives back its buffer without moving anything.
            let done = std::mem::replace(&mut self.current, VecDeque::from(group));
            self.spare.give(Vec::from(done));
        }
    }
}

/// A grouped channel: the reader's end, and the engine's end as a [`ChangeStream`].
pub fn channel() -> (Grouped, ChangeStream) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY / GROUP_EVENTS);
    let spare = Arc::new(Spare::default());
    let groups = Groups { rx, current: VecDeque::new(), spare: spare.clone() };
    let grouped = Grouped { tx, group: Mutex::new((Vec::with_capacity(GROUP_EVENTS), 0)), spare };
    (grouped, Box::pin(groups))
}

impl Grouped {
    /// Adds an event to the group; hands the group over once it is full.
    pub async fn send(&self, ev: ChangeEvent) -> Result<()> {
        let full = {
            let mut guard = self.group.lock().unwrap_or_else(|p| p.into_inner());
            let (group, rows) = &mut *guard;
            *rows += usize::from(ev.op.is_row());
            group.push(Ok(ev));
            (*rows >= GROUP_EVENTS || group.len() >= GROUP_MAX_EVENTS).then(|| {
                *rows = 0;
                std::mem::replace(group, self.spare.take())
            })
        };
        match full {
            Some(group) => self.tx.send(group).await.map_err(|_| closed()),
            None => Ok(()),
        }
    }

    /// Hands over the events grouped so far.
    pub async fn flush(&self) -> Result<()> {
        let group = {
            let mut guard = self.group.lock().unwrap_or_else(|p| p.into_inner());
            let (group, rows) = &mut *guard;
            if group.is_empty() {
                return Ok(());
            }
            *rows = 0;
            std::mem::replace(group, self.spare.take())
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

    /// A row event, numbered by its read time.
    fn row(n: i64) -> ChangeEvent {
        ChangeEvent { op: Op::Insert, after: Some(Vec::new()), ..heartbeat(n) }
    }

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
    async fn emptied_groups_go_back_to_the_reader() {
        let (tx, mut stream) = channel();
        let spare = |tx: &Grouped| tx.spare.0.lock().unwrap().len();
        for i in 0..3 * GROUP_EVENTS as i64 {
            tx.send(row(i)).await.unwrap();
        }
        assert_eq!(spare(&tx), 0);
        for i in 0..2 * GROUP_EVENTS as i64 + 1 {
            assert_eq!(stream.next().await.unwrap().unwrap().source.read_ts_ms, Some(i));
        }
        assert_eq!(spare(&tx), 2, "the first two groups were emptied and given back");
        for i in 0..GROUP_EVENTS as i64 {
            tx.send(row(i)).await.unwrap();
        }
        assert_eq!(spare(&tx), 1, "the reader's next group came from them");
        for _ in 0..10 * GROUP_EVENTS as i64 {
            tx.send(row(0)).await.unwrap();
            if stream.next().now_or_never().is_none() {
                tx.flush().await.unwrap();
            }
        }
        assert!(spare(&tx) <= SPARE_GROUPS);
    }

    #[tokio::test]
    async fn events_arrive_in_order_once_flushed_or_grouped() {
        let (tx, mut stream) = channel();
        let n = GROUP_EVENTS as i64 + 3;
        for i in 0..n {
            tx.send(row(i)).await.unwrap();
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
        tx.send(row(n)).await.unwrap();
        tx.fail(Error::internal("lost")).await;
        assert_eq!(stream.next().await.unwrap().unwrap().source.read_ts_ms, Some(n));
        assert!(stream.next().await.unwrap().is_err(), "the error comes after the events before it");
        drop(stream);
        assert!(tx.is_closed());
        assert!(tx.send(row(0)).await.is_ok(), "a partial group is only kept");
        assert!(tx.flush().await.is_err());
    }

    #[tokio::test]
    async fn a_group_holds_its_rows_with_the_commits_between_them() {
        let (tx, mut stream) = channel();
        let mut ready = || {
            let mut n = 0;
            while let Some(Some(ev)) = stream.next().now_or_never() {
                ev.unwrap();
                n += 1;
            }
            n
        };
        // One-row transactions: a row and a commit (here a heartbeat, also without a row) each. The group
        // goes once it holds GROUP_EVENTS rows; the commit after the last row waits for the next group.
        for i in 0..GROUP_EVENTS as i64 {
            tx.send(row(i)).await.unwrap();
            tx.send(heartbeat(i)).await.unwrap();
        }
        assert_eq!(ready(), 2 * GROUP_EVENTS - 1);
        tx.flush().await.unwrap();
        assert_eq!(ready(), 1);
        // Events without rows alone still move in groups, of GROUP_MAX_EVENTS.
        for i in 0..GROUP_MAX_EVENTS as i64 + 1 {
            tx.send(heartbeat(i)).await.unwrap();
        }
        assert_eq!(ready(), GROUP_MAX_EVENTS);
    }
}

//! The input side of a subtask: several channels merged into one ordered
//! stream of events.
//!
//! Owns the two rules operators must not reimplement: the watermark is the
//! minimum over inputs that are neither idle nor ended, and a barrier is
//! delivered once it has arrived on every input (aligned checkpoints: an
//! input that delivered the barrier is not read again until the others
//! have).

use std::future::poll_fn;
use std::task::Poll;

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc::Receiver;

use crate::message::{Barrier, Message, Millis, Watermark, NO_WATERMARK};

/// What the merged inputs deliver to the subtask.
#[derive(Debug)]
pub(crate) enum InputEvent {
    /// Rows from input `side` of the node (its edge's position).
    Batch(usize, RecordBatch),
    /// The merged watermark changed.
    Watermark(Watermark),
    /// A barrier arrived on every input.
    Barrier(Barrier),
    Marker(crate::message::LatencyMarker),
    /// Every input ended.
    End,
}

#[derive(Debug, Clone, Copy)]
struct InputState {
    watermark: Millis,
    idle: bool,
    ended: bool,
    blocked: bool,
}

pub(crate) struct Inputs {
    receivers: Vec<Receiver<Message>>,
    /// The input side each receiver belongs to.
    sides: Vec<usize>,
    states: Vec<InputState>,
    next: usize,
    merged: Option<Watermark>,
    last_time: Option<Millis>,
    barrier: Option<Barrier>,
    /// When the first input delivered the pending barrier.
    barrier_since: Option<std::time::Instant>,
    /// How long the last alignment took, in ms.
    pub(crate) last_alignment_ms: u64,
    ended: bool,
}

impl Inputs {
    /// Inputs that are all one side.
    #[cfg(test)]
    pub(crate) fn new(receivers: Vec<Receiver<Message>>) -> Self {
        let sides = vec![0; receivers.len()];
        Self::with_sides(receivers, sides)
    }

    /// Receiver `i` brings the rows of input `sides[i]`.
    pub(crate) fn with_sides(receivers: Vec<Receiver<Message>>, sides: Vec<usize>) -> Self {
        let states = vec![
            InputState {
                watermark: NO_WATERMARK,
                idle: false,
                ended: false,
                blocked: false,
            };
            receivers.len()
        ];
        Inputs {
            receivers,
            sides,
            states,
            next: 0,
            merged: None,
            last_time: None,
            barrier: None,
            barrier_since: None,
            last_alignment_ms: 0,
            ended: false,
        }
    }

    /// The next event, or `None` after [`InputEvent::End`] was delivered.
    /// Cancel-safe: no message is lost if the future is dropped.
    pub(crate) async fn next(&mut self) -> Option<InputEvent> {
        loop {
            if self.ended {
                return None;
            }
            let (index, message) = match self.recv().await {
                Some(m) => m,
                None => {
                    self.ended = true;
                    return Some(InputEvent::End);
                }
            };
            if let Some(event) = self.handle(index, message) {
                return Some(event);
            }
        }
    }

    /// Receives from the readable inputs, round-robin for fairness.
    /// `None` when every input has ended.
    async fn recv(&mut self) -> Option<(usize, Message)> {
        poll_fn(|cx| {
            let n = self.receivers.len();
            let mut open = false;
            for k in 0..n {
                let i = (self.next + k) % n;
                let state = self.states[i];
                if state.ended {
                    continue;
                }
                open = true;
                if state.blocked {
                    continue;
                }
                match self.receivers[i].poll_recv(cx) {
                    Poll::Ready(Some(message)) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Some((i, message)));
                    }
                    // The sender went away without End: its task failed,
                    // and the job's supervisor reports that error.
                    Poll::Ready(None) => return Poll::Ready(Some((i, Message::End))),
                    Poll::Pending => {}
                }
            }
            if open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }

    fn handle(&mut self, index: usize, message: Message) -> Option<InputEvent> {
        match message {
            Message::Batch(batch) => Some(InputEvent::Batch(
                self.sides.get(index).copied().unwrap_or(0),
                batch,
            )),
            Message::Marker(marker) => Some(InputEvent::Marker(marker)),
            Message::Watermark(Watermark::EventTime(t)) => {
                let state = &mut self.states[index];
                state.watermark = state.watermark.max(t);
                state.idle = false;
                self.merge_watermark()
            }
            Message::Watermark(Watermark::Idle) => {
                self.states[index].idle = true;
                self.merge_watermark()
            }
            Message::Barrier(barrier) => {
                self.states[index].blocked = true;
                self.barrier = Some(barrier);
                self.barrier_since
                    .get_or_insert_with(std::time::Instant::now);
                self.check_aligned()
            }
            Message::End => {
                let state = &mut self.states[index];
                state.ended = true;
                state.blocked = false;
                if self.states.iter().all(|s| s.ended) {
                    // recv() reports End next.
                    return None;
                }
                self.check_aligned().or_else(|| self.merge_watermark())
            }
        }
    }

    fn check_aligned(&mut self) -> Option<InputEvent> {
        let barrier = self.barrier?;
        if self.states.iter().all(|s| s.ended || s.blocked) {
            for state in &mut self.states {
                state.blocked = false;
            }
            self.barrier = None;
            self.last_alignment_ms = self
                .barrier_since
                .take()
                .map_or(0, |t| t.elapsed().as_millis() as u64);
            return Some(InputEvent::Barrier(barrier));
        }
        None
    }

    fn merge_watermark(&mut self) -> Option<InputEvent> {
        let live: Vec<&InputState> = self.states.iter().filter(|s| !s.ended).collect();
        if live.is_empty() {
            return None;
        }
        let active = live.iter().filter(|s| !s.idle).map(|s| s.watermark).min();
        let merged = match active {
            None => Watermark::Idle,
            Some(NO_WATERMARK) => return None,
            // Never move backwards: an input rejoining from idle with an
            // older watermark does not un-fire windows.
            Some(t) => Watermark::EventTime(self.last_time.map_or(t, |prev| prev.max(t))),
        };
        if self.merged == Some(merged) {
            return None;
        }
        if let Watermark::EventTime(t) = merged {
            self.last_time = Some(t);
        }
        self.merged = Some(merged);
        Some(InputEvent::Watermark(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::channel;

    fn wm(t: Millis) -> Message {
        Message::Watermark(Watermark::EventTime(t))
    }

    #[tokio::test]
    async fn watermark_is_min_over_active_inputs() {
        let (a_tx, a_rx) = channel(8);
        let (b_tx, b_rx) = channel(8);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        a_tx.send(wm(10)).await.unwrap();
        b_tx.send(wm(5)).await.unwrap();
        a_tx.send(wm(20)).await.unwrap();
        b_tx.send(wm(30)).await.unwrap();
        let mut seen = vec![];
        for _ in 0..2 {
            if let Some(InputEvent::Watermark(Watermark::EventTime(t))) = inputs.next().await {
                seen.push(t);
            }
        }
        assert_eq!(seen, vec![5, 20]);
    }

    #[tokio::test]
    async fn idle_input_does_not_hold_back_and_all_idle_is_idle() {
        let (a_tx, a_rx) = channel(8);
        let (b_tx, b_rx) = channel(8);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        b_tx.send(Message::Watermark(Watermark::Idle))
            .await
            .unwrap();
        a_tx.send(wm(100)).await.unwrap();
        // b idle: a alone decides.
        match inputs.next().await {
            Some(InputEvent::Watermark(Watermark::EventTime(100))) => {}
            other => panic!("unexpected {other:?}"),
        }
        a_tx.send(Message::Watermark(Watermark::Idle))
            .await
            .unwrap();
        match inputs.next().await {
            Some(InputEvent::Watermark(Watermark::Idle)) => {}
            other => panic!("unexpected {other:?}"),
        }
        // b comes back with an older time: active again, but no regression.
        b_tx.send(wm(50)).await.unwrap();
        b_tx.send(wm(150)).await.unwrap();
        let mut seen = vec![];
        for _ in 0..2 {
            match inputs.next().await {
                Some(InputEvent::Watermark(Watermark::EventTime(t))) => seen.push(t),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, vec![100, 150]);
    }

    #[tokio::test]
    async fn barrier_aligns_and_blocks_the_early_input() {
        let (a_tx, a_rx) = channel(8);
        let (b_tx, b_rx) = channel(8);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        let barrier = Barrier {
            checkpoint_id: 1,
            injected_at: 0,
        };
        let batch = |n: i64| {
            use datafusion::arrow::array::Int64Array;
            use std::sync::Arc;
            RecordBatch::try_from_iter(vec![("x", Arc::new(Int64Array::from(vec![n])) as _)])
                .unwrap()
        };
        // a: barrier then a post-barrier row; b: a pre-barrier row then the barrier.
        a_tx.send(Message::Barrier(barrier)).await.unwrap();
        a_tx.send(Message::Batch(batch(2))).await.unwrap();
        b_tx.send(Message::Batch(batch(1))).await.unwrap();
        b_tx.send(Message::Barrier(barrier)).await.unwrap();
        let mut order = vec![];
        for _ in 0..3 {
            match inputs.next().await.unwrap() {
                InputEvent::Batch(_, b) => {
                    let v = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .unwrap()
                        .value(0);
                    order.push(format!("row{v}"));
                }
                InputEvent::Barrier(b) => order.push(format!("barrier{}", b.checkpoint_id)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(order, vec!["row1", "barrier1", "row2"]);
    }

    #[tokio::test]
    async fn ended_input_counts_as_aligned_and_end_comes_last() {
        let (a_tx, a_rx) = channel(8);
        let (b_tx, b_rx) = channel(8);
        let mut inputs = Inputs::new(vec![a_rx, b_rx]);
        let barrier = Barrier {
            checkpoint_id: 7,
            injected_at: 0,
        };
        a_tx.send(Message::Barrier(barrier)).await.unwrap();
        b_tx.send(Message::End).await.unwrap();
        match inputs.next().await.unwrap() {
            InputEvent::Barrier(b) => assert_eq!(b.checkpoint_id, 7),
            other => panic!("unexpected {other:?}"),
        }
        a_tx.send(Message::End).await.unwrap();
        assert!(matches!(inputs.next().await, Some(InputEvent::End)));
        assert!(inputs.next().await.is_none());
    }
}

//! The planned batches not yet handed out. A worker asks for more before it
//! runs out; it gets a share sized so that fast tests never wait on a round
//! trip and the end of the run stays balanced. Batches are never split and
//! keep their order; a lost worker's tests go back to the front.

use std::collections::VecDeque;

/// Most tests a worker is handed at once.
const SHARE_MAX: usize = 64;

/// The planned batches not yet handed out, and how many tests they hold.
pub struct Queue {
    batches: VecDeque<Vec<String>>,
    tests: usize,
}

impl Queue {
    pub fn new(batches: VecDeque<Vec<String>>) -> Queue {
        let tests = batches.iter().map(Vec::len).sum();
        Queue { batches, tests }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn push_front(&mut self, batch: Vec<String>) {
        self.tests += batch.len();
        self.batches.push_front(batch);
    }

    pub fn drain(&mut self) -> impl Iterator<Item = String> + '_ {
        self.tests = 0;
        self.batches.drain(..).flatten()
    }

    /// Whole batches for a worker holding `held` tests: enough that it
    /// does not wait on runner between fast tests, few enough to keep the
    /// end of the run balanced: a quarter of the queue's share per worker,
    /// at least one batch, at most SHARE_MAX tests (unless one batch is
    /// bigger). Batches keep their order, so concatenating them is safe.
    pub fn take_share(&mut self, held: usize, workers: usize) -> Vec<String> {
        let target = (self.tests / (4 * workers.max(1))).clamp(2, SHARE_MAX);
        let mut ids = Vec::new();
        while let Some(batch) = self.batches.front() {
            if !ids.is_empty() && held + ids.len() + batch.len() > target {
                break;
            }
            let batch = self.batches.pop_front().expect("front exists");
            self.tests -= batch.len();
            ids.extend(batch);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(tests: usize) -> Queue {
        Queue::new((0..tests).map(|i| vec![format!("t{i}")]).collect())
    }

    #[test]
    fn shares_shrink_as_the_queue_empties() {
        let mut q = queue(1000);
        assert_eq!(
            q.take_share(0, 2).len(),
            SHARE_MAX,
            "capped while the queue is long"
        );
        let mut q2 = queue(40);
        assert_eq!(
            q2.take_share(0, 2).len(),
            5,
            "a quarter of each worker's share"
        );
        let mut q3 = queue(3);
        assert_eq!(q3.take_share(0, 2).len(), 2, "never less than two at hand");
        assert_eq!(
            q3.take_share(5, 2).len(),
            1,
            "at least one batch when asked"
        );
        assert!(q3.is_empty());
        assert_eq!(q.tests, 1000 - SHARE_MAX);
    }

    #[test]
    fn batches_are_never_split_and_keep_their_order() {
        let mut q = Queue::new(VecDeque::from([
            vec!["a".into(), "b".into(), "c".into()],
            vec!["d".into()],
        ]));
        assert_eq!(
            q.take_share(0, 4),
            ["a", "b", "c"],
            "a batch bigger than the share goes whole"
        );
        q.push_front(vec!["x".into()]);
        assert_eq!(q.take_share(0, 4), ["x", "d"]);
        assert_eq!(q.tests, 0);
    }
}

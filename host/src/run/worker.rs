//! What the run knows of one worker: its process, its connections, the
//! tests it holds, the one it runs, and how it ended.

use std::collections::VecDeque;

use crate::clock::RunInstant;
use crate::connections::ConnId;
use crate::events::LostCause;

use super::supervise::Running;

/// Bytes of evidence (faulthandler output) kept per worker.
pub const EVIDENCE_LIMIT: usize = 1024 * 1024;

/// How a worker process ended, as the zygote reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

#[derive(Default)]
pub struct Worker {
    /// When the zygote was asked to fork it.
    pub asked_at: RunInstant,
    pub pid: Option<i32>,
    /// Its command connection.
    pub conn: Option<ConnId>,
    /// Tests handed to it and not yet reported, in order.
    pub assigned: VecDeque<String>,
    pub running: Option<Running>,
    /// What faulthandler wrote on its evidence connection.
    pub evidence: Vec<u8>,
    pub evidence_open: bool,
    pub exit: Option<ExitStatus>,
    /// When its command connection closed (or the zygote reported its exit).
    pub lost_at: Option<RunInstant>,
    /// Told to shut down: leaving now is expected.
    pub released: bool,
    /// Its test timed out and it is being stopped: whatever it still sends
    /// is void (the dump signal itself can make a blocked test return).
    pub condemned: bool,
}

impl Worker {
    pub fn asked(at: RunInstant) -> Worker {
        Worker {
            asked_at: at,
            ..Worker::default()
        }
    }

    pub fn keep_evidence(&mut self, bytes: &[u8]) {
        let room = EVIDENCE_LIMIT.saturating_sub(self.evidence.len());
        self.evidence
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// How it was lost, from its exit status and whether runner stopped it.
    pub fn loss(&self, zygote_alive: bool) -> LostCause {
        if let Some(running) = self.running.as_ref().filter(|r| r.stopped_by_runner()) {
            return LostCause::Hung {
                limit_secs: running.limit().as_secs_f64(),
                global: running.global,
                signal: match self.exit {
                    Some(ExitStatus::Signal(signal)) => Some(signal),
                    _ => None,
                },
            };
        }
        match self.exit {
            Some(ExitStatus::Signal(signal)) => LostCause::Signal { signal },
            Some(ExitStatus::Code(code)) => LostCause::Exited { code },
            None if !zygote_alive => LostCause::ZygoteDied,
            None => LostCause::Disappeared,
        }
    }

    pub fn exited_cleanly(&self) -> bool {
        self.exit == Some(ExitStatus::Code(0))
    }
}

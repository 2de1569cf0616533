//! SIGINT (Ctrl-C), SIGTERM and a closed output, which stop a run at any
//! phase.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
        })
    }

    /// Waits for either, or for the reader of runner's output to go away
    /// (`runner | head`), which stops a run the same way; returns how pytest
    /// would name it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "KeyboardInterrupt",
            _ = self.terminate.recv() => "SIGTERM",
            _ = crate::stdio::closed() => "the output was closed",
        }
    }
}

//! The host's unix socket: accepts the zygote's and the workers'
//! connections and turns what they send into events for the run loop.
//! Readers only decode and forward; all state lives in the run loop.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use std::collections::HashMap;

use crate::wire::{self, Inbound, Outbound, Role, WireError};

pub type ConnId = u64;

/// Bytes read at once from a raw connection: faulthandler dumps are a few
/// KiB; a test's output can be anything.
const RAW_CHUNK: usize = 64 * 1024;

pub enum ConnEvent {
    Opened(ConnId, OwnedWriteHalf),
    Message(ConnId, Inbound),
    /// Raw bytes on a worker's evidence connection (faulthandler output).
    Evidence(ConnId, Vec<u8>),
    /// Raw bytes on an output connection (what a worker or a test wrote
    /// to its stdout or stderr).
    Output(ConnId, Vec<u8>),
    Closed(ConnId),
    Broken(ConnId, WireError),
}

/// The connections of a session: the events of every peer, in one channel,
/// and the write half of each, to send commands.
pub struct Peers {
    pub events: mpsc::UnboundedReceiver<ConnEvent>,
    writers: HashMap<ConnId, OwnedWriteHalf>,
    /// The zygote's connection, once it has sent its collection.
    pub zygote_conn: ConnId,
    zygote: Option<ZygoteLink>,
}

/// The way to the zygote: frames queued in order and written by a task of
/// their own, so that a sink can send without waiting (the zygote replays
/// every result into pytest's hooks).
#[derive(Clone)]
pub struct ZygoteLink(mpsc::UnboundedSender<Vec<u8>>);

impl ZygoteLink {
    /// Queues one message; false if the zygote's connection is gone.
    pub fn send(&self, message: &Outbound<'_>) -> bool {
        match wire::encode_frame(message) {
            Ok(frame) => self.0.send(frame).is_ok(),
            Err(_) => false,
        }
    }
}

impl Peers {
    pub fn new(events: mpsc::UnboundedReceiver<ConnEvent>) -> Peers {
        Peers {
            events,
            writers: HashMap::new(),
            zygote_conn: ConnId::MAX,
            zygote: None,
        }
    }

    /// `conn` is the zygote's: from now on its frames go through a
    /// [`ZygoteLink`].
    pub fn set_zygote(&mut self, conn: ConnId) {
        self.zygote_conn = conn;
        let Some(mut writer) = self.writers.remove(&conn) else {
            return;
        };
        let (frames, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(frame) = queued.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        self.zygote = Some(ZygoteLink(frames));
    }

    pub fn zygote_link(&self) -> Option<ZygoteLink> {
        self.zygote.clone()
    }

    pub fn opened(&mut self, conn: ConnId, writer: OwnedWriteHalf) {
        self.writers.insert(conn, writer);
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.writers.remove(&conn);
    }

    /// Sends one command; false if the peer is gone.
    pub async fn send(&mut self, conn: ConnId, message: &Outbound<'_>) -> bool {
        if conn == self.zygote_conn {
            return self.zygote.as_ref().is_some_and(|link| link.send(message));
        }
        match self.writers.get_mut(&conn) {
            Some(writer) => wire::write_frame(writer, message).await.is_ok(),
            None => false,
        }
    }

    /// Sends one command to the zygote; false if it is gone.
    pub async fn to_zygote(&mut self, message: &Outbound<'_>) -> bool {
        self.send(self.zygote_conn, message).await
    }
}

pub async fn accept_connections(listener: UnixListener, events: mpsc::UnboundedSender<ConnEvent>) {
    let mut next: ConnId = 0;
    while let Ok((stream, _)) = listener.accept().await {
        let conn = next;
        next += 1;
        let (reader, writer) = stream.into_split();
        if events.send(ConnEvent::Opened(conn, writer)).is_err() {
            return;
        }
        tokio::spawn(read_connection(conn, reader, events.clone()));
    }
}

async fn read_connection(
    conn: ConnId,
    reader: tokio::net::unix::OwnedReadHalf,
    events: mpsc::UnboundedSender<ConnEvent>,
) {
    let mut reader = tokio::io::BufReader::new(reader);
    let raw = loop {
        let event = match wire::read_frame(&mut reader).await {
            Ok(Some(message)) => {
                let raw = match message {
                    Inbound::Hello {
                        role: Role::Evidence,
                        ..
                    } => Some(ConnEvent::Evidence as fn(ConnId, Vec<u8>) -> ConnEvent),
                    Inbound::Hello {
                        role: Role::Output, ..
                    } => Some(ConnEvent::Output as fn(ConnId, Vec<u8>) -> ConnEvent),
                    _ => None,
                };
                if events.send(ConnEvent::Message(conn, message)).is_err() {
                    return;
                }
                match raw {
                    Some(raw) => break raw,
                    None => continue,
                }
            }
            Ok(None) => ConnEvent::Closed(conn),
            Err(error) => ConnEvent::Broken(conn, error),
        };
        let _ = events.send(event);
        return;
    };
    // After its hello, an evidence connection carries plain text that
    // faulthandler writes from a signal handler, and an output connection
    // whatever is written to a stdout or stderr: no frames.
    let mut chunk = vec![0u8; RAW_CHUNK];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if events.send(raw(conn, chunk[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = events.send(ConnEvent::Closed(conn));
}

//! # Replication transport
//!
//! A PostgreSQL replication session spoken directly on the frontend/backend protocol, with
//! `postgres-protocol` for message framing and authentication. tokio-postgres has no replication mode,
//! and owning the transport lets the stream ask for what the server can do: `pgoutput` protocol version
//! 2 with the streaming of large in-progress transactions on PostgreSQL 14 and later, version 1 before.
//!
//! [`Session::connect`] opens a TCP (or, for a host that is a directory, unix-socket) connection with
//! `replication=database`, application name `idaas` and the session settings the text decoders need
//! ([`REPLICATION_OPTIONS`]), and authenticates with SCRAM-SHA-256, MD5 or a clear-text password (no
//! TLS, like the rest of the PostgreSQL connector). The session runs replication commands
//! ([`Session::simple_query`]) until [`Session::start_replication`] turns it into a
//! [`ReplicationStream`]:
//!
//! - the read side belongs to the caller, who takes the server's `XLogData` and keepalive messages
//!   ([`Event`]) out of a large read buffer ([`READ_BUFFER`]) without copying them: each event's data is a
//!   slice of the buffer;
//! - a small task owns the write side and sends a standby status update every second, and at once when
//!   a keepalive asks for a reply. Its write, flush and apply positions are all the highest LSN the source
//!   was told is durably checkpointed (never below the start position, which is), so the slot is
//!   confirmed no further. It keeps running while the caller is slowed down by its consumer, so a
//!   slow target never makes the server time the session out (`wal_sender_timeout`).
//!
//! Dropping the stream ends the copy (`CopyDone`) and the session.
//!
//! The initial load reads binary chunks on an ordinary session of the same transport
//! ([`Session::connect_plain`], [`Session::copy_out`]): the rows of a `COPY ... TO STDOUT` are taken out of
//! the read buffer one `CopyData` message at a time, without allocating a message per row.
//!
//! # Errors
//! [`WireError`] keeps what went wrong: the connection (I/O), authentication, a server error with its
//! SQLSTATE, or a protocol violation. `replication::wire_error` turns it into an
//! [`idaas_core::Error`] that names the connection; no error here holds the password.

use super::Pg;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use secrecy::ExposeSecret;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Session settings of the replication session: the text formats [`super::types`] reads.
pub const REPLICATION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC \
                                       -c extra_float_digits=3 -c bytea_output=hex";
/// Size of the read buffer: many replication messages per read from the socket.
pub const READ_BUFFER: usize = 256 * 1024;
/// A read is made with at least this much free room in the buffer.
const MIN_READ: usize = 32 * 1024;
/// Time between two standby status updates.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first server version (`server_version_num`) with `pgoutput` protocol version 2 (streaming).
pub const STREAMING_SERVER_VERSION: u32 = 140_000;
/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// What went wrong on a replication session.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The server could not be reached, or the connection was lost.
    #[error("the connection to the server failed")]
    Io(#[from] io::Error),
    /// Authentication could not be completed on our side (an unsupported method, a bad server proof).
    #[error("{0}")]
    Auth(String),
    /// The server answered with an error.
    #[error("{0}")]
    Server(ServerError),
    /// The server ended the replication stream.
    #[error("the server ended the replication stream")]
    Ended,
    /// The server sent something this client does not understand.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl WireError {
    /// The server error's SQLSTATE, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            WireError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// An error the server sent (`ErrorResponse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLSTATE {code})")]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The detail, if any.
    pub detail: Option<String>,
}

impl ServerError {
    fn parse(body: &backend::ErrorResponseBody) -> Result<ServerError, WireError> {
        let mut e = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        let mut fields = body.fields();
        while let Some(f) = fields.next().map_err(|_| protocol("malformed ErrorResponse"))? {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => e.severity = value,
                b'S' if e.severity.is_empty() => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                _ => {}
            }
        }
        Ok(e)
    }
}

fn protocol(what: impl Into<String>) -> WireError {
    WireError::Protocol(what.into())
}

/// The error an ErrorResponse carries.
fn server_error(body: &backend::ErrorResponseBody) -> WireError {
    match ServerError::parse(body) {
        Ok(e) => WireError::Server(e),
        Err(e) => e,
    }
}

/// A message postgres-protocol could not parse.
fn malformed(e: io::Error) -> WireError {
    WireError::Protocol(format!("malformed message: {e}"))
}

/// One row of a simple query's answer: each column's text, `None` for NULL.
pub type Row = Vec<Option<Bytes>>;

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A backend message, or the `CopyBothResponse` that postgres-protocol does not parse.
enum Frame {
    CopyBoth,
    Message(backend::Message),
}

/// The read side of a connection: the socket and its buffer.
struct Reader {
    read: ReadHalf,
    buf: BytesMut,
}

impl Reader {
    /// Reads more bytes into the buffer (cancel-safe: nothing is lost when the future is dropped).
    async fn fill(&mut self) -> Result<(), WireError> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_BUFFER);
        }
        if self.read.read_buf(&mut self.buf).await? == 0 {
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection").into()
            );
        }
        Ok(())
    }

    /// The next whole message in the buffer, without I/O.
    fn frame(&mut self) -> Result<Option<Frame>, WireError> {
        let Some(header) = backend::Header::parse(&self.buf).map_err(malformed)? else { return Ok(None) };
        let total = header.len() as usize + 1;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        if header.tag() == b'W' {
            self.buf.advance(total);
            return Ok(Some(Frame::CopyBoth));
        }
        Ok(backend::Message::parse(&mut self.buf).map_err(malformed)?.map(Frame::Message))
    }

    async fn recv(&mut self) -> Result<Frame, WireError> {
        loop {
            if let Some(frame) = self.frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }
}

async fn write_all(write: &mut WriteHalf, out: &mut BytesMut) -> Result<(), WireError> {
    write.write_all(out).await?;
    write.flush().await?;
    out.clear();
    Ok(())
}

/// An authenticated replication session that has not started streaming.
pub struct Session {
    reader: Reader,
    write: WriteHalf,
    out: BytesMut,
}

impl Session {
    /// Connects to the server of `pg` and authenticates a `replication=database` session.
    pub async fn connect(pg: &Pg) -> Result<Session, WireError> {
        Session::connect_as(pg, None).await
    }

    /// Connects to the server of `pg` and authenticates an ordinary session (no replication) that
    /// `pg_stat_activity` shows as `application_name`, for [`Session::copy_out`].
    pub async fn connect_plain(pg: &Pg, application_name: &str) -> Result<Session, WireError> {
        Session::connect_as(pg, Some(application_name)).await
    }

    /// A replication session without `plain`, else an ordinary one named `plain`.
    async fn connect_as(pg: &Pg, plain: Option<&str>) -> Result<Session, WireError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Session::open(pg, plain)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )
            .into()),
        }
    }

    async fn open(pg: &Pg, plain: Option<&str>) -> Result<Session, WireError> {
        let cfg = pg.config();
        let (read, write): (ReadHalf, WriteHalf) = if cfg.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", cfg.host.trim_end_matches('/'), cfg.port);
            let (r, w) = tokio::net::UnixStream::connect(path).await?.into_split();
            (Box::new(r), Box::new(w))
        } else {
            let tcp = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
            tcp.set_nodelay(true)?;
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        };
        let mut s = Session {
            reader: Reader { read, buf: BytesMut::with_capacity(READ_BUFFER) },
            write,
            out: BytesMut::with_capacity(1024),
        };
        let mut params = vec![
            ("user", cfg.user.as_str()),
            ("database", pg.database()),
            ("application_name", plain.unwrap_or("idaas")),
            ("client_encoding", "UTF8"),
            ("options", REPLICATION_OPTIONS),
        ];
        if plain.is_none() {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params, &mut s.out)?;
        s.send().await?;
        s.authenticate(cfg.user.as_bytes(), cfg.password.expose_secret().as_bytes()).await?;
        Ok(s)
    }

    async fn send(&mut self) -> Result<(), WireError> {
        write_all(&mut self.write, &mut self.out).await
    }

    async fn authenticate(&mut self, user: &[u8], password: &[u8]) -> Result<(), WireError> {
        use backend::Message as M;
        loop {
            let Frame::Message(msg) = self.reader.recv().await? else {
                return Err(protocol("CopyBothResponse during authentication"));
            };
            match msg {
                M::AuthenticationOk | M::ParameterStatus(_) | M::BackendKeyData(_) | M::NoticeResponse(_) => {
                }
                M::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.out)?;
                    self.send().await?;
                }
                M::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user, password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)?;
                    self.send().await?;
                }
                M::AuthenticationSasl(body) => self.scram(&body, password).await?,
                M::ReadyForQuery(_) => return Ok(()),
                M::ErrorResponse(body) => return Err(server_error(&body)),
                M::AuthenticationKerberosV5
                | M::AuthenticationGss
                | M::AuthenticationGssContinue(_)
                | M::AuthenticationSspi
                | M::AuthenticationScmCredential => {
                    return Err(WireError::Auth(
                        "the server asks for Kerberos, GSSAPI or SSPI authentication, which is not supported; \
                         use scram-sha-256, md5 or password in pg_hba.conf"
                            .into(),
                    ));
                }
                _ => return Err(protocol("unexpected message during authentication")),
            }
        }
    }

    async fn scram(
        &mut self,
        offer: &backend::AuthenticationSaslBody,
        password: &[u8],
    ) -> Result<(), WireError> {
        let mut mechanisms = offer.mechanisms();
        let mut found = false;
        while let Some(m) = mechanisms.next().map_err(malformed)? {
            found |= m == sasl::SCRAM_SHA_256;
        }
        if !found {
            return Err(WireError::Auth(
                "the server offers no SASL mechanism this client speaks (SCRAM-SHA-256 without channel binding)"
                    .into(),
            ));
        }
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.out)?;
        self.send().await?;
        let first = self.sasl_answer(false).await?;
        scram.update(&first).map_err(|e| {
            WireError::Auth(format!("SCRAM-SHA-256: the server's first message is invalid ({e})"))
        })?;
        frontend::sasl_response(scram.message(), &mut self.out)?;
        self.send().await?;
        let last = self.sasl_answer(true).await?;
        scram
            .finish(&last)
            .map_err(|e| WireError::Auth(format!("SCRAM-SHA-256: the server's proof is invalid ({e})")))
    }

    /// The data of the server's next SASL message: AuthenticationSASLFinal when `last`, else
    /// AuthenticationSASLContinue.
    async fn sasl_answer(&mut self, last: bool) -> Result<Vec<u8>, WireError> {
        use backend::Message as M;
        match self.reader.recv().await? {
            Frame::Message(M::AuthenticationSaslContinue(body)) if !last => Ok(body.data().to_vec()),
            Frame::Message(M::AuthenticationSaslFinal(body)) if last => Ok(body.data().to_vec()),
            Frame::Message(M::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(protocol(if last {
                "expected AuthenticationSASLFinal"
            } else {
                "expected AuthenticationSASLContinue"
            })),
        }
    }

    /// Runs `sql` (a replication command such as `IDENTIFY_SYSTEM`, or `SHOW`) with the simple query
    /// protocol and returns its rows in text form. A server error leaves the session usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, WireError> {
        use backend::Message as M;
        frontend::query(sql, &mut self.out)?;
        self.send().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let Frame::Message(msg) = self.reader.recv().await? else {
                return Err(protocol("unexpected CopyBothResponse"));
            };
            match msg {
                M::DataRow(body) => {
                    let buf = body.buffer_bytes().clone();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next().map_err(malformed)? {
                        row.push(range.map(|r| buf.slice(r)));
                    }
                    rows.push(row);
                }
                M::ErrorResponse(body) => error = Some(ServerError::parse(&body)?),
                M::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(rows),
                    };
                }
                M::CopyOutResponse(_) | M::CopyInResponse(_) => {
                    return Err(protocol("a simple query started a copy"));
                }
                _ => {}
            }
        }
    }

    /// Runs `sql`, a `COPY ... TO STDOUT`, and hands `each` the data of every `CopyData` message as a
    /// slice of the read buffer: no message is copied or allocated on the way. A server error leaves the
    /// session usable.
    pub async fn copy_out(&mut self, sql: &str, mut each: impl FnMut(&[u8])) -> Result<(), WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send().await?;
        let mut error = None;
        loop {
            let buf = &mut self.reader.buf;
            if buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if len < 4 {
                    return Err(protocol("a message shorter than its length field"));
                }
                if buf.len() > len {
                    let tag = buf[0];
                    match tag {
                        b'd' => each(&buf[5..len + 1]),
                        b'E' => {
                            let mut msg = buf.split_to(len + 1);
                            if let Some(backend::Message::ErrorResponse(body)) =
                                backend::Message::parse(&mut msg).map_err(malformed)?
                            {
                                error = Some(server_error(&body));
                            }
                            continue;
                        }
                        b'Z' => {
                            buf.advance(len + 1);
                            return match error {
                                Some(e) => Err(e),
                                None => Ok(()),
                            };
                        }
                        // CopyOutResponse, CopyDone, CommandComplete, notices and parameter changes
                        b'H' | b'c' | b'C' | b'N' | b'S' => {}
                        _ => return Err(protocol("unexpected message during COPY TO STDOUT")),
                    }
                    buf.advance(len + 1);
                    continue;
                }
                buf.reserve(len + 1 - buf.len());
            }
            self.reader.fill().await?;
        }
    }

    /// Ends the session politely (`Terminate`), so the server logs no lost connection.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.out);
        if self.send().await.is_ok() {
            let _ = self.write.shutdown().await;
        }
    }

    /// The server's `server_version_num` (`150004` for 15.4).
    pub async fn server_version_num(&mut self) -> Result<u32, WireError> {
        let rows = self.simple_query("SHOW server_version_num").await?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_ref())
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| protocol("SHOW server_version_num returned no number"))
    }

    /// Starts streaming slot `slot` at `start` for publication `publication`: protocol version 2 with
    /// streaming of in-progress transactions when the server has it, else version 1. Status updates
    /// confirm `max(acked, start)`.
    pub async fn start_replication(
        mut self,
        slot: &str,
        publication: &str,
        start: u64,
        acked: Arc<AtomicU64>,
    ) -> Result<ReplicationStream, WireError> {
        use backend::Message as M;
        let version = self.server_version_num().await?;
        let protocol_version = if version >= STREAMING_SERVER_VERSION { 2 } else { 1 };
        frontend::query(&start_replication_sql(slot, publication, start, protocol_version), &mut self.out)?;
        self.send().await?;
        loop {
            match self.reader.recv().await? {
                Frame::CopyBoth => break,
                Frame::Message(M::ErrorResponse(body)) => {
                    return Err(server_error(&body));
                }
                Frame::Message(M::NoticeResponse(_) | M::ParameterStatus(_)) => {}
                Frame::Message(_) => {
                    return Err(protocol("expected CopyBothResponse after START_REPLICATION"));
                }
            }
        }
        let (replies, requests) = mpsc::channel(4);
        tokio::spawn(feedback(self.write, acked, start, requests));
        Ok(ReplicationStream { reader: self.reader, replies, protocol_version })
    }
}

/// `START_REPLICATION SLOT "slot" LOGICAL X/Y (...)`, with the names quoted. Version 2 asks for the
/// streaming of in-progress transactions and for logical decoding messages; version 1 asks for neither
/// (`pgoutput` before PostgreSQL 14 knows neither option).
pub fn start_replication_sql(slot: &str, publication: &str, start: u64, protocol_version: u32) -> String {
    let names = super::quote_literal(&super::quote_ident(publication));
    let (streaming, messages) =
        if protocol_version >= 2 { (", streaming 'on'", ", messages 'true'") } else { ("", "") };
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{protocol_version}'{streaming}, \
         publication_names {names}{messages})",
        super::quote_ident(slot),
        super::replication::format_lsn(start),
    )
}

/// Sends a standby status update every [`STATUS_INTERVAL`] and on each request; ends the copy and the
/// session once the stream is dropped.
async fn feedback(mut write: WriteHalf, acked: Arc<AtomicU64>, floor: u64, mut requests: mpsc::Receiver<()>) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = BytesMut::with_capacity(64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            request = requests.recv() => {
                if request.is_none() {
                    frontend::copy_done(&mut out);
                    frontend::terminate(&mut out);
                    let _ = write_all(&mut write, &mut out).await;
                    let _ = write.shutdown().await;
                    return;
                }
            }
        }
        let lsn = acked.load(Ordering::Acquire).max(floor);
        status_update(lsn, now_pg_micros(), &mut out);
        if let Err(e) = write_all(&mut write, &mut out).await {
            tracing::debug!(error = %e, "standby status update not sent; the session is ending");
            return;
        }
    }
}

fn now_pg_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_MICROS
}

/// A standby status update ('r') in a CopyData message: written, flushed and applied up to `lsn`.
fn status_update(lsn: u64, now: i64, out: &mut BytesMut) {
    let mut body = [0u8; 34];
    let mut b = &mut body[..];
    b.put_u8(b'r');
    b.put_u64(lsn);
    b.put_u64(lsn);
    b.put_u64(lsn);
    b.put_i64(now);
    b.put_u8(0);
    out.put_u8(b'd');
    out.put_i32(4 + body.len() as i32);
    out.put_slice(&body);
}

/// A message of a running replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// WAL data: one `pgoutput` message.
    XLogData {
        /// Where the data starts in the WAL (0 for most logical messages).
        wal_start: u64,
        /// The server's WAL end when it sent this.
        wal_end: u64,
        /// The `pgoutput` message (a slice of the read buffer).
        data: Bytes,
    },
    /// The server's keepalive: everything before `wal_end` that concerns the slot has been sent, except
    /// for the transaction being sent right now, if any.
    KeepAlive {
        /// The server's position.
        wal_end: u64,
        /// The server asked for a status update (already sent).
        reply_requested: bool,
    },
}

/// A running replication stream (`CopyBoth`). Dropping it ends the session.
pub struct ReplicationStream {
    reader: Reader,
    replies: mpsc::Sender<()>,
    protocol_version: u32,
}

impl ReplicationStream {
    /// The `pgoutput` protocol version the stream was started with (2 streams in-progress transactions).
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// The next event already in the read buffer, without I/O; `None` when more bytes are needed
    /// ([`fill`](Self::fill)).
    pub fn buffered(&mut self) -> Result<Option<Event>, WireError> {
        use backend::Message as M;
        loop {
            let Some(frame) = self.reader.frame()? else { return Ok(None) };
            let msg = match frame {
                Frame::Message(M::CopyData(body)) => body.into_bytes(),
                Frame::Message(M::ErrorResponse(body)) => {
                    return Err(server_error(&body));
                }
                Frame::Message(M::CopyDone | M::CommandComplete(_) | M::ReadyForQuery(_)) => {
                    return Err(WireError::Ended);
                }
                Frame::Message(M::NoticeResponse(_) | M::ParameterStatus(_)) => continue,
                _ => return Err(protocol("unexpected message in the replication stream")),
            };
            return match msg.first() {
                Some(b'w') if msg.len() >= 25 => Ok(Some(Event::XLogData {
                    wal_start: u64::from_be_bytes(array(&msg[1..9])),
                    wal_end: u64::from_be_bytes(array(&msg[9..17])),
                    data: msg.slice(25..),
                })),
                Some(b'k') if msg.len() >= 18 => {
                    let reply_requested = msg[17] == 1;
                    if reply_requested {
                        // Full: a reply is already due.
                        let _ = self.replies.try_send(());
                    }
                    Ok(Some(Event::KeepAlive {
                        wal_end: u64::from_be_bytes(array(&msg[1..9])),
                        reply_requested,
                    }))
                }
                _ => Err(protocol(format!(
                    "unknown or short replication message (type {:?}, {} bytes)",
                    msg.first().map(|b| *b as char),
                    msg.len()
                ))),
            };
        }
    }

    /// Reads more from the server. Cancel-safe: use it in `select!`.
    pub async fn fill(&mut self) -> Result<(), WireError> {
        self.reader.fill().await
    }

    /// The next event, reading from the server as needed.
    pub async fn next(&mut self) -> Result<Event, WireError> {
        loop {
            if let Some(ev) = self.buffered()? {
                return Ok(ev);
            }
            self.fill().await?;
        }
    }
}

fn array(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_replication_quotes_names_and_picks_the_protocol() {
        assert_eq!(
            start_replication_sql("idaas_p", "idaas_p", 0x16_B374_D848, 2),
            "START_REPLICATION SLOT \"idaas_p\" LOGICAL 16/B374D848 (proto_version '2', streaming 'on', \
             publication_names '\"idaas_p\"', messages 'true')"
        );
        assert_eq!(
            start_replication_sql("s", "it's \"q\"", 0, 1),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '1', publication_names \
             '\"it''s \"\"q\"\"\"')"
        );
    }

    #[test]
    fn a_status_update_confirms_one_position() {
        let mut out = BytesMut::new();
        status_update(0x0102_0304_0506_0708, 42, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..6], b"d\x00\x00\x00\x26r");
        for at in [6, 14, 22] {
            assert_eq!(out[at..at + 8], 0x0102_0304_0506_0708u64.to_be_bytes());
        }
        assert_eq!(out[30..38], 42i64.to_be_bytes());
        assert_eq!(out[38], 0);
    }

    fn stream_of(bytes: &[u8]) -> ReplicationStream {
        let (replies, _) = mpsc::channel(4);
        ReplicationStream {
            reader: Reader { read: Box::new(tokio::io::empty()), buf: BytesMut::from(bytes) },
            replies,
            protocol_version: 2,
        }
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn copy_data(payload: &[u8]) -> Vec<u8> {
        message(b'd', payload)
    }

    #[test]
    fn xlogdata_and_keepalives_are_read_from_the_buffer() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&7u64.to_be_bytes());
        w.extend_from_slice(&9u64.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(b"E");
        let mut k = vec![b'k'];
        k.extend_from_slice(&11u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        let mut bytes = copy_data(&w);
        bytes.extend_from_slice(&copy_data(&k));
        // Half of a third message: needs more bytes.
        bytes.extend_from_slice(&copy_data(&w)[..10]);
        let mut s = stream_of(&bytes);
        assert_eq!(
            s.buffered().unwrap(),
            Some(Event::XLogData { wal_start: 7, wal_end: 9, data: Bytes::from_static(b"E") })
        );
        assert_eq!(s.buffered().unwrap(), Some(Event::KeepAlive { wal_end: 11, reply_requested: true }));
        assert_eq!(s.buffered().unwrap(), None);
    }

    #[tokio::test]
    async fn copy_out_hands_over_every_row_across_short_reads_and_survives_a_server_error() {
        let rows: Vec<Vec<u8>> = vec![b"first".to_vec(), vec![7; 300], Vec::new()];
        let mut bytes = message(b'H', &[1, 0, 1, 0, 1]);
        for r in &rows {
            bytes.extend(copy_data(r));
        }
        for (tag, body) in [(b'c', &b""[..]), (b'C', b"COPY 3\0"), (b'Z', b"T")] {
            bytes.extend(message(tag, body));
        }
        // The second query fails, the third succeeds on the same session.
        bytes.extend(message(b'E', b"SERROR\0VERROR\0C22012\0Mdivision by zero\0\0"));
        bytes.extend(message(b'Z', b"I"));
        bytes.extend(message(b'H', &[1, 0, 1, 0, 1]));
        bytes.extend(copy_data(b"again"));
        for (tag, body) in [(b'c', &b""[..]), (b'C', b"COPY 1\0"), (b'Z', b"I")] {
            bytes.extend(message(tag, body));
        }
        // No read returns more than 7 bytes: every message arrives in pieces.
        let (mut feed, read) = tokio::io::duplex(7);
        tokio::spawn(async move { feed.write_all(&bytes).await.unwrap() });
        let mut s = Session {
            reader: Reader { read: Box::new(read), buf: BytesMut::new() },
            write: Box::new(tokio::io::sink()),
            out: BytesMut::new(),
        };
        let mut got = Vec::new();
        s.copy_out("COPY a", |b| got.push(b.to_vec())).await.unwrap();
        assert_eq!(got, rows);
        let err = s.copy_out("COPY b", |_| panic!("no rows")).await.unwrap_err();
        assert_eq!(err.code(), Some("22012"));
        let mut again = Vec::new();
        s.copy_out("COPY c", |b| again.push(b.to_vec())).await.unwrap();
        assert_eq!(again, [b"again".to_vec()]);
    }

    #[test]
    fn server_errors_keep_their_sqlstate() {
        let mut e = vec![b'E'];
        let body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0";
        e.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
        e.extend_from_slice(body);
        let err = stream_of(&e).buffered().unwrap_err();
        assert_eq!(err.code(), Some("57P01"));
        assert_eq!(err.to_string(), "terminating connection due to administrator command (SQLSTATE 57P01)");
        let done = [b'c', 0, 0, 0, 4];
        assert!(matches!(stream_of(&done).buffered(), Err(WireError::Ended)));
    }
}

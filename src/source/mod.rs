//! Source: one task per watched mailbox. It logs in (TLS by default, plaintext only when
//! configured), SELECTs the folder, catches up from the checkpoint kept in the store with
//! `UID SEARCH`/`UID FETCH`, hands each message to the pipeline, applies the marks the
//! pipeline decided, then IDLEs until the server reports something or the IDLE is due to
//! be re-issued; after every IDLE it catches up again. Any failure drops the connection
//! and reconnects with capped exponential backoff. Every command runs under a timeout,
//! because a server that accepts and never answers must not stall the mailbox.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_imap::types::{Flag, UnsolicitedResponse};
use futures::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::config::{ImapOptions, Login, Rules, Server, TlsMode};
use crate::pipeline::{self, Incoming, KEYWORD_QUARANTINED, KEYWORD_TRIAGED};
use crate::record::{Checkpoint, Mark, Store};

type Stream = Either<TlsStream<TcpStream>, TcpStream>;
type Session = async_imap::Session<Stream>;

/// Messages fetched per UID FETCH: bounds memory per batch whatever the backlog.
const FETCH_BATCH: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("login as {0} refused: {1}")]
    Login(String, String),
    #[error("password: {0}")]
    Secret(String),
    #[error("IMAP: {0}")]
    Protocol(#[from] async_imap::error::Error),
    #[error("state: {0}")]
    Store(#[from] crate::record::StoreError),
    #[error("triage: {0}")]
    Pipeline(String),
    #[error("server closed the connection")]
    Closed,
}

async fn timed<T, E: Into<ImapError>>(
    what: &'static str,
    d: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(what, d)),
    }
}

/// Everything one mailbox task needs.
#[derive(Clone)]
pub struct Source {
    /// Mailbox name in rules.toml.
    pub name: String,
    pub server: Server,
    pub login: Login,
    pub options: ImapOptions,
    pub tls: Option<TlsConnector>,
    /// The folder watched: the login's folder, or its Sent folder in observe mode.
    pub folder: String,
    /// Observe mode: the folder holds the queue's own replies; they update tickets and
    /// are never triaged or marked.
    pub observe: bool,
}

impl Source {
    /// The source reading `login`'s own folder on the configured IMAP server; `observe`
    /// for a folder whose mail is only looked at (see [`Source::observe`]).
    pub fn new(
        name: String,
        settings: &crate::config::Settings,
        login: Login,
        tls: Option<TlsConnector>,
        observe: bool,
    ) -> Source {
        Source {
            name,
            server: settings.imap.clone(),
            folder: login.folder.clone(),
            login,
            options: settings.imap_options.clone(),
            tls,
            observe,
        }
    }

    /// The key of this folder's checkpoint in the store (also its name in `status`).
    pub fn checkpoint_key(&self) -> String {
        if self.observe {
            format!("{}#{}", self.name, self.folder)
        } else {
            self.name.clone()
        }
    }
}

/// The mailbox's connection state, for logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Connecting,
    Idle,
    Syncing,
    Failing,
}

impl Source {
    async fn connect(&self) -> Result<Session, ImapError> {
        let s = &self.server;
        let t = s.timeout;
        let addr = format!("{}:{}", s.host, s.port);
        let tcp = timed("connect", t, async {
            TcpStream::connect(&addr)
                .await
                .map_err(|e| ImapError::Connect(addr.clone(), e))
        })
        .await?;
        let _ = tcp.set_nodelay(true);
        // A peer that vanished (NAT timeout, pulled cable) is found by the kernel within
        // minutes even while IDLE waits quietly for the refresh.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(15));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let name = || {
            ServerName::try_from(s.server_name().to_string())
                .map_err(|e| ImapError::Tls(format!("server name {:?}: {e}", s.server_name())))
        };
        let tls = || {
            self.tls
                .clone()
                .ok_or_else(|| ImapError::Tls("no TLS settings".into()))
        };
        let mut client = match s.tls {
            TlsMode::Implicit => {
                let stream = timed("TLS handshake", t, async {
                    tls()?
                        .connect(name()?, tcp)
                        .await
                        .map_err(|e| ImapError::Tls(e.to_string()))
                })
                .await?;
                let mut c = async_imap::Client::new(Either::Left(stream));
                greeting(&mut c, t).await?;
                c
            }
            TlsMode::Starttls => {
                let mut c = async_imap::Client::new(tcp);
                greeting(&mut c, t).await?;
                timed("STARTTLS", t, c.run_command_and_check_ok("STARTTLS", None)).await?;
                let tcp = c.into_inner();
                let stream = timed("TLS handshake", t, async {
                    tls()?
                        .connect(name()?, tcp)
                        .await
                        .map_err(|e| ImapError::Tls(e.to_string()))
                })
                .await?;
                // No second greeting after STARTTLS.
                async_imap::Client::new(Either::Left(stream))
            }
            TlsMode::Plaintext => {
                let mut c = async_imap::Client::new(Either::Right(tcp));
                greeting(&mut c, t).await?;
                c
            }
        };
        let _ = &mut client;
        let pw = self
            .login
            .password()
            .ok_or_else(|| ImapError::Secret("no password_file or password_env".into()))?
            .read()
            .map_err(ImapError::Secret)?;
        let user = self.login.user.clone();
        match tokio::time::timeout(t, client.login(&user, &pw)).await {
            Err(_) => Err(ImapError::Timeout("LOGIN", t)),
            Ok(Err((e, _))) => Err(ImapError::Login(user, e.to_string())),
            Ok(Ok(session)) => Ok(session),
        }
    }
}

async fn greeting<T>(c: &mut async_imap::Client<T>, t: Duration) -> Result<(), ImapError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match tokio::time::timeout(t, c.read_response()).await {
        Err(_) => Err(ImapError::Timeout("greeting", t)),
        Ok(Err(e)) => Err(ImapError::Protocol(e.into())),
        Ok(Ok(None)) => Err(ImapError::Closed),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

/// What the mailbox task shares with the rest of the daemon.
#[derive(Clone)]
pub struct Shared {
    pub rules: Arc<ArcSwap<Rules>>,
    pub store: Store,
    /// Wakes the outbox sender once a batch is on disk.
    pub outbox: Arc<Notify>,
    pub stop: CancellationToken,
    /// Connection states and errors, for `status`, the watchdog and metrics.
    pub board: Arc<crate::runtime::status::Board>,
    /// The whole daemon runs in shadow mode (`run --shadow`).
    pub shadow: bool,
}

impl Shared {
    /// Whether this mailbox runs in shadow mode now (the rules can change it).
    fn shadow(&self, mailbox: &str) -> bool {
        self.shadow
            || self
                .rules
                .load()
                .mailboxes
                .get(mailbox)
                .is_some_and(|m| m.shadow)
    }
}

/// Runs one mailbox until `stop`: connect, sync, idle; reconnect with backoff on failure.
pub async fn run(source: Source, shared: Shared) {
    let mut backoff = Duration::from_secs(1);
    let name = source.name.clone();
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        let started = tokio::time::Instant::now();
        let key = source.checkpoint_key();
        shared.board.set(
            &key,
            crate::runtime::status::State::Connecting,
            shared.shadow(&name),
        );
        match session(&source, &shared).await {
            Ok(()) => break,
            Err(e) => {
                shared
                    .board
                    .failed(&key, &e.to_string(), shared.shadow(&name));
                // A session that ran for a while was healthy: start the backoff again.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                match &e {
                    ImapError::Login(..) | ImapError::Secret(..) | ImapError::Tls(..) => {
                        tracing::error!(mailbox = %name, error = %e, retry_in = ?backoff, "Mailbox cannot log in; an operator must fix the settings.")
                    }
                    _ => {
                        tracing::warn!(mailbox = %name, error = %e, retry_in = ?backoff, "Mailbox connection failed; reconnecting.")
                    }
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(source.options.max_backoff);
    }
    shared.board.set(
        &source.checkpoint_key(),
        crate::runtime::status::State::Stopped,
        shared.shadow(&name),
    );
    tracing::info!(mailbox = %name, "Mailbox task stopped.");
}

async fn session(source: &Source, shared: &Shared) -> Result<(), ImapError> {
    let t = source.server.timeout;
    let name = &source.name;
    let mut s = source.connect().await?;
    let mb = timed("SELECT", t, s.select(&source.folder)).await?;
    let uid_validity = mb.uid_validity.unwrap_or(0);
    let mut last = match shared.store.checkpoint(&source.checkpoint_key())? {
        Some(cp) if cp.uid_validity == uid_validity => cp.last_uid,
        Some(cp) => {
            // Every stored UID is void; the Message-ID index and the keywords on the
            // server keep the full resync from triaging anything twice.
            tracing::warn!(mailbox = %name, old = cp.uid_validity, new = uid_validity, "UIDVALIDITY changed; resynchronising the whole folder.");
            0
        }
        None => 0,
    };
    tracing::info!(mailbox = %name, folder = %source.folder, uid_validity, last_uid = last, exists = mb.exists, "Mailbox connected.");
    if !source.observe {
        apply_marks(&mut s, source, shared, uid_validity).await?;
    }

    // Until when the mailbox is asked with NOOP rather than IDLE, after new mail.
    let mut poll_until = tokio::time::Instant::now();
    loop {
        shared.board.set(
            &source.checkpoint_key(),
            crate::runtime::status::State::Syncing,
            shared.shadow(name),
        );
        let before = last;
        last = catch_up(&mut s, source, shared, uid_validity, last).await?;
        if last > before {
            poll_until = tokio::time::Instant::now() + source.options.poll_after_mail;
        }
        shared
            .board
            .synced(&source.checkpoint_key(), shared.shadow(name));
        if shared.stop.is_cancelled() {
            let _ = tokio::time::timeout(t, s.logout()).await;
            return Ok(());
        }
        // Mail that arrived while the last commands ran was announced then (EXISTS went
        // to the unsolicited channel, not to the IDLE that follows): catch up again
        // rather than idle past it.
        if announced(&mut s) {
            continue;
        }
        // Mail comes in bursts, and an IDLE push comes only after the server's own delay
        // (500 ms on Dovecot), while a NOOP sees a delivered message at once: right after
        // new mail, ask again a few times before idling.
        if poll_for_mail(&mut s, t, poll_until, &shared.stop).await? {
            continue;
        }
        // IDLE until the server says something, the refresh is due, or shutdown.
        let mut idle = s.idle();
        timed("IDLE", t, idle.init()).await?;
        let outcome = {
            let (fut, stop_idle) =
                idle.wait_with_timeout(source.options.idle_refresh + Duration::from_secs(60));
            tokio::pin!(fut);
            // Dropping the stop source ends the IDLE wait; the server's keepalives would
            // otherwise keep it going past the refresh.
            let mut stop_idle = Some(stop_idle);
            let refresh = tokio::time::sleep(source.options.idle_refresh);
            tokio::pin!(refresh);
            loop {
                tokio::select! {
                    r = &mut fut => break r,
                    _ = &mut refresh, if stop_idle.is_some() => { stop_idle.take(); }
                    _ = shared.stop.cancelled(), if stop_idle.is_some() => { stop_idle.take(); }
                }
            }
        };
        outcome?;
        s = timed("DONE", t, idle.done()).await?;
    }
}

/// Whether the server announced new mail since the last look; reads every pending
/// unsolicited response, so the channel never fills up.
fn announced(s: &mut Session) -> bool {
    let mut new_mail = false;
    while let Ok(r) = s.unsolicited_responses.try_recv() {
        new_mail |= matches!(
            r,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    new_mail
}

/// NOOPs until `until`, the first 10 ms later and then twice as far apart each time (up
/// to 160 ms: a burst's next message is seen within a few ms, a quiet mailbox costs a
/// handful of commands); true as soon as the server announces new mail.
async fn poll_for_mail(
    s: &mut Session,
    t: Duration,
    until: tokio::time::Instant,
    stop: &CancellationToken,
) -> Result<bool, ImapError> {
    let mut gap = Duration::from_millis(10);
    loop {
        let now = tokio::time::Instant::now();
        if now >= until || stop.is_cancelled() {
            return Ok(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(gap.min(until - now)) => {}
            _ = stop.cancelled() => return Ok(false),
        }
        timed("NOOP", t, s.noop()).await?;
        if announced(s) {
            return Ok(true);
        }
        gap = (gap * 2).min(Duration::from_millis(160));
    }
}

/// Which of these Message-IDs are in the source's folder, waiting up to `patience` for
/// the missing ones to be delivered (the server may have accepted a mail a moment ago
/// and not delivered it yet). One session, one search per missing id and round.
pub async fn messages_present(
    source: &Source,
    message_ids: &[String],
    patience: Duration,
) -> Result<std::collections::HashSet<String>, ImapError> {
    let t = source.server.timeout;
    let mut s = source.connect().await?;
    timed("SELECT", t, s.select(&source.folder)).await?;
    let deadline = tokio::time::Instant::now() + patience;
    let mut found = std::collections::HashSet::new();
    loop {
        let missing: Vec<&String> = message_ids
            .iter()
            .filter(|id| !found.contains(*id))
            .collect();
        for id in missing {
            let quoted = id.replace(['"', '\\', '\r', '\n'], "");
            let hits = timed(
                "UID SEARCH",
                t,
                s.uid_search(format!("HEADER Message-ID \"{quoted}\"")),
            )
            .await?;
            if !hits.is_empty() {
                found.insert(id.clone());
            }
        }
        if found.len() == message_ids.len() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Let the server notice new mail before the next search.
        timed("NOOP", t, s.noop()).await?;
    }
    let _ = tokio::time::timeout(t, s.logout()).await;
    Ok(found)
}

/// Fetches and triages everything above `last`, in UID order, in bounded batches.
async fn catch_up(
    s: &mut Session,
    source: &Source,
    shared: &Shared,
    uid_validity: u32,
    mut last: u32,
) -> Result<u32, ImapError> {
    let t = source.server.timeout;
    let name = &source.name;
    let found = timed("UID SEARCH", t, s.uid_search(format!("UID {}:*", last + 1))).await?;
    // `N:*` also returns the last message when N is above the highest UID.
    let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
    uids.sort_unstable();
    if uids.is_empty() {
        return Ok(last);
    }
    tracing::info!(mailbox = %name, count = uids.len(), from_uid = uids[0], "New messages.");
    for chunk in uids.chunks(FETCH_BATCH) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let fetched: Vec<(u32, Vec<String>, Vec<u8>)> = timed("UID FETCH", t * 4, async {
            let stream = s.uid_fetch(&set, "(UID FLAGS BODY.PEEK[])").await?;
            // Read the stream to its end, or leftovers land on the next command.
            let all: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(all)
        })
        .await?
        .into_iter()
        .filter_map(|f| {
            let uid = f.uid?;
            let flags = f
                .flags()
                .filter_map(|fl| match fl {
                    Flag::Custom(c) => Some(c.to_string()),
                    _ => None,
                })
                .collect();
            Some((uid, flags, f.body().unwrap_or_default().to_vec()))
        })
        .collect();
        let mut batch: Vec<(u32, Vec<String>, Vec<u8>)> =
            fetched.into_iter().filter(|(u, _, _)| *u > last).collect();
        batch.sort_by_key(|(u, _, _)| *u);

        // Parse, classify and record off the async threads: sled and the regexes are
        // blocking work.
        let rules = shared.rules.load_full();
        let shadow = shared.shadow(name);
        // Shadow mode records the decisions and keeps their mails and marks from
        // ever leaving: see Store::shadowed.
        let store = if shadow {
            shared.store.shadowed()
        } else {
            shared.store.clone()
        };
        let mailbox_name = name.clone();
        if source.observe {
            let key = source.checkpoint_key();
            let new_last = tokio::task::spawn_blocking(move || -> Result<u32, ImapError> {
                let mut last = 0;
                for (uid, _, raw) in &batch {
                    if let Some(ticket) = pipeline::observe_sent(&rules, &store, raw, SystemTime::now())? {
                        tracing::info!(mailbox = %mailbox_name, uid, ticket = %ticket, "Staff reply seen in the ticket.");
                    }
                    store.set_checkpoint(&key, Checkpoint { uid_validity, last_uid: *uid })?;
                    last = *uid;
                }
                store.flush()?;
                Ok(last)
            })
            .await
            .map_err(|e| ImapError::Pipeline(format!("observe task failed: {e}")))??;
            last = last.max(new_last);
            continue;
        }
        let new_last = tokio::task::spawn_blocking(move || -> Result<u32, ImapError> {
            let mailbox = rules
                .mailboxes
                .get(&mailbox_name)
                .ok_or_else(|| ImapError::Pipeline(format!("mailbox {mailbox_name:?} is no longer in the rules")))?;
            let mut last = 0;
            for (uid, flags, raw) in &batch {
                let cp = Checkpoint { uid_validity, last_uid: *uid };
                if flags.iter().any(|f| f == KEYWORD_TRIAGED || f == KEYWORD_QUARANTINED) {
                    // Marked on the server by an earlier run: handled, whatever the local state says.
                    store.set_checkpoint(&mailbox_name, cp)?;
                    tracing::info!(mailbox = %mailbox_name, uid, "Already marked as triaged on the server; skipped.");
                    last = *uid;
                    continue;
                }
                let span = tracing::info_span!("message", mailbox = %mailbox_name, uid);
                let _g = span.enter();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pipeline::triage(&rules, &store, Incoming { mailbox, raw, source: Some(cp) }, SystemTime::now())
                }))
                .unwrap_or_else(|p| {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let reason = format!("triage failed on this message: {what}");
                    pipeline::quarantine(&store, mailbox, raw, Some(cp), reason, SystemTime::now()).map_err(Into::into)
                });
                match outcome {
                    Ok(r) => {
                        crate::runtime::status::count_message(&mailbox_name, &r, shadow);
                        tracing::info!(
                            shadow,
                            ticket = %r.ticket.as_deref().unwrap_or("-"),
                            action = %r.action,
                            category = %r.category.as_deref().unwrap_or("-"),
                            queue = %r.queue.as_deref().unwrap_or("-"),
                            ack = r.acknowledgement.send,
                            suppressed = %r.acknowledgement.suppressed.unwrap_or("-"),
                            "Message triaged."
                        );
                    }
                    // The message stays above the checkpoint and is tried again after a
                    // reconnect; it is never skipped silently.
                    Err(e) => return Err(ImapError::Pipeline(e.to_string())),
                }
                last = *uid;
            }
            store.flush()?;
            Ok(last)
        })
        .await
        .map_err(|e| ImapError::Pipeline(format!("triage task failed: {e}")))??;
        last = last.max(new_last);
        shared.outbox.notify_one();
        apply_marks(s, source, shared, uid_validity).await?;
    }
    Ok(last)
}

/// Applies the marks recorded for this mailbox: keywords, then the move when configured.
async fn apply_marks(
    s: &mut Session,
    source: &Source,
    shared: &Shared,
    uid_validity: u32,
) -> Result<(), ImapError> {
    let t = source.server.timeout;
    // One UID STORE (and one UID MOVE) per set of marks that are alike, not one per
    // message: a backlog of a thousand messages costs a few round trips, not thousands.
    let mut groups: std::collections::BTreeMap<(Vec<String>, Option<String>), Vec<Mark>> =
        Default::default();
    for m in shared.store.pending_marks(&source.name)? {
        if m.uid_validity != uid_validity {
            // The UIDs of another UIDVALIDITY mean nothing now.
            shared.store.mark_done(&m)?;
            continue;
        }
        groups
            .entry((m.keywords.clone(), m.move_to.clone()))
            .or_default()
            .push(m);
    }
    for ((keywords, move_to), marks) in groups {
        for chunk in marks.chunks(500) {
            let set = chunk
                .iter()
                .map(|m| m.uid.to_string())
                .collect::<Vec<_>>()
                .join(",");
            store_flags(s, &set, &keywords, t).await?;
            if let Some(folder) = &move_to {
                // Created on first use; an existing folder makes CREATE fail harmlessly.
                let _ = timed("CREATE", t, s.create(folder)).await;
                timed("UID MOVE", t, s.uid_mv(&set, folder)).await?;
            }
            for m in chunk {
                shared.store.mark_done(m)?;
            }
        }
    }
    Ok(())
}

async fn store_flags(
    s: &mut Session,
    uids: &str,
    keywords: &[String],
    t: Duration,
) -> Result<(), ImapError> {
    let flags = keywords.join(" ");
    timed("UID STORE", t, async {
        let stream = s
            .uid_store(uids, format!("+FLAGS.SILENT ({flags})"))
            .await?;
        let _: Vec<_> = stream.try_collect().await?;
        Ok::<_, async_imap::error::Error>(())
    })
    .await
}

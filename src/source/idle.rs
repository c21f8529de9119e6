//! Source, the wait for new mail: mail already announced, then NOOP polling for a
//! moment after new mail, then IDLE until the server says something, the refresh is
//! due, or the daemon stops. A session without IDLE (the server does not offer it, or
//! the login says `idle = false`) waits `poll_interval` instead and asks with NOOP.

use std::time::Duration;

use async_imap::types::UnsolicitedResponse;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{timed, Connection, ImapError, Wait};

/// The longest gap between two NOOPs while polling after new mail.
const POLL_GAP_MAX: Duration = Duration::from_millis(160);

impl Connection {
    /// Returns when there may be new mail, or at `stop`. Until `poll_until` the folder is
    /// asked with NOOP rather than IDLE.
    pub async fn wait_for_mail(
        mut self,
        poll_until: Instant,
        stop: &CancellationToken,
    ) -> Result<Connection, ImapError> {
        // Mail that arrived while the last commands ran was announced then (EXISTS went
        // to the unsolicited channel, not to the IDLE that follows): look again rather
        // than idle past it.
        if self.announced() {
            return Ok(self);
        }
        // Mail comes in bursts, and an IDLE push comes only after the server's own delay
        // (500 ms on Dovecot), while a NOOP sees a delivered message at once: right after
        // new mail, ask again a few times before idling.
        if self.poll_for_mail(poll_until, stop).await? {
            return Ok(self);
        }
        match self.mode.wait {
            Wait::Push => self.idle(stop).await,
            Wait::Poll(every) => self.poll(every, stop).await,
        }
    }

    /// Waits `every` (or until `stop`), then NOOP: the server notices what was
    /// delivered meanwhile, and the search that follows finds it.
    async fn poll(
        mut self,
        every: Duration,
        stop: &CancellationToken,
    ) -> Result<Connection, ImapError> {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(self),
        }
        timed("NOOP", self.timeout, self.session.noop()).await?;
        self.announced();
        Ok(self)
    }

    /// Whether the server announced new mail since the last look; reads every pending
    /// unsolicited response, so the channel never fills up.
    fn announced(&mut self) -> bool {
        let mut new_mail = false;
        while let Ok(r) = self.session.unsolicited_responses.try_recv() {
            new_mail |= matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            );
        }
        new_mail
    }

    /// NOOPs until `until`, the first 10 ms later and then twice as far apart each time
    /// (up to [`POLL_GAP_MAX`]: a burst's next message is seen within a few ms, a quiet
    /// mailbox costs a handful of commands); true as soon as the server announces new mail.
    async fn poll_for_mail(
        &mut self,
        until: Instant,
        stop: &CancellationToken,
    ) -> Result<bool, ImapError> {
        let mut gap = Duration::from_millis(10);
        loop {
            let now = Instant::now();
            if now >= until || stop.is_cancelled() {
                return Ok(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(gap.min(until - now)) => {}
                _ = stop.cancelled() => return Ok(false),
            }
            timed("NOOP", self.timeout, self.session.noop()).await?;
            if self.announced() {
                return Ok(true);
            }
            gap = (gap * 2).min(POLL_GAP_MAX);
        }
    }

    /// IDLE until the server says something, the refresh is due, or `stop`.
    async fn idle(self, stop: &CancellationToken) -> Result<Connection, ImapError> {
        let Connection {
            session,
            timeout: t,
            idle_refresh,
            ..
        } = self;
        let mut idle = session.idle();
        timed("IDLE", t, idle.init()).await?;
        let outcome = {
            let (fut, stop_idle) = idle.wait_with_timeout(idle_refresh + Duration::from_secs(60));
            tokio::pin!(fut);
            // Dropping the stop source ends the IDLE wait; the server's keepalives would
            // otherwise keep it going past the refresh.
            let mut stop_idle = Some(stop_idle);
            let refresh = tokio::time::sleep(idle_refresh);
            tokio::pin!(refresh);
            loop {
                tokio::select! {
                    r = &mut fut => break r,
                    _ = &mut refresh, if stop_idle.is_some() => { stop_idle.take(); }
                    _ = stop.cancelled(), if stop_idle.is_some() => { stop_idle.take(); }
                }
            }
        };
        outcome?;
        let session = timed("DONE", t, idle.done()).await?;
        Ok(Connection { session, ..self })
    }
}

//! Source, the marks: the keywords and the move decided for messages, carried out on
//! the server as the session's mode allows ([`super::caps::steps`]: keywords only where
//! the folder keeps them; MOVE only where offered, else COPY and `\Deleted`, expunged
//! by UID only with UIDPLUS). Which marks are due and when they are done is the
//! runner's record; this is only the IMAP side.

use futures::TryStreamExt;

use super::caps::{steps, Step};
use super::fetch::uid_set;
use super::{timed, Connection, ImapError};

/// Messages marked by one UID STORE (and one UID MOVE).
pub const MARK_BATCH: usize = 500;

impl Connection {
    /// Adds `keywords` to the messages `uids` (at most [`MARK_BATCH`]) and moves them to
    /// `move_to` when given, in the commands the session's mode allows.
    pub async fn mark(
        &mut self,
        uids: &[u32],
        keywords: &[String],
        move_to: Option<&str>,
    ) -> Result<(), ImapError> {
        let set = uid_set(uids.iter().copied());
        if let Some(folder) = move_to {
            // Created on first use; an existing folder makes CREATE fail harmlessly.
            let _ = timed("CREATE", self.timeout, self.session.create(folder)).await;
        }
        for step in steps(&self.mode, keywords, move_to) {
            match step {
                Step::Keywords(k) => self.store_flags(&set, &k.join(" ")).await?,
                Step::Move(folder) => {
                    timed("UID MOVE", self.timeout, self.session.uid_mv(&set, &folder)).await?
                }
                Step::Copy(folder) => self.copy_undeleted(uids, &folder).await?,
                Step::Delete => self.store_flags(&set, "\\Deleted").await?,
                Step::UidExpunge => self.uid_expunge(&set).await?,
            }
        }
        Ok(())
    }

    /// UID COPY of those of `uids` not yet `\Deleted`: a mark carried out again after a
    /// stop between its `\Deleted` and its expunge copies nothing twice. After a stop
    /// between the COPY and the `\Deleted` the folder gets a second copy: striking the
    /// original out first would lose it to a stop before the COPY.
    async fn copy_undeleted(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        let query = format!("UID {} UNDELETED", uid_set(uids.iter().copied()));
        let search = self.session.uid_search(query);
        let mut left: Vec<u32> = timed("UID SEARCH", self.timeout, search)
            .await?
            .into_iter()
            .filter(|u| uids.contains(u))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort_unstable();
        let set = uid_set(left.into_iter());
        timed(
            "UID COPY",
            self.timeout,
            self.session.uid_copy(&set, folder),
        )
        .await
    }

    /// UID EXPUNGE (UIDPLUS): only the messages named go, never another client's
    /// `\Deleted` ones.
    async fn uid_expunge(&mut self, set: &str) -> Result<(), ImapError> {
        let session = &mut self.session;
        timed("UID EXPUNGE", self.timeout, async {
            let stream = session.uid_expunge(set).await?;
            let _: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(())
        })
        .await
    }

    async fn store_flags(&mut self, uids: &str, flags: &str) -> Result<(), ImapError> {
        let session = &mut self.session;
        timed("UID STORE", self.timeout, async {
            let stream = session
                .uid_store(uids, format!("+FLAGS.SILENT ({flags})"))
                .await?;
            let _: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(())
        })
        .await
    }
}

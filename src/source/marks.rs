//! Source, the marks: the keywords and the move decided for messages, carried out on
//! the server. Which marks are due and when they are done is the runner's record; this
//! is only the IMAP side.

use futures::TryStreamExt;

use super::fetch::uid_set;
use super::{timed, Connection, ImapError};

/// Messages marked by one UID STORE (and one UID MOVE).
pub const MARK_BATCH: usize = 500;

impl Connection {
    /// Adds `keywords` to the messages `uids` (at most [`MARK_BATCH`]) and moves them to
    /// `move_to` when given.
    pub async fn mark(
        &mut self,
        uids: &[u32],
        keywords: &[String],
        move_to: Option<&str>,
    ) -> Result<(), ImapError> {
        let set = uid_set(uids.iter().copied());
        self.store_flags(&set, keywords).await?;
        if let Some(folder) = move_to {
            // Created on first use; an existing folder makes CREATE fail harmlessly.
            let _ = timed("CREATE", self.timeout, self.session.create(folder)).await;
            timed("UID MOVE", self.timeout, self.session.uid_mv(&set, folder)).await?;
        }
        Ok(())
    }

    async fn store_flags(&mut self, uids: &str, keywords: &[String]) -> Result<(), ImapError> {
        let flags = keywords.join(" ");
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

//! Source, the fetch: which UIDs are above the checkpoint (`UID SEARCH`) and their
//! messages (`UID FETCH`, in bounded batches), as [`Fetched`] messages; and the search by
//! Message-ID the start uses to settle the mails in flight at the last stop.

use std::collections::HashSet;
use std::time::Duration;

use async_imap::types::Flag;
use futures::TryStreamExt;

use super::{timed, Connection, ImapError, Source};

/// Messages fetched per UID FETCH: bounds memory per batch whatever the backlog.
pub const FETCH_BATCH: usize = 50;

/// One message as the server holds it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    /// The keywords already on it (flags other than the system ones).
    pub keywords: Vec<String>,
    pub raw: Vec<u8>,
}

impl Connection {
    /// The UIDs above `last`, in ascending order.
    pub async fn uids_after(&mut self, last: u32) -> Result<Vec<u32>, ImapError> {
        let search = self.session.uid_search(format!("UID {}:*", last + 1));
        let found = timed("UID SEARCH", self.timeout, search).await?;
        // `N:*` also returns the last message when N is above the highest UID.
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > last).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// The messages of `uids` (at most [`FETCH_BATCH`] of them) above `last`, in UID order.
    pub async fn fetch(&mut self, uids: &[u32], last: u32) -> Result<Vec<Fetched>, ImapError> {
        let set = uid_set(uids.iter().copied());
        let session = &mut self.session;
        let all = timed("UID FETCH", self.timeout * 4, async {
            let stream = session.uid_fetch(&set, "(UID FLAGS BODY.PEEK[])").await?;
            // Read the stream to its end, or leftovers land on the next command.
            let all: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(all)
        })
        .await?;
        let mut batch: Vec<Fetched> = all
            .iter()
            .filter_map(fetched)
            .filter(|f| f.uid > last)
            .collect();
        batch.sort_by_key(|f| f.uid);
        Ok(batch)
    }

    /// Whether a message with this Message-ID is in the folder.
    async fn holds(&mut self, message_id: &str) -> Result<bool, ImapError> {
        let quoted = message_id.replace(['"', '\\', '\r', '\n'], "");
        let search = self
            .session
            .uid_search(format!("HEADER Message-ID \"{quoted}\""));
        Ok(!timed("UID SEARCH", self.timeout, search).await?.is_empty())
    }
}

/// UIDs as an IMAP sequence set: "4,5,9".
pub(super) fn uid_set(uids: impl Iterator<Item = u32>) -> String {
    uids.map(|u| u.to_string()).collect::<Vec<_>>().join(",")
}

fn fetched(f: &async_imap::types::Fetch) -> Option<Fetched> {
    let uid = f.uid?;
    let keywords = f
        .flags()
        .filter_map(|fl| match fl {
            Flag::Custom(c) => Some(c.to_string()),
            _ => None,
        })
        .collect();
    Some(Fetched {
        uid,
        keywords,
        raw: f.body().unwrap_or_default().to_vec(),
    })
}

/// Which of these Message-IDs are in the source's folder, waiting up to `patience` for
/// the missing ones to be delivered (the server may have accepted a mail a moment ago
/// and not delivered it yet). One session, one search per missing id and round.
pub async fn messages_present(
    source: &Source,
    message_ids: &[String],
    patience: Duration,
) -> Result<HashSet<String>, ImapError> {
    let mut c = Connection::open(source).await?;
    let deadline = tokio::time::Instant::now() + patience;
    let mut found = HashSet::new();
    loop {
        let missing: Vec<&String> = message_ids
            .iter()
            .filter(|id| !found.contains(*id))
            .collect();
        for id in missing {
            if c.holds(id).await? {
                found.insert(id.clone());
            }
        }
        if found.len() == message_ids.len() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Let the server notice new mail before the next search.
        timed("NOOP", c.timeout, c.session.noop()).await?;
    }
    c.logout().await;
    Ok(found)
}

//! Source, the fetch: which UIDs are above the checkpoint (`UID SEARCH`) and their
//! messages (`UID FETCH`, in bounded batches), as [`Fetched`] messages; the searches a
//! folder met for the first time is taken on with (its last UID, what arrived since a
//! time, what is unseen); the last messages of a folder for a look that changes
//! nothing; and the search by Message-ID the start uses to settle the mails in flight
//! at the last stop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use async_imap::types::Flag;
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::{timed, Connection, ImapError, Source};

/// Messages fetched per UID FETCH: bounds memory per batch whatever the backlog.
pub const FETCH_BATCH: usize = 50;

/// Messages whose RFC822.SIZE one UID FETCH reads.
const SIZE_BATCH: usize = 500;

/// Messages whose INTERNALDATE one UID FETCH reads, when a search by arrival is made
/// exact to the second.
const DATE_BATCH: usize = 500;

/// One message as the server holds it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    /// The keywords already on it (flags other than the system ones).
    pub keywords: Vec<String>,
    /// When the server got it (INTERNALDATE), when it was asked for.
    pub arrived: Option<SystemTime>,
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

    /// The highest UID the folder held when it was selected (0 when empty): UIDNEXT - 1,
    /// or asked when the server gave no UIDNEXT. Whatever comes above it arrived later.
    pub async fn last_uid(&mut self) -> Result<u32, ImapError> {
        if let Some(next) = self.uid_next {
            return Ok(next.saturating_sub(1));
        }
        if self.exists == 0 {
            return Ok(0);
        }
        let search = self.session.uid_search("UID *");
        let found = timed("UID SEARCH", self.timeout, search).await?;
        Ok(found.into_iter().max().unwrap_or(0))
    }

    /// The UIDs up to `through` of the messages no one has read (no `\Seen`), ascending.
    pub async fn uids_unseen(&mut self, through: u32) -> Result<Vec<u32>, ImapError> {
        self.search_through(&format!("UID 1:{through} UNSEEN"), through)
            .await
    }

    /// The UIDs up to `through` of the messages that arrived (INTERNALDATE) at `from` or
    /// later, ascending. `SEARCH SINCE` narrows by day, the server's day, so one day more
    /// is asked for; each candidate's INTERNALDATE then decides, to the second.
    pub async fn uids_arrived_since(
        &mut self,
        from: SystemTime,
        through: u32,
    ) -> Result<Vec<u32>, ImapError> {
        let day = OffsetDateTime::from(from) - time::Duration::DAY;
        let query = format!("UID 1:{through} SINCE {}", imap_date(day));
        let candidates = self.search_through(&query, through).await?;
        let mut taken = Vec::new();
        for chunk in candidates.chunks(DATE_BATCH) {
            let set = uid_set(chunk.iter().copied());
            let dates: HashMap<u32, SystemTime> = self
                .uid_fetch_all(&set, "(UID INTERNALDATE)")
                .await?
                .iter()
                .filter_map(|f| Some((f.uid?, arrived(f)?)))
                .collect();
            // A date the server did not give: its own SINCE took the message.
            let recent = |u: &u32| dates.get(u).is_none_or(|d| *d >= from);
            taken.extend(chunk.iter().copied().filter(recent));
        }
        Ok(taken)
    }

    /// UID SEARCH `query`, keeping the UIDs up to `through`, ascending.
    async fn search_through(&mut self, query: &str, through: u32) -> Result<Vec<u32>, ImapError> {
        if through == 0 {
            return Ok(Vec::new());
        }
        let found = timed("UID SEARCH", self.timeout, self.session.uid_search(query)).await?;
        let mut uids: Vec<u32> = found.into_iter().filter(|u| *u <= through).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// `uids` in batches to fetch whole, in order: each of at most [`FETCH_BATCH`]
    /// messages and at most `bytes` bytes by their RFC822.SIZE (asked first, a few
    /// hundred at a time), a message bigger than `bytes` alone. So the memory a batch
    /// takes is bounded by configuration, not by the mail.
    pub async fn batches(&mut self, uids: &[u32], bytes: u64) -> Result<Vec<Vec<u32>>, ImapError> {
        let mut sizes = HashMap::new();
        for chunk in uids.chunks(SIZE_BATCH) {
            let set = uid_set(chunk.iter().copied());
            for f in self.uid_fetch_all(&set, "(UID RFC822.SIZE)").await? {
                if let (Some(uid), Some(size)) = (f.uid, f.size) {
                    sizes.insert(uid, u64::from(size));
                }
            }
        }
        // A message the server gave no size for is fetched alone: it may be any size.
        let sized: Vec<(u32, u64)> = uids
            .iter()
            .map(|u| (*u, sizes.get(u).copied().unwrap_or(u64::MAX)))
            .collect();
        Ok(group_by_size(&sized, FETCH_BATCH, bytes))
    }

    /// The messages of `uids` (at most [`FETCH_BATCH`] of them), in UID order.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<Fetched>, ImapError> {
        let set = uid_set(uids.iter().copied());
        let asked: HashSet<u32> = uids.iter().copied().collect();
        let all = self.uid_fetch_all(&set, "(UID FLAGS BODY.PEEK[])").await?;
        // The server may add FETCH responses of other messages (flags changed by another
        // client): only the messages asked for are handed on.
        // Each response is dropped once its message is copied out, so a batch is held
        // once, not twice.
        let mut batch: Vec<Fetched> = all
            .into_iter()
            .filter_map(|f| fetched(&f))
            .filter(|f| asked.contains(&f.uid))
            .collect();
        batch.sort_by_key(|f| f.uid);
        Ok(batch)
    }

    /// The last `n` messages of the folder, in UID order, with when they arrived; read
    /// with BODY.PEEK, so that nothing about them changes.
    pub async fn fetch_last(&mut self, n: u32) -> Result<Vec<Fetched>, ImapError> {
        if self.exists == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let first = self.exists.saturating_sub(n) + 1;
        let range = first..=self.exists;
        let session = &mut self.session;
        let set = format!("{first}:{}", self.exists);
        let all = timed("FETCH", self.timeout * 4, async {
            let stream = session
                .fetch(&set, "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                .await?;
            let all: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(all)
        })
        .await?;
        let mut last: Vec<Fetched> = all
            .iter()
            .filter(|f| range.contains(&f.message))
            .filter_map(fetched)
            .collect();
        last.sort_by_key(|f| f.uid);
        Ok(last)
    }

    /// UID FETCH `items` of `set`, read to the end of the answer.
    async fn uid_fetch_all(
        &mut self,
        set: &str,
        items: &str,
    ) -> Result<Vec<async_imap::types::Fetch>, ImapError> {
        let session = &mut self.session;
        timed("UID FETCH", self.timeout * 4, async {
            let stream = session.uid_fetch(set, items).await?;
            // Read the stream to its end, or leftovers land on the next command.
            let all: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(all)
        })
        .await
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

/// `sized` (UID, size) in order, cut into runs of at most `count` messages and at most
/// `bytes` bytes; a message bigger than `bytes` is a run of its own.
fn group_by_size(sized: &[(u32, u64)], count: usize, bytes: u64) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut total = 0u64;
    for &(uid, size) in sized {
        match out.last_mut() {
            Some(run) if run.len() < count && total.saturating_add(size) <= bytes => {
                run.push(uid);
                total += size;
            }
            _ => {
                out.push(vec![uid]);
                total = size;
            }
        }
    }
    out
}

/// An IMAP date (RFC 3501 `date`): "1-Nov-2026".
fn imap_date(t: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    format!("{}-{month}-{}", t.day(), t.year())
}

/// UIDs as an IMAP sequence set: "4,5,9".
pub(super) fn uid_set(uids: impl Iterator<Item = u32>) -> String {
    uids.map(|u| u.to_string()).collect::<Vec<_>>().join(",")
}

/// When the server got the message, from its INTERNALDATE.
fn arrived(f: &async_imap::types::Fetch) -> Option<SystemTime> {
    let secs = f.internal_date()?.timestamp();
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
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
        arrived: arrived(f),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes_and_a_big_message_goes_alone() {
        const MB: u64 = 1 << 20;
        let sized = [
            (1, 10_000),
            (2, 8 * MB),
            (3, 9 * MB),
            (4, 30 * MB),
            (5, 1_000),
            (6, u64::MAX),
            (7, 2_000),
            (8, 3_000),
            (9, 4_000),
        ];
        assert_eq!(
            group_by_size(&sized, 2, 16 * MB),
            vec![
                vec![1, 2],
                vec![3],
                vec![4],
                vec![5],
                vec![6],
                vec![7, 8],
                vec![9]
            ]
        );
        assert_eq!(group_by_size(&[], 50, MB), Vec::<Vec<u32>>::new());
    }
}

//! Record, the adoptions: how each watched folder was taken on when the state met it at
//! a UIDVALIDITY it did not know (the first start, or a new UIDVALIDITY). The runner
//! decides what of the mail already there is triaged (`start` in mailtriage.toml); this
//! keeps that decision with the checkpoint it sets, in one transaction, so that a stop
//! in the middle goes on with the same messages and never falls back to all of them.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

use super::{from_json, json, Checkpoint, Store, StoreError};

/// How a folder was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub uid_validity: u32,
    /// The rule, as `start` says it ("new", "since 2days", "unseen", "all").
    pub start: String,
    /// When (RFC 3339).
    pub at: String,
    /// The last UID in the folder then: the checkpoint was set there, and whatever is
    /// above it is new mail.
    pub through: u32,
    /// What of the messages up to `through` is triaged.
    pub take: Take,
    /// Messages up to `through` left alone, and taken.
    pub skipped: u32,
    pub taken: u32,
    /// Mail that arrived (INTERNALDATE) from this time on is the daemon's business,
    /// earlier mail only as far as `take` took it; `None`: all mail is. A later new
    /// UIDVALIDITY takes on only what arrived since.
    pub watched_from: Option<String>,
    /// The old UIDVALIDITY, when the folder was taken on again after it changed.
    #[serde(default)]
    pub resynced_from: Option<u32>,
    /// The last UID of the taken messages handled so far.
    #[serde(default)]
    pub progress: u32,
    /// Every taken message is handled.
    pub done: bool,
}

/// What of the mail already in a folder is triaged when it is taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Take {
    Nothing,
    /// What arrived at `from` (RFC 3339) or later.
    Since {
        from: String,
    },
    /// What no one has read.
    Unseen,
    /// Everything, from UID 1 on, as new mail is (the checkpoint moves with each message).
    All,
}

impl Store {
    /// How the folder `key` was last taken on, if ever.
    pub fn adoption(&self, key: &str) -> Result<Option<Adoption>, StoreError> {
        self.adoptions
            .get(key.as_bytes())?
            .map(|v| from_json("adoption", &v))
            .transpose()
    }

    /// Records how `key` is taken on and, unless it takes everything from UID 1 on, sets
    /// its checkpoint to the last UID it held: one transaction, so the checkpoint never
    /// says "all of it is done" without the record of what is still to take.
    pub fn adopt(
        &self,
        key: &str,
        a: &Adoption,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), StoreError> {
        (&self.adoptions, &self.checkpoints).transaction(|(adoptions, cps)| {
            adoptions.insert(key.as_bytes(), json(a))?;
            if let Some(cp) = checkpoint {
                cps.insert(key.as_bytes(), json(&cp))?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// The taken messages of `key` are handled up to `uid`; all of them when `done`.
    pub fn adoption_progress(&self, key: &str, uid: u32, done: bool) -> Result<(), StoreError> {
        if let Some(mut a) = self.adoption(key)? {
            a.progress = a.progress.max(uid);
            a.done |= done;
            self.adoptions.insert(key.as_bytes(), json(&a))?;
        }
        Ok(())
    }

    /// Moves a checkpoint on: to a higher UID, or to another UIDVALIDITY; never back.
    pub fn advance_checkpoint(&self, key: &str, cp: Checkpoint) -> Result<(), StoreError> {
        let newer = match self.checkpoint(key)? {
            Some(c) if c.uid_validity == cp.uid_validity => cp.last_uid > c.last_uid,
            _ => true,
        };
        if newer {
            self.set_checkpoint(key, cp)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adoption(take: Take) -> Adoption {
        Adoption {
            uid_validity: 7,
            start: "since 2days".into(),
            at: "2026-11-23T10:00:00Z".into(),
            through: 200,
            take,
            skipped: 190,
            taken: 10,
            watched_from: Some("2026-11-21T10:00:00Z".into()),
            resynced_from: None,
            progress: 0,
            done: false,
        }
    }

    #[test]
    fn an_adoption_sets_the_checkpoint_and_older_uids_never_move_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let from = "2026-11-21T10:00:00Z".to_string();
        let a = adoption(Take::Since { from });
        let cp = Checkpoint {
            uid_validity: 7,
            last_uid: 200,
        };
        s.adopt("billing", &a, Some(cp)).unwrap();
        assert_eq!(s.checkpoint("billing").unwrap(), Some(cp));
        // The taken messages are below the checkpoint: handling them keeps it where it is.
        s.advance_checkpoint(
            "billing",
            Checkpoint {
                last_uid: 150,
                ..cp
            },
        )
        .unwrap();
        assert_eq!(s.checkpoint("billing").unwrap(), Some(cp));
        s.adoption_progress("billing", 150, false).unwrap();
        s.adoption_progress("billing", 120, false).unwrap();
        let kept = s.adoption("billing").unwrap().unwrap();
        assert_eq!((kept.progress, kept.done), (150, false));
        s.adoption_progress("billing", 190, true).unwrap();
        assert!(s.adoption("billing").unwrap().unwrap().done);
        // A new UIDVALIDITY replaces the checkpoint, whatever its UID.
        let other = Checkpoint {
            uid_validity: 8,
            last_uid: 3,
        };
        s.advance_checkpoint("billing", other).unwrap();
        assert_eq!(s.checkpoint("billing").unwrap(), Some(other));
        let stored = serde_json::to_value(s.adoption("billing").unwrap()).unwrap();
        assert_eq!(stored["take"]["kind"], "since", "{stored}");
    }

    #[test]
    fn taking_everything_leaves_the_checkpoint_to_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.adopt("billing", &adoption(Take::All), None).unwrap();
        assert_eq!(s.checkpoint("billing").unwrap(), None);
        assert_eq!(s.adoption("billing").unwrap().unwrap().take, Take::All);
    }
}

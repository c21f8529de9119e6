//! Decide, the caps on mail to one address, one domain and everyone: the last guard
//! against backscatter, when a forged sender makes the daemon write to a victim. Every
//! mail to a customer counts (acknowledgement, "added to your request", status mail);
//! plus-tags are folded, so victim+1 ... victim+8 are one address.

use time::OffsetDateTime;

use super::Suppression;
use crate::config::Rules;

/// What was sent lately to the address a mail would go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailCounts {
    /// To this address (plus-tag folded) today (UTC).
    pub address_today: u32,
    /// To its domain in this hour (UTC).
    pub domain_hour: u32,
    /// To anyone in this hour.
    pub all_hour: u32,
}

/// The counters a mail to `to` at `now` moves, in the order of [`MailCounts`].
pub fn cap_keys(to: &str, now: OffsetDateTime) -> Vec<String> {
    let folded = fold(to);
    let domain = folded
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("")
        .to_string();
    let day = format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let hour = format!("{day}T{:02}", now.hour());
    vec![
        format!("{folded}\0{day}"),
        format!("@{domain}\0{hour}"),
        format!("*\0{hour}"),
    ]
}

/// The counters of [`cap_keys`] read back.
pub fn counts(values: &[u32]) -> MailCounts {
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    MailCounts {
        address_today: at(0),
        domain_hour: at(1),
        all_hour: at(2),
    }
}

/// `Victim+tag@Example.com` -> `victim@example.com`.
pub fn fold(address: &str) -> String {
    let lower = address.trim().to_ascii_lowercase();
    match lower.rsplit_once('@') {
        Some((local, domain)) => {
            let local = local.split('+').next().unwrap_or(local);
            format!("{local}@{domain}")
        }
        None => lower,
    }
}

/// The cap one more mail would pass, if any.
pub fn over_cap(rules: &Rules, c: MailCounts) -> Option<Suppression> {
    let co = &rules.company;
    if c.address_today >= co.acks_per_sender_per_day {
        Some(Suppression::DailyCap)
    } else if c.domain_hour >= co.acks_per_domain_per_hour {
        Some(Suppression::DomainCap)
    } else if c.all_hour >= co.acks_per_hour {
        Some(Suppression::HourlyCap)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_tags_fold_and_keys_name_the_day_and_hour() {
        assert_eq!(fold("Victim+7@Third.Example"), "victim@third.example");
        let now = time::macros::datetime!(2026-12-01 09:30 UTC);
        assert_eq!(
            cap_keys("victim+1@third.example", now),
            vec![
                "victim@third.example\x002026-12-01".to_string(),
                "@third.example\x002026-12-01T09".to_string(),
                "*\x002026-12-01T09".to_string(),
            ]
        );
    }

    #[test]
    fn each_cap_holds() {
        let r = crate::config::testing::shipped();
        let co = &r.company;
        let under = MailCounts::default();
        assert_eq!(over_cap(&r, under), None);
        let per_address = MailCounts {
            address_today: co.acks_per_sender_per_day,
            ..under
        };
        assert_eq!(over_cap(&r, per_address), Some(Suppression::DailyCap));
        let per_domain = MailCounts {
            domain_hour: co.acks_per_domain_per_hour,
            ..under
        };
        assert_eq!(over_cap(&r, per_domain), Some(Suppression::DomainCap));
        let all = MailCounts {
            all_hour: co.acks_per_hour,
            ..under
        };
        assert_eq!(over_cap(&r, all), Some(Suppression::HourlyCap));
    }
}

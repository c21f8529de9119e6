//! The few phrases the daemon itself puts into notes and acknowledgements (durations,
//! reasons, history lines), in each language it ships with. Templates in rules.toml
//! carry the rest of the text; anything in a language not listed here falls back to
//! English.

use std::time::Duration;

use crate::decide::{JoinedBy, Suppression, Why};

fn ru(lang: &str) -> bool {
    lang == "ru"
}

/// "4 hours", "1 day 2 hours"; in Russian the genitive that follows "в течение".
pub fn duration(d: Duration, lang: &str) -> String {
    let mins = d.as_secs().div_ceil(60);
    let (days, hours, minutes) = (mins / 1440, (mins % 1440) / 60, mins % 60);
    let mut parts = Vec::new();
    for (n, unit) in [(days, 0), (hours, 1), (minutes, 2)] {
        if n == 0 || parts.len() == 2 {
            continue;
        }
        parts.push(if ru(lang) {
            let one = n % 10 == 1 && n % 100 != 11;
            let word = match (unit, one) {
                (0, true) => "дня",
                (0, false) => "дней",
                (1, true) => "часа",
                (1, false) => "часов",
                (_, true) => "минуты",
                (_, false) => "минут",
            };
            format!("{n} {word}")
        } else {
            let word = ["day", "hour", "minute"][unit];
            format!("{n} {word}{}", if n == 1 { "" } else { "s" })
        });
    }
    if parts.is_empty() {
        parts.push(if ru(lang) {
            "1 минуты".into()
        } else {
            "1 minute".into()
        });
    }
    parts.join(" ")
}

/// Why the request belongs where it went, in a sentence.
pub fn why(w: &Why, mailbox: &str, queue_name: &str, lang: &str) -> String {
    match (w, ru(lang)) {
        (Why::Handover { ticket, from }, false) => {
            format!("staff passed ticket {ticket} from {from} to {queue_name} by writing to {mailbox}")
        }
        (Why::Handover { ticket, from }, true) => {
            format!("сотрудники передали обращение {ticket} из «{from}» в «{queue_name}», написав на {mailbox}")
        }
        (Why::Bounced { ticket, between }, false) => format!(
            "ticket {ticket} was about to go round in circles ({}); it goes to {queue_name} instead",
            between.join(" -> ")
        ),
        (Why::Bounced { ticket, between }, true) => format!(
            "обращение {ticket} пошло бы по кругу ({}); вместо этого оно передано в «{queue_name}»",
            between.join(" → ")
        ),
        (Why::Handled { category }, false) => {
            format!("the rules recognised a {category} request, which {mailbox} handles itself")
        }
        (Why::Handled { category }, true) => {
            format!("правила распознали запрос категории «{category}», его обрабатывают в {mailbox}")
        }
        (Why::Misdirected { category }, false) => format!(
            "the rules recognised a {category} request; such requests belong to {queue_name}, not to {mailbox}"
        ),
        (Why::Misdirected { category }, true) => format!(
            "правила распознали запрос категории «{category}»; такие запросы ведёт «{queue_name}», а не {mailbox}"
        ),
        (Why::UnmatchedKept, false) => format!("no rule recognised it, and {mailbox} keeps such mail"),
        (Why::UnmatchedKept, true) => format!("ни одно правило не подошло, такие письма остаются в {mailbox}"),
        (Why::UnmatchedForwarded, false) => {
            format!("no rule recognised it, and unrecognised mail at {mailbox} goes to {queue_name}")
        }
        (Why::UnmatchedForwarded, true) => format!(
            "ни одно правило не подошло, а нераспознанные письма с {mailbox} передаются в «{queue_name}»"
        ),
        (Why::FollowUp { ticket, joined_by }, false) => format!(
            "a follow-up in ticket {ticket} (found by {}), which {queue_name} owns",
            match joined_by {
                JoinedBy::References => "In-Reply-To/References",
                JoinedBy::SubjectTag => "the ticket tag in the subject",
                JoinedBy::SenderSubject => "the same sender and subject",
            }
        ),
        (Why::FollowUp { ticket, joined_by }, true) => format!(
            "продолжение обращения {ticket} (найдено по {}), которое ведёт «{queue_name}»",
            match joined_by {
                JoinedBy::References => "In-Reply-To/References",
                JoinedBy::SubjectTag => "метке в теме письма",
                JoinedBy::SenderSubject => "тому же отправителю и теме",
            }
        ),
    }
}

pub fn suppression(s: Suppression, lang: &str) -> String {
    if !ru(lang) {
        return s.describe().to_string();
    }
    match s {
        Suppression::OwnMail => "письмо отправлено самим mailtriage",
        Suppression::AlreadyTriaged => "это письмо уже обработано",
        Suppression::AutoSubmitted => "письмо автоматическое (Auto-Submitted)",
        Suppression::NullSender => "пустой адрес отправителя (уведомление или возврат)",
        Suppression::RobotSender => {
            "отправитель — служебный адрес (mailer-daemon, postmaster, noreply, рассылка)"
        }
        Suppression::Precedence => "массовая рассылка (Precedence)",
        Suppression::List => "письмо из списка рассылки (заголовки List-*)",
        Suppression::AutoResponseSuppress => {
            "отправитель просил не отвечать автоматически (X-Auto-Response-Suppress)"
        }
        Suppression::Spam => "сервер пометил письмо как спам",
        Suppression::FollowUp => "клиент уже получил подтверждение по этому обращению",
        Suppression::DailyCap => "отправитель исчерпал дневной лимит подтверждений",
        Suppression::NoAddress => "нет адреса для ответа",
        Suppression::NotARequest => "письмо не является обращением клиента",
        Suppression::FromStaff => "письмо от сотрудника, а не от клиента",
        Suppression::DmarcFail => "проверка DMARC не пройдена (отправитель может быть подделан)",
    }
    .to_string()
}

/// Added to the reason of a message over the size limit.
pub fn oversized(size: usize, limit: usize, lang: &str) -> String {
    let mb = |n: usize| format!("{:.1} MB", n as f64 / (1 << 20) as f64);
    if ru(lang) {
        format!(" (письмо размером {} больше предела {}: его текст не читался, решение принято по заголовкам)", mb(size), mb(limit))
    } else {
        format!(" (the message is {}, over the limit of {}: its body was not read; the decision rests on its headers)", mb(size), mb(limit))
    }
}

pub fn arrived(mailbox: &str, subject: &str, lang: &str) -> String {
    if ru(lang) {
        format!("письмо пришло на {mailbox}: «{subject}»")
    } else {
        format!("message arrived at {mailbox}: \"{subject}\"")
    }
}

pub fn forwarded(queue_name: &str, why: &str, lang: &str) -> String {
    if ru(lang) {
        format!("передано в «{queue_name}»: {why}")
    } else {
        format!("forwarded to {queue_name}: {why}")
    }
}

pub fn kept(queue_name: &str, why: &str, lang: &str) -> String {
    if ru(lang) {
        format!("оставлено у «{queue_name}»: {why}")
    } else {
        format!("kept with {queue_name}: {why}")
    }
}

pub fn acknowledged(to: &str, queue_name: &str, response_time: &str, lang: &str) -> String {
    if ru(lang) {
        format!("клиенту ({to}) отправлено подтверждение: ведёт «{queue_name}», ответ в течение {response_time}")
    } else {
        format!("acknowledgement sent to {to}: {queue_name} has it, answer within {response_time}")
    }
}

pub fn not_acknowledged(reason: &str, lang: &str) -> String {
    if ru(lang) {
        format!("подтверждение не отправлено: {reason}")
    } else {
        format!("no acknowledgement: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(duration(h(4), "en"), "4 hours");
        assert_eq!(duration(h(1), "en"), "1 hour");
        assert_eq!(duration(h(24), "en"), "1 day");
        assert_eq!(duration(h(26), "en"), "1 day 2 hours");
        assert_eq!(duration(Duration::from_secs(1800), "en"), "30 minutes");
        assert_eq!(duration(h(4), "ru"), "4 часов");
        assert_eq!(duration(h(1), "ru"), "1 часа");
        assert_eq!(duration(h(21), "ru"), "21 часа");
        assert_eq!(duration(h(24), "ru"), "1 дня");
        assert_eq!(duration(h(48), "ru"), "2 дней");
        assert_eq!(duration(Duration::from_secs(1800), "ru"), "30 минут");
    }
}

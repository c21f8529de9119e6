//! The few phrases the daemon itself puts into notes and acknowledgements (durations,
//! reasons, history lines), in each language it ships with. Templates in rules.toml
//! carry the rest of the text; anything in a language not listed here falls back to
//! English.

use std::time::Duration;

use crate::config::{Rules, TemplateContext};
use crate::decide::{JoinedBy, Suppression, Why};
use crate::ticket::{Event, EventKind, MailKind, ResolvedHow, Role, Undelivered, Writer};

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

/// A moment as the customer reads a promise: "Monday 30 November, 12:00 (MSK)",
/// "понедельник, 30 ноября, 12:00 (MSK)", on the clock of `zone` (the queue's).
pub fn moment(t: time::OffsetDateTime, zone: &crate::clock::Zone, lang: &str) -> String {
    const DAYS_EN: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    const DAYS_RU: [&str; 7] = [
        "понедельник",
        "вторник",
        "среда",
        "четверг",
        "пятница",
        "суббота",
        "воскресенье",
    ];
    const MONTHS_EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const MONTHS_RU: [&str; 12] = [
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ];
    let local = zone.local(t);
    let weekday = local.weekday().to_monday_zero_offset() as usize;
    let month = (local.month() - 1) as usize;
    let (day, hour, minute) = (local.day(), local.hour(), local.minute());
    let label = zone.label_at(t);
    if ru(lang) {
        let (w, m) = (DAYS_RU[weekday], MONTHS_RU[month]);
        format!("{w}, {day} {m}, {hour:02}:{minute:02} ({label})")
    } else {
        let (w, m) = (DAYS_EN[weekday], MONTHS_EN[month]);
        format!("{w} {day} {m}, {hour:02}:{minute:02} ({label})")
    }
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
        (Why::AlreadyThere { address }, false) => format!(
            "the customer sent it to {address} as well, which {queue_name} reads: that copy is the one to answer, so this one is not forwarded"
        ),
        (Why::AlreadyThere { address }, true) => format!(
            "клиент отправил его и на {address}, который читает «{queue_name}»: отвечать нужно на ту копию, эту не пересылаем"
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
        Suppression::DailyCap => "адрес исчерпал дневной лимит писем от mailtriage",
        Suppression::DomainCap => "домен адреса исчерпал часовой лимит писем от mailtriage",
        Suppression::HourlyCap => "mailtriage исчерпал часовой лимит писем клиентам",
        Suppression::ManySenders => {
            "в письме несколько заголовков From или Sender: автор не ясен (признак подделки)"
        }
        Suppression::Unaligned => {
            "адрес конверта не из домена From, и ни один доверенный сервер их не подтвердил"
        }
        Suppression::NoAddress => "нет адреса для ответа",
        Suppression::NotARequest => "письмо не является обращением клиента",
        Suppression::FromStaff => "письмо от сотрудника, а не от клиента",
        Suppression::DmarcFail => "проверка DMARC не пройдена (отправитель может быть подделан)",
        Suppression::AutoReply => "письмо — автоответ (Precedence: auto_reply, X-Autoreply)",
        Suppression::Report => "письмо — уведомление о доставке или прочтении (multipart/report)",
    }
    .to_string()
}

/// Added to the reason of a message that was addressed to other watched mailboxes too.
pub fn also_sent(to: &[String], lang: &str) -> String {
    if ru(lang) {
        format!(" (письмо отправлено также на {})", and_list(to, lang))
    } else {
        format!(" (the message was also sent to {})", and_list(to, lang))
    }
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

/// Added to the reason of a message of more than `max` parts.
pub fn too_many_parts(max: usize, lang: &str) -> String {
    if ru(lang) {
        format!(
            " (в письме больше {max} частей: его текст не читался, решение принято по заголовкам)"
        )
    } else {
        format!(" (the message has more than {max} parts: its body was not read; the decision rests on its headers)")
    }
}

/// The note of a mail that carries only the original's header: how big the original
/// is, the limit, and where the whole message lies (`place`: mailbox, folder, UID).
pub fn not_attached(size: usize, limit: usize, place: &str, lang: &str) -> String {
    let mb = |n: usize| format!("{:.2} MB", n as f64 / (1 << 20) as f64);
    if ru(lang) {
        format!(" (исходное письмо, {}, больше предела вложений {}: приложен только его заголовок, а само письмо лежит в {place})", mb(size), mb(limit))
    } else {
        format!(" (the original, {}, is over the limit of {} for attachments: only its header is attached, and the whole message lies in {place})", mb(size), mb(limit))
    }
}

/// Where a message lies on the server, for a note: "billing@example.test, folder
/// INBOX, UID 42 (UIDVALIDITY 7)"; the address alone for a message read from a file.
pub fn place(address: &str, folder: Option<&str>, uid: Option<(u32, u32)>, lang: &str) -> String {
    match (folder, uid) {
        (Some(f), Some((v, u))) if ru(lang) => {
            format!("{address}, папка {f}, UID {u} (UIDVALIDITY {v})")
        }
        (Some(f), Some((v, u))) => format!("{address}, folder {f}, UID {u} (UIDVALIDITY {v})"),
        _ => address.to_string(),
    }
}

/// The note of the escalation copy of a forwarded message: the original travels once,
/// with the forward.
pub fn original_with_forward(queue: &str, lang: &str) -> String {
    if ru(lang) {
        format!(" (исходное письмо приложено к пересылке в {queue}; к этой копии приложен только его заголовок)")
    } else {
        format!(" (the original is attached to the forward to {queue}; this copy carries only its header)")
    }
}

/// A queue's display name in `lang`, or its key when the queue is not declared.
pub fn queue_name<'r>(rules: &'r Rules, queue: &'r str, lang: &str) -> &'r str {
    rules
        .queues
        .get(queue)
        .map(|q| q.name_in(lang))
        .unwrap_or(queue)
}

/// "billing, support and billing".
pub fn and_list(items: &[String], lang: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!(
            "{} {} {last}",
            rest.join(", "),
            if ru(lang) { "и" } else { "and" }
        ),
    }
}

/// One history event in words, in the ticket's language.
pub fn history_text(rules: &Rules, e: &Event, lang: &str) -> String {
    let qn = |q: &str| queue_name(rules, q, lang).to_string();
    if ru(lang) {
        history_ru(&e.what, &qn)
    } else {
        history_en(&e.what, &qn)
    }
}

/// One history event for an operator (`tickets show`), in English. Without the rules a
/// queue is shown by its key; in a shadow ticket the mails are what would have been sent.
pub fn operator_history(rules: Option<&Rules>, e: &Event, shadow: bool) -> String {
    let qn = |q: &str| match rules {
        Some(r) => queue_name(r, q, "en").to_string(),
        None => q.to_string(),
    };
    shadow
        .then(|| would_en(&e.what, &qn))
        .flatten()
        .unwrap_or_else(|| history_en(&e.what, &qn))
}

/// A shadow ticket's event that stands for a mail: what would have been sent.
fn would_en(what: &EventKind, qn: &dyn Fn(&str) -> String) -> Option<String> {
    Some(match what {
        EventKind::Forwarded { queue, why } => format!("would forward to {}: {why}", qn(queue)),
        EventKind::Acknowledged {
            to,
            queue,
            response_time,
        } => format!(
            "would acknowledge to {to}: {} has it, answer within {response_time}",
            qn(queue)
        ),
        EventKind::Bounced { between, to } => {
            format!(
                "bounced ({}): would send to {}",
                arrows(between, qn),
                qn(to)
            )
        }
        EventKind::Flagged { reasons, to } => {
            format!(
                "red flags: {}; would copy to {}",
                reasons.join(", "),
                qn(to)
            )
        }
        EventKind::Reminded { queue } => {
            format!("would remind {}: the customer is waiting", qn(queue))
        }
        EventKind::Escalated { to } => format!("no answer in time: would escalate to {}", qn(to)),
        EventKind::StatusSent { to } => {
            format!("would send a status mail to {to}: still being handled")
        }
        EventKind::AddedAck { to } => {
            format!("would tell {to} the message was added to the ticket")
        }
        _ => return None,
    })
}

/// The role of the writers whose mail alone answers, promises or waits (`decide::roles`).
const STAFF: Role = Role::Staff;

/// A writer as the history names them: "ivan@client.example, customer", or with why
/// for anyone but the customer ("petr@client.example, customer-side: the same
/// organisation as the customer of T-1001").
fn writer_words(w: &Writer) -> String {
    match (w.role, w.why.is_empty()) {
        (Role::Customer, _) | (_, true) => format!("{}, {}", w.address, w.role),
        _ => format!("{}, {}: {}", w.address, w.role, w.why),
    }
}

/// A follow-up's writer: the one kept with it, else the words a history written before
/// roles were kept has (only for the customer's colleagues).
fn follow_up_writer(writer: &Option<Writer>, by: &Option<String>) -> Option<String> {
    writer.as_ref().map(writer_words).or_else(|| by.clone())
}

fn history_en(what: &EventKind, qn: &dyn Fn(&str) -> String) -> String {
    match what {
        EventKind::Arrived {
            mailbox,
            subject,
            from,
            ..
        } => format!(
            "message arrived at {mailbox}: \"{subject}\"{}",
            from.as_ref()
                .map(|w| format!(" (from {})", writer_words(w)))
                .unwrap_or_default()
        ),
        EventKind::Forwarded { queue, why } => format!("forwarded to {}: {why}", qn(queue)),
        EventKind::Kept { queue, why } => format!("kept with {}: {why}", qn(queue)),
        EventKind::Acknowledged {
            to,
            queue,
            response_time,
        } => format!(
            "acknowledgement sent to {to}: {} has it, answer within {response_time}",
            qn(queue)
        ),
        EventKind::NotAcknowledged { reason } => format!("no acknowledgement: {reason}"),
        EventKind::FollowUp {
            number,
            mailbox,
            subject,
            writer,
            by,
        } => format!(
            "follow-up {number} arrived at {mailbox}: \"{subject}\"{}",
            follow_up_writer(writer, by)
                .map(|b| format!(" (written by {b})"))
                .unwrap_or_default()
        ),
        EventKind::Names { ticket, by } => {
            format!("{by} named {ticket} but is not on its customer's side: a ticket of its own")
        }
        EventKind::HandedOver { from, to } => {
            format!("{} handed the ticket over to {}", qn(from), qn(to))
        }
        EventKind::Bounced { between, to } => {
            format!("bounced ({}): sent to {}", arrows(between, qn), qn(to))
        }
        EventKind::Flagged { reasons, to } => {
            format!("red flags: {}; copy to {}", reasons.join(", "), qn(to))
        }
        EventKind::Incident { id } => format!("linked to incident {id}"),
        EventKind::Promised { by, text } => format!("{by} ({STAFF}) promised: {text}"),
        EventKind::Answered { by } => format!("{by} ({STAFF}) answered the customer"),
        EventKind::Waiting { by, says } => format!(
            "{by} ({STAFF}) waits for the customer: \"{says}\"; the clock stops until they write"
        ),
        EventKind::Reminded { queue } => {
            format!("reminder sent to {}: the customer is waiting", qn(queue))
        }
        EventKind::Escalated { to } => format!("no answer in time: escalated to {}", qn(to)),
        EventKind::StatusSent { to } => format!("status mail sent to {to}: still being handled"),
        EventKind::AddedAck { to } => format!("{to} told the message was added to the ticket"),
        EventKind::Reopened => "the ticket was opened before mailtriage's state was lost and \
             started afresh; its earlier history is not known here"
            .into(),
        EventKind::AutoReply {
            from,
            subject,
            says,
        } => format!("automatic reply from {from}: \"{subject}\": {says}"),
        e @ EventKind::Undelivered { .. } => undelivered_line(e, qn, "en"),
        EventKind::Retried { mail, to } => format!(
            "the refused {} to {to} was put back in the outbox, to be sent again",
            mail_kind(*mail, "en")
        ),
        EventKind::Dropped { mail, to } => format!(
            "the refused {} to {to} was dropped for good",
            mail_kind(*mail, "en")
        ),
        e @ (EventKind::Resolved { .. }
        | EventKind::ReopenedByReply { .. }
        | EventKind::Follows { .. }
        | EventKind::FollowsRemoved { .. }) => lifecycle_line(e, "en"),
    }
}

fn history_ru(what: &EventKind, qn: &dyn Fn(&str) -> String) -> String {
    match what {
        EventKind::Arrived {
            mailbox,
            subject,
            from,
            ..
        } => format!(
            "письмо пришло на {mailbox}: «{subject}»{}",
            from.as_ref()
                .map(|w| format!(" (от {})", writer_words(w)))
                .unwrap_or_default()
        ),
        EventKind::Forwarded { queue, why } => format!("передано в «{}»: {why}", qn(queue)),
        EventKind::Kept { queue, why } => format!("оставлено у «{}»: {why}", qn(queue)),
        EventKind::Acknowledged {
            to,
            queue,
            response_time,
        } => format!(
            "клиенту ({to}) отправлено подтверждение: ведёт «{}», ответ в течение {response_time}",
            qn(queue)
        ),
        EventKind::NotAcknowledged { reason } => format!("подтверждение не отправлено: {reason}"),
        EventKind::FollowUp {
            number,
            mailbox,
            subject,
            writer,
            by,
        } => format!(
            "продолжение {number} пришло на {mailbox}: «{subject}»{}",
            follow_up_writer(writer, by)
                .map(|b| format!(" (написал(а) {b})"))
                .unwrap_or_default()
        ),
        EventKind::Names { ticket, by } => {
            format!("{by} ссылается на {ticket}, но не со стороны его клиента: отдельное обращение")
        }
        EventKind::HandedOver { from, to } => {
            format!("«{}» передало обращение в «{}»", qn(from), qn(to))
        }
        EventKind::Bounced { between, to } => format!(
            "ходило по кругу ({}): передано в «{}»",
            arrows(between, qn),
            qn(to)
        ),
        EventKind::Flagged { reasons, to } => format!(
            "тревожные признаки: {}; копия для «{}»",
            reasons.join(", "),
            qn(to)
        ),
        EventKind::Incident { id } => format!("связано с инцидентом {id}"),
        EventKind::Promised { by, text } => format!("{by} ({STAFF}) обещал(а): {text}"),
        EventKind::Answered { by } => format!("{by} ({STAFF}) ответил(а) клиенту"),
        EventKind::Waiting { by, says } => format!(
            "{by} ({STAFF}) ждёт ответа клиента: «{says}»; срок стоит, пока клиент не напишет"
        ),
        EventKind::Reminded { queue } => {
            format!("напоминание для «{}»: клиент ждёт ответа", qn(queue))
        }
        EventKind::Escalated { to } => {
            format!("нет ответа вовремя: передано руководителю («{}»)", qn(to))
        }
        EventKind::StatusSent { to } => {
            format!("клиенту ({to}) сообщено, что обращение ещё в работе")
        }
        EventKind::AddedAck { to } => {
            format!("клиенту ({to}) сообщено, что письмо добавлено к обращению")
        }
        EventKind::Reopened => "обращение открыто до того, как состояние mailtriage было \
             потеряно и создано заново; прежняя история здесь не известна"
            .into(),
        EventKind::AutoReply {
            from,
            subject,
            says,
        } => format!("автоответ от {from}: «{subject}»: {says}"),
        e @ EventKind::Undelivered { .. } => undelivered_line(e, qn, "ru"),
        EventKind::Retried { mail, to } => format!(
            "недоставленное письмо ({} для {to}) снова поставлено в очередь на отправку",
            mail_kind_nominative(*mail)
        ),
        EventKind::Dropped { mail, to } => format!(
            "недоставленное письмо ({} для {to}) удалено навсегда",
            mail_kind_nominative(*mail)
        ),
        e @ (EventKind::Resolved { .. }
        | EventKind::ReopenedByReply { .. }
        | EventKind::Follows { .. }
        | EventKind::FollowsRemoved { .. }) => lifecycle_line(e, "ru"),
    }
}

/// A ticket's resolution, its reopening, or the ticket it follows, in the history.
fn lifecycle_line(e: &EventKind, lang: &str) -> String {
    let ru = ru(lang);
    match e {
        EventKind::Resolved { by, how, note } => {
            let said = match note.as_str() {
                "" => String::new(),
                n => format!(": {n}"),
            };
            match (how, ru) {
                (ResolvedHow::Mail, false) => format!("resolved by {by}{said}"),
                (ResolvedHow::Mail, true) => format!("решено, {by}{said}"),
                (ResolvedHow::Command, false) => {
                    format!("resolved by {by} (mailtriage tickets resolve){said}")
                }
                (ResolvedHow::Command, true) => {
                    format!("решено, {by} (mailtriage tickets resolve){said}")
                }
                (ResolvedHow::Quiet, false) => {
                    "resolved automatically: the customer did not write again after the answer"
                        .into()
                }
                (ResolvedHow::Quiet, true) => {
                    "решено автоматически: после ответа клиент больше не писал".into()
                }
            }
        }
        EventKind::ReopenedByReply { by, resolved_at } => {
            let when = crate::when::human(resolved_at);
            match ru {
                false => format!("reopened: {by} wrote again after it was resolved on {when}"),
                true => format!(
                    "открыто снова: {by} написал(а) после того, как обращение было решено {when}"
                ),
            }
        }
        EventKind::Follows {
            ticket,
            resolved_at,
        } => {
            let when = crate::when::human(resolved_at);
            match ru {
                false => format!("follows {ticket}, resolved on {when}: the customer wrote again after the reopen window"),
                true => format!("продолжает {ticket}, решённое {when}: клиент написал снова после окна повторного открытия"),
            }
        }
        EventKind::FollowsRemoved { ticket } => match ru {
            false => format!(
                "follows {ticket}: the customer wrote again to a ticket resolved so long ago \
                 that mailtriage no longer keeps it (threading.retention); its history is in \
                 the queue's mail"
            ),
            true => format!(
                "продолжает {ticket}: клиент написал снова в обращение, решённое так давно, \
                 что mailtriage его уже не хранит (threading.retention); его история — в \
                 почте очереди"
            ),
        },
        _ => String::new(),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// An undelivered mail in the history: what did not arrive, the server's words, and who
/// was told.
fn undelivered_line(e: &EventKind, qn: &dyn Fn(&str) -> String, lang: &str) -> String {
    let EventKind::Undelivered {
        mail,
        to,
        reason,
        told,
        report,
    } = e
    else {
        return String::new();
    };
    let kind = some_mail(*mail, lang);
    let told = match (told, ru(lang)) {
        (Some(q), false) => format!("{} was told", qn(q)),
        (Some(q), true) => format!("сообщено: «{}»", qn(q)),
        (None, false) => "no queue could be told".into(),
        (None, true) => "сообщить было некому".into(),
    };
    match (report, ru(lang)) {
        (false, false) => format!("the mail server refused the {kind} to {to} for good ({reason}): it was not delivered; {told}"),
        (false, true) => format!("почтовый сервер окончательно отказался принять {kind} для {to} ({reason}): письмо не доставлено; {told}"),
        (true, false) => format!("the {kind} to {to} could not be delivered: {reason}; {told}"),
        (true, true) => format!("{} для {to} не доставлено: {reason}; {told}", capitalised(some_mail_nominative(*mail))),
    }
}

/// A mail's kind as the object of a sentence, "mail" when it is not known.
fn some_mail(kind: Option<MailKind>, lang: &str) -> &'static str {
    match (kind, ru(lang)) {
        (Some(k), _) => mail_kind(k, lang),
        (None, false) => "mail",
        (None, true) => "письмо",
    }
}

/// A mail's kind in Russian as a name on its own, "письмо" when it is not known.
fn some_mail_nominative(kind: Option<MailKind>) -> &'static str {
    kind.map_or("письмо", mail_kind_nominative)
}

/// A kind of mail the daemon sends, as the object of a sentence ("refused the forward").
pub fn mail_kind(kind: MailKind, lang: &str) -> &'static str {
    match (kind, ru(lang)) {
        (MailKind::Forward, false) => "forward",
        (MailKind::Forward, true) => "пересылку",
        (MailKind::Acknowledgement, false) => "acknowledgement",
        (MailKind::Acknowledgement, true) => "подтверждение",
        (MailKind::Added, false) => "\"added to your request\" mail",
        (MailKind::Added, true) => "письмо «добавлено к обращению»",
        (MailKind::Escalation, false) => "escalation copy",
        (MailKind::Escalation, true) => "копию для руководителя",
        (MailKind::Reminder, false) => "reminder",
        (MailKind::Reminder, true) => "напоминание",
        (MailKind::Status, false) => "status mail",
        (MailKind::Status, true) => "письмо о статусе",
        (MailKind::Undelivered, false) => "note about an undelivered mail",
        (MailKind::Undelivered, true) => "уведомление о недоставленном письме",
    }
}

/// A kind of mail the daemon sends, in Russian, as a name on its own ("пересылка").
fn mail_kind_nominative(kind: MailKind) -> &'static str {
    match kind {
        MailKind::Forward => "пересылка",
        MailKind::Acknowledgement => "подтверждение",
        MailKind::Added => "письмо «добавлено к обращению»",
        MailKind::Escalation => "копия для руководителя",
        MailKind::Reminder => "напоминание",
        MailKind::Status => "письмо о статусе",
        MailKind::Undelivered => "уведомление о недоставленном письме",
    }
}

/// The subject of the note about an undelivered mail (the ticket's tag goes in front).
pub fn undelivered_subject(u: &Undelivered, lang: &str) -> String {
    let kind = some_mail(u.mail, lang);
    match ru(lang) {
        true => format!("Письмо не доставлено: {kind} для {}", u.to),
        false => format!("Mail not delivered: {kind} to {}", u.to),
    }
}

/// The note about an undelivered mail: what did not arrive and why, the ticket, what to
/// do (send it again when the server refused it, else reach the recipient another way),
/// and the ticket's history so far.
pub fn undelivered_text(u: &Undelivered, ctx: &TemplateContext, lang: &str) -> String {
    let ru = ru(lang);
    let kind = some_mail(u.mail, lang);
    let customer = match ctx.customer_name.as_str() {
        "" => ctx.customer.clone(),
        name => format!("{name} <{}>", ctx.customer),
    };
    let (ticket, to, reason) = (&ctx.ticket, &u.to, &u.reason);
    let id = u.message_id.as_deref().unwrap_or("?");
    let how = match (u.retry, ru) {
        (Some(_), false) => format!("The mail server refused a mail of ticket {ticket} for good: it did not reach {to}."),
        (Some(_), true) => format!("Почтовый сервер окончательно отказался принять письмо по обращению {ticket}: оно не дошло до {to}."),
        (None, false) => format!("A delivery report came back: a mail of ticket {ticket} did not reach {to}."),
        (None, true) => format!("Пришёл отчёт о недоставке: письмо по обращению {ticket} не дошло до {to}."),
    };
    let to_customer = u.mail.is_some_and(MailKind::to_customer);
    let what_to_do = match (u.retry, to_customer, ru) {
        (Some(n), _, false) => format!("Mend the address (or the mailbox), then `mailtriage outbox retry {n}` sends the mail again."),
        (Some(n), _, true) => format!("Исправьте адрес (или ящик), затем `mailtriage outbox retry {n}` отправит письмо ещё раз."),
        (None, true, false) => "The customer did not get this mail: check the address, and reach them another way if need be.".into(),
        (None, true, true) => "Клиент этого письма не получил: проверьте адрес и свяжитесь с ним иначе, если нужно.".into(),
        (None, false, false) => "Check that address (a queue's address is in rules.toml); the mail is not sent again by itself.".into(),
        (None, false, true) => "Проверьте этот адрес (адреса очередей указаны в rules.toml); само письмо повторно не отправляется.".into(),
    };
    let mut text = if ru {
        format!(
            "{how}\n\nПисьмо:    {kind} для {to} ({id})\nОтвет:     {reason}\nКлиент:    {customer}\nТема:      {subject}\nВедёт:     {queue}\n\n{what_to_do}\n\nИстория:\n",
            subject = ctx.subject, queue = ctx.queue_name,
        )
    } else {
        format!(
            "{how}\n\nMail:      {kind} to {to} ({id})\nAnswer:    {reason}\nCustomer:  {customer}\nSubject:   {subject}\nOwned by:  {queue}\n\n{what_to_do}\n\nHistory:\n",
            subject = ctx.subject, queue = ctx.queue_name,
        )
    };
    for h in &ctx.history {
        text.push_str(&format!("  {}  {}\n", h.at, h.text));
    }
    text
}

/// The queues a ticket went between, by name: "Billing → Support".
fn arrows(queues: &[String], qn: &dyn Fn(&str) -> String) -> String {
    queues.iter().map(|q| qn(q)).collect::<Vec<_>>().join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promise_reads_on_the_queues_clock() {
        let t = crate::when::parse("2026-03-30T10:00:00Z").unwrap();
        let berlin = crate::clock::Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(moment(t, &berlin, "en"), "Monday 30 March, 12:00 (CEST)");
        let moscow = crate::clock::Zone::parse("Europe/Moscow").unwrap();
        assert_eq!(
            moment(t, &moscow, "ru"),
            "понедельник, 30 марта, 13:00 (MSK)"
        );
        let utc = crate::clock::Zone::utc();
        assert_eq!(moment(t, &utc, "en"), "Monday 30 March, 10:00 (UTC)");
    }

    #[test]
    fn every_message_in_a_history_names_its_writer_with_their_role() {
        let qn = |q: &str| q.to_string();
        let ivan = Writer {
            address: "ivan@client.example".into(),
            role: Role::Customer,
            why: "writes a new request: its customer".into(),
        };
        let arrived = EventKind::Arrived {
            mailbox: "support@example.test".into(),
            message_id: None,
            subject: "Site down".into(),
            from: Some(ivan.clone()),
        };
        assert_eq!(
            history_en(&arrived, &qn),
            "message arrived at support@example.test: \"Site down\" (from ivan@client.example, customer)"
        );
        let petr = Writer {
            address: "petr@client.example".into(),
            role: Role::CustomerSide,
            why: "the same organisation as the customer of T-1001 (client.example)".into(),
        };
        let follow_up = |writer: Option<Writer>, by: Option<&str>| EventKind::FollowUp {
            number: 2,
            mailbox: "billing@example.test".into(),
            subject: "Re: Site down".into(),
            writer,
            by: by.map(str::to_string),
        };
        assert!(history_en(&follow_up(Some(petr), None), &qn).ends_with(
            "(written by petr@client.example, customer-side: the same organisation as the customer of T-1001 (client.example))"
        ));
        assert!(history_ru(&follow_up(Some(ivan), None), &qn)
            .ends_with("(написал(а) ivan@client.example, customer)"));
        // A line kept before roles were: its words as they were.
        assert!(history_en(
            &follow_up(None, Some("bob@client.example, a colleague")),
            &qn
        )
        .ends_with("(written by bob@client.example, a colleague)"));
        let answered = EventKind::Answered {
            by: "anna@example.test".into(),
        };
        assert_eq!(
            history_en(&answered, &qn),
            "anna@example.test (staff) answered the customer"
        );
    }

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

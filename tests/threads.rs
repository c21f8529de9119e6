//! Threads on the real mail stack: follow-ups go to the owning queue with the history,
//! tickets never ping-pong, red flags escalate, incidents reach acknowledgements while
//! active, promises reach later notes, and unanswered tickets get reminders and one
//! status mail.

mod support;

use std::time::Duration;

use support::cli::cli;
use support::lab::Lab;
use support::mail::Mail;
use support::{shipped_rules, FetchedMail};

/// The daemon's mails of `kind` about `ticket` among `ms`.
fn of_ticket<'a>(ms: &'a [FetchedMail], ticket: &str, kind: &str) -> Vec<&'a FetchedMail> {
    ms.iter()
        .filter(|m| {
            m.kind().as_deref() == Some(kind)
                && m.header("X-Mailtriage")
                    .is_some_and(|h| h.contains(&format!("ticket={ticket};")))
        })
        .collect()
}

/// Waits until `user`'s INBOX holds a mail of `kind` about `ticket`; returns the INBOX.
fn wait_of_ticket(lab: &Lab, user: &str, ticket: &str, kind: &str) -> Vec<FetchedMail> {
    lab.wait_inbox(user, |ms| !of_ticket(ms, ticket, kind).is_empty())
}

/// How many mails of `kind` about `ticket` are in `user`'s INBOX.
fn count_of_ticket(lab: &Lab, user: &str, ticket: &str, kind: &str) -> usize {
    of_ticket(&lab.inbox(user), ticket, kind).len()
}

/// The customer writes "Website is down" to `mailbox`; returns the acknowledgement, once
/// it arrived (its ticket and Message-ID are what a reply refers to).
fn site_down(lab: &Lab, customer: &str, mailbox: &str, id: &str) -> FetchedMail {
    lab.send_mail(
        &Mail::request(customer, mailbox, id)
            .subject("Website is down")
            .body("Nothing loads."),
    );
    lab.wait_ack(customer, id)
}

#[test]
fn reply_to_the_ack_reaches_the_owner_without_classification_and_with_history() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "first-1@example.test";
    let customer = "customer1@example.test";
    lab.send_mail(
        &Mail::request(customer, "billing@example.test", id)
            .subject("Website is down")
            .body("Error 500 on every page."),
    );
    let ack = lab.wait_ack(customer, id);
    let ticket = ack.ticket();
    let ack_id = ack.message_id();

    // The customer answers the acknowledgement, again to billing@, with billing words:
    // it is a follow-up of a support ticket, not a new billing request.
    lab.send_mail(
        &Mail::request(customer, "billing@example.test", "second-1@example.test")
            .in_reply_to(&ack_id)
            .subject(&format!("Re: [#{ticket}] We have received your request"))
            .body("Also, the invoice page shows the same error. Please refund if this takes long."),
    );
    let fwd = lab.wait_forward("support@example.test", "second-1@example.test");
    assert_eq!(fwd.ticket(), ticket);
    let note = fwd.text();
    assert!(note.contains(&format!("follow-up 1 of {ticket}")), "{note}");
    assert!(
        !note.contains("rule \""),
        "a follow-up is not classified again:\n{note}"
    );
    assert!(
        note.contains("message arrived at billing@example.test"),
        "history in the note:\n{note}"
    );
    assert!(note.contains("forwarded to Technical support"), "{note}");
    assert!(
        note.contains("acknowledgement sent to customer1@example.test"),
        "{note}"
    );
    // Nothing went to billing's queue as a new request.
    assert!(lab
        .inbox("billing@example.test")
        .iter()
        .all(|m| m.kind().is_none() || m.ticket() == ticket));

    // One acknowledgement and one "added to your request", never a second acknowledgement.
    lab.send_mail(
        &Mail::request(customer, "support@example.test", "third-1@example.test")
            .in_reply_to(&ack_id)
            .subject(&format!("Re: [#{ticket}] more"))
            .body("One more detail."),
    );
    lab.wait_flagged("support@example.test", "third-1@example.test", "$Triaged");
    lab.drain();
    let inbox = lab.inbox(customer);
    assert_eq!(
        of_ticket(&inbox, &ticket, "acknowledgement").len(),
        1,
        "one acknowledgement"
    );
    assert_eq!(
        of_ticket(&inbox, &ticket, "added").len(),
        1,
        "one 'added' mail per window"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_ticket_sent_back_by_its_queue_lands_with_the_supervisor() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "pingpong-1@example.test";
    lab.send_mail(
        &Mail::request("customer2@example.test", "billing@example.test", id)
            .subject("Сайт не работает")
            .body("Ошибка 500 с утра."),
    );
    let ticket = lab.wait_forward("support@example.test", id).ticket();

    // Support thinks it is billing's and forwards it back to billing@.
    lab.send_mail(
        &Mail::request(
            "support@example.test",
            "billing@example.test",
            "back-1@example.test",
        )
        .subject(&format!("Fwd: [#{ticket}] Сайт не работает"))
        .body("Это к вам, по оплате."),
    );
    let sup = wait_of_ticket(&lab, "supervisor@example.test", &ticket, "forward");
    let note = of_ticket(&sup, &ticket, "forward")[0].text();
    assert!(
        note.contains("ЭСКАЛАЦИЯ")
            && note.contains("Бухгалтерия")
            && note.contains("Техническая поддержка"),
        "{note}"
    );
    assert!(
        note.contains("История"),
        "the whole history goes with it:\n{note}"
    );
    lab.drain();
    std::thread::sleep(Duration::from_secs(1));
    // Not back and forth: support got the ticket once, billing never as a forward.
    assert_eq!(
        count_of_ticket(&lab, "support@example.test", &ticket, "forward"),
        1
    );
    assert!(of_ticket(&lab.inbox("billing@example.test"), &ticket, "forward").is_empty());
    assert!(daemon.stop().success());
}

#[test]
fn a_profane_message_reaches_queue_and_supervisor_and_the_customer_gets_a_polite_ack() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "angry-1@example.test";
    lab.send_mail(
        &Mail::request("customer3@example.test", "billing@example.test", id)
            .subject("Website is down")
            .body("You idiots broke the site again. Error 500 everywhere."),
    );
    let fwd = lab.wait_forward("support@example.test", id);
    let ticket = fwd.ticket();
    let subject = fwd.subject();
    assert!(subject.starts_with("[ESCALATED]"), "{subject}");
    assert_eq!(fwd.header("X-Priority").as_deref(), Some("1 (Highest)"));

    let sup = wait_of_ticket(&lab, "supervisor@example.test", &ticket, "forward");
    let note = of_ticket(&sup, &ticket, "forward")[0].text();
    assert!(
        note.contains("RED FLAG: profanity") && note.contains("idiots"),
        "reason and matched text:\n{note}"
    );

    let ack = lab.wait_ack("customer3@example.test", id).text();
    assert!(
        ack.contains("Technical support") && ack.contains(&ticket),
        "{ack}"
    );
    assert!(
        !ack.to_lowercase().contains("idiot") && !ack.contains("RED FLAG"),
        "a normal, polite ack:\n{ack}"
    );
    assert!(daemon.stop().success());
}

/// Two incidents: INC-LIVE on checkout, active for three more hours, and INC-OVER on
/// login, ended five minutes ago.
fn incidents() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    format!(
        r#"
[[incidents]]
id = "INC-LIVE"
subject = '(?i)checkout'
since = "{since}"
next_update = "{next}"
until = "{future}"
text = {{ en = "Checkout is failing since this morning; engineers are on it.", ru = "Оплата не проходит с утра." }}

[[incidents]]
id = "INC-OVER"
subject = '(?i)login'
since = "{since}"
until = "{past}"
text = {{ en = "Login problems are being fixed.", ru = "Проблемы со входом устраняются." }}
"#,
        since = fmt(now - time::Duration::hours(2)),
        next = fmt(now + time::Duration::hours(1)),
        future = fmt(now + time::Duration::hours(3)),
        past = fmt(now - time::Duration::minutes(5)),
    )
}

#[test]
fn an_incident_notice_is_in_acks_while_active_and_not_after() {
    let lab = Lab::setup()
        .rules(&(shipped_rules() + &incidents()))
        .start();
    let daemon = lab.daemon();

    lab.send_mail(
        &Mail::request(
            "customer4@example.test",
            "support@example.test",
            "inc-1@example.test",
        )
        .subject("Checkout error 500")
        .body("The checkout is broken."),
    );
    lab.send_mail(
        &Mail::request(
            "customer5@example.test",
            "support@example.test",
            "inc-2@example.test",
        )
        .subject("Login error")
        .body("I cannot log in, error."),
    );
    let a = lab.wait_ack("customer4@example.test", "inc-1@example.test");
    let b = lab.wait_ack("customer5@example.test", "inc-2@example.test");
    let a = a.text();
    let b = b.text();
    assert!(
        a.contains("Checkout is failing since this morning") && a.contains("Next update by"),
        "active incident in the ack:\n{a}"
    );
    assert!(
        !b.contains("Login problems"),
        "an ended incident no longer matches:\n{b}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_recorded_promise_appears_in_the_next_note_and_tickets_show_it() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "promise-1@example.test";
    let customer = "customer6@example.test";
    lab.send_mail(
        &Mail::request(customer, "billing@example.test", id)
            .subject("Refund request")
            .body("Please refund invoice 7781."),
    );
    let ticket = lab.wait_ack(customer, id).ticket();

    // Billing answers the customer with a copy to its own mailbox, and promises something.
    lab.send_mail(
        &Mail::from("billing@example.test")
            .to(customer)
            .cc("billing@example.test")
            .id("answer-1@example.test")
            .subject(&format!("Re: [#{ticket}] Refund request"))
            .body("Dear customer,\r\n\r\nPromise: refund of invoice 7781 by 2026-12-01\r\n\r\nBilling"),
    );
    lab.wait_flagged("billing@example.test", "answer-1@example.test", "$Triaged");
    // And an operator records another one from the command line, through the daemon.
    let out = lab
        .cli(&[
            "tickets",
            "promise",
            &ticket,
            "call back on Monday",
            "--by",
            "supervisor",
        ])
        .run();
    assert!(out.status.success(), "{}", out.stderr);

    // The customer writes again, to support@ by mistake: the note carries both promises.
    lab.send_mail(
        &Mail::request(customer, "support@example.test", "promise-2@example.test")
            .subject(&format!("[#{ticket}] refund"))
            .body("Any news?"),
    );
    let note = lab
        .wait_forward("billing@example.test", "promise-2@example.test")
        .text();
    assert!(
        note.contains("refund of invoice 7781 by 2026-12-01"),
        "{note}"
    );
    assert!(note.contains("call back on Monday"), "{note}");

    let show = lab.cli(&["tickets", "show", &ticket]).run();
    let text = &show.stdout;
    assert!(show.status.success(), "{}", show.stderr);
    assert!(
        text.contains("billing@example.test (staff) answered the customer"),
        "{text}"
    );
    assert!(
        text.contains("follow-up 1 arrived at support@example.test"),
        "{text}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn an_unanswered_ticket_gets_a_reminder_then_escalation_and_one_status_mail() {
    // Time made controllable: support promises an answer within 2 seconds, and open
    // tickets are checked every second.
    let rules = shipped_rules()
        .replacen("response_time = \"4h\"", "response_time = \"2s\"", 1)
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1);
    let lab = Lab::setup().rules(&rules).start();
    let daemon = lab.daemon();

    let id = "slow-1@example.test";
    let customer = "customer7@example.test";
    let ticket = site_down(&lab, customer, "support@example.test", id).ticket();
    let support = wait_of_ticket(&lab, "support@example.test", &ticket, "reminder");
    assert!(of_ticket(&support, &ticket, "reminder")[0]
        .text()
        .contains(&ticket));
    wait_of_ticket(&lab, "supervisor@example.test", &ticket, "reminder");
    let inbox = wait_of_ticket(&lab, customer, &ticket, "status");
    let status = of_ticket(&inbox, &ticket, "status")[0].text();
    assert!(
        status.contains("still with our Technical support team")
            && status.contains("Support supervisor"),
        "{status}"
    );
    // Several more checks pass; the customer still has one status mail, support one reminder.
    std::thread::sleep(Duration::from_secs(4));
    lab.drain();
    assert_eq!(count_of_ticket(&lab, customer, &ticket, "status"), 1);
    assert_eq!(
        count_of_ticket(&lab, "support@example.test", &ticket, "reminder"),
        1
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_ticket_answered_through_the_sent_folder_gets_no_reminder_and_no_status_mail() {
    // Support answers within 6 seconds and open tickets are checked every second; support's
    // login has its Sent folder watched, where the team's mail client files its answers.
    let rules = shipped_rules()
        .replacen("response_time = \"4h\"", "response_time = \"6s\"", 1)
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1);
    let lab = Lab::setup().rules(&rules).start();
    lab.edit_config(
        "user = \"support@example.test\"\n",
        "user = \"support@example.test\"\nsent_folder = \"Sent\"\n",
    );
    // The Sent folder has a history of its own, with nothing of any ticket.
    let old = Mail::from("support@example.test")
        .to("someone@example.test")
        .id("old-answer@example.test")
        .subject("Re: your question from last year")
        .body("Here you go.");
    lab.append("support@example.test", "Sent", &old.raw());
    let daemon = lab.daemon();

    let id = "answered-1@example.test";
    let customer = "customer8@example.test";
    let ack = site_down(&lab, customer, "support@example.test", id);
    let ticket = ack.ticket();
    let answer = Mail::from("support@example.test")
        .to(customer)
        .id("staff-answer-1@example.test")
        .in_reply_to(&ack.message_id())
        .subject(&format!("Re: [#{ticket}] We have received your request"))
        .body("Fixed: the web server was restarted. Sorry for the trouble.");
    lab.append("support@example.test", "Sent", &answer.raw());
    daemon.wait_log_until("the staff answer seen", |log| {
        log.lines()
            .any(|l| l.contains("Staff reply seen") && l.contains(&ticket))
    });

    // Past the response time and twice it (when an unanswered ticket is escalated and its
    // customer told), nothing goes to support, the supervisor or the customer.
    std::thread::sleep(Duration::from_secs(14));
    lab.drain();
    for user in ["support@example.test", "supervisor@example.test", customer] {
        for kind in ["reminder", "status"] {
            assert_eq!(
                count_of_ticket(&lab, user, &ticket, kind),
                0,
                "{kind} to {user}"
            );
        }
    }
    assert!(daemon.stop().success());
}

#[test]
fn explain_while_the_daemon_runs_finds_the_ticket_of_a_reply() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let id = "explain-live-1@example.test";
    let customer = "customer9@example.test";
    let ack = site_down(&lab, customer, "support@example.test", id);
    let ticket = ack.ticket();
    let reply = Mail::request(
        customer,
        "billing@example.test",
        "explain-live-2@example.test",
    )
    .in_reply_to(&ack.message_id())
    .subject(&format!("Re: [#{ticket}] We have received your request"))
    .body("Also, please refund the invoice.");
    let file = lab.dir().join("reply.eml");
    std::fs::write(&file, reply.raw()).unwrap();

    // The daemon holds the state: explain asks it, with --state or the config's state.
    let with_state = lab.cli(&["explain", "--json"]).arg(&file).run();
    let with_config = cli(&["explain", "--json"])
        .rules(&lab.rules)
        .arg("--config")
        .arg(&lab.config)
        .arg(&file)
        .run();
    for o in [with_state, with_config] {
        assert!(o.status.success(), "{}", o.text());
        let v = o.json();
        assert_eq!(v["ticket"], ticket.as_str(), "{v:#}");
        assert_eq!(v["joined_by"], "references", "{v:#}");
        assert_eq!(v["queue"], "support", "{v:#}");
    }
    assert!(daemon.stop().success());
}

/// A remote server's delivery report about the mail `id` to `to`, as Postfix writes one.
fn bounce_of(id: &str, to: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.remote.example>\r\n\
         To: support@example.test\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <bounce-1@mx.remote.example>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --b1\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.remote.example\r\n\r\n\
         Final-Recipient: rfc822; {to}\r\nAction: failed\r\nStatus: 5.2.2\r\n\
         Diagnostic-Code: smtp; 552 5.2.2 <{to}>: mailbox full\r\n\
         --b1\r\nContent-Type: text/rfc822-headers\r\n\r\n\
         From: Example Support <support@example.test>\r\nTo: {to}\r\n\
         Subject: We have received your request\r\nMessage-ID: <{id}>\r\n\
         --b1--\r\n"
    )
    .into_bytes()
}

#[test]
fn an_out_of_office_and_a_bounce_of_the_ack_are_noted_in_the_ticket_and_nothing_else() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let customer = "customer10@example.test";
    let ack = site_down(&lab, customer, "support@example.test", "ooo-1@example.test");
    let ticket = ack.ticket();

    // The customer's vacation program answers the acknowledgement.
    let ooo = Mail::request(customer, "support@example.test", "ooo-2@example.test")
        .in_reply_to(&ack.message_id())
        .subject("Automatic reply: We have received your request")
        .header("Auto-Submitted", "auto-replied")
        .body("I am out of the office until 14 December.\nRegards, Ivan");
    lab.send_mail(&ooo);
    // The remote server returns the acknowledgement (the mailbox is full).
    lab.stack.send(
        "",
        &["support@example.test"],
        &bounce_of(&ack.message_id(), customer),
    );

    // Support hears that the customer did not get the acknowledgement.
    let inbox = wait_of_ticket(&lab, "support@example.test", &ticket, "undelivered");
    let note = of_ticket(&inbox, &ticket, "undelivered")[0].text();
    assert!(
        note.contains("acknowledgement")
            && note.contains(customer)
            && note.contains("mailbox full"),
        "{note}"
    );
    let show = lab.cli(&["tickets", "show", &ticket]).run().stdout;
    assert!(
        show.contains(&format!("automatic reply from {customer}"))
            && show.contains("until 14 December"),
        "{show}"
    );
    assert!(
        show.contains(&format!(
            "the acknowledgement to {customer} could not be delivered: 5.2.2"
        )),
        "{show}"
    );
    // Neither opened a ticket, was forwarded, or was answered.
    lab.drain();
    assert_eq!(count_of_ticket(&lab, customer, &ticket, "added"), 0);
    for id in ["ooo-2@example.test", "bounce-1@mx.remote.example"] {
        assert!(
            [
                "billing@example.test",
                "sales@example.test",
                "supervisor@example.test"
            ]
            .iter()
            .all(|q| lab.inbox(q).iter().all(|m| !m.is_forward_of(id))),
            "{id}"
        );
    }
    let list = lab.cli(&["tickets", "list", "--all"]).run().stdout;
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(daemon.stop().success());
}

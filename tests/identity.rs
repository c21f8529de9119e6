//! A mailbox's own identity on the real stack: its acknowledgements come from the
//! address the customer wrote to (`ack_from` in its rules.toml entry), and the mail sent
//! on its behalf goes through its own SMTP login (`[mailboxes.NAME.smtp]`). Postfix
//! writes the login a mail was submitted with into its Received header
//! (`smtpd_sasl_authenticated_header`), which is how the tests see who sent it.

mod support;

use support::lab::Lab;
use support::mail::Mail;
use support::{shipped_rules, FetchedMail};

/// The shipped rules with billing answering from its own address, as its own brand.
fn rules_with_billing_identity() -> String {
    let rules = shipped_rules();
    let own = "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\ncompany_name = \"Acme\"\n";
    assert!(rules.contains("[mailboxes.billing]\n"));
    rules.replacen("[mailboxes.billing]\n", own, 1)
}

/// Gives billing its own SMTP login in the lab's mailtriage.toml. The global [smtp] is
/// the plain port without AUTH; billing submits on the submission port, which takes
/// only authenticated mail, as billing@.
fn give_billing_its_smtp_login(lab: &Lab) {
    let own_smtp = format!(
        "\n[mailboxes.billing.smtp]\nport = {port}\nuser = \"billing@example.test\"\npassword_file = \"{pw}\"\n",
        port = lab.submission_port,
        pw = lab.password_file(lab.dir()).display(),
    );
    lab.write_config(&(lab.config_text() + &own_smtp));
}

/// Asserts that `m` came from billing's own address, through billing's login.
fn assert_from_billing(m: &FetchedMail, what: &str) {
    let from = m.header("From").unwrap_or_default();
    assert!(
        from.contains("Acme Billing") && from.contains("<billing@example.test>"),
        "{what}: From: {from}"
    );
    assert!(
        m.sent_with_login("billing@example.test"),
        "{what} went through billing's login:\n{}",
        String::from_utf8_lossy(&m.raw)
    );
}

#[test]
fn billing_acknowledges_from_its_own_address_through_its_own_smtp_login() {
    let lab = Lab::setup().rules(&rules_with_billing_identity()).start();
    give_billing_its_smtp_login(&lab);
    let daemon = lab.daemon();

    lab.send_mail(
        &Mail::from("customer1@example.test")
            .to("billing@example.test")
            .id("ident-billing-1@client.test")
            .subject("A question about my contract")
            .body("Hello, could you tell me when my contract ends?"),
    );
    let ack = lab.wait_ack("customer1@example.test", "ident-billing-1@client.test");
    assert_from_billing(&ack, "the acknowledgement");
    let text = ack.text();
    assert!(
        text.contains("Acme") && !text.contains("Example Ltd"),
        "signed with billing's brand:\n{text}"
    );

    // A mail that reached billing but belongs to technical support: its forward is
    // billing's mail too.
    lab.send_mail(
        &Mail::from("customer2@example.test")
            .to("billing@example.test")
            .id("ident-billing-2@client.test")
            .subject("Website is down")
            .body("Error 500 on every page."),
    );
    let fwd = lab.wait_forward("support@example.test", "ident-billing-2@client.test");
    assert!(
        fwd.sent_with_login("billing@example.test"),
        "the forward went through billing's login:\n{}",
        String::from_utf8_lossy(&fwd.raw)
    );

    // Sales has neither: the company's sender, through the global [smtp] (no login).
    lab.send_mail(
        &Mail::from("customer3@example.test")
            .to("sales@example.test")
            .id("ident-sales-1@client.test")
            .subject("A question about prices")
            .body("Hello, how much is the yearly plan?"),
    );
    let ack = lab.wait_ack("customer3@example.test", "ident-sales-1@client.test");
    let from = ack.header("From").unwrap();
    assert!(from.contains("<support@example.test>"), "From: {from}");
    assert!(ack.text().contains("Example Ltd"), "{}", ack.text());
    assert!(
        !String::from_utf8_lossy(&ack.raw).contains("Authenticated sender"),
        "sales' acknowledgement went through the global [smtp]:\n{}",
        String::from_utf8_lossy(&ack.raw)
    );
    assert!(daemon.stop().success());
}

#[test]
fn billing_s_customer_hears_from_billing_in_its_own_words_for_the_whole_ticket() {
    // Billing answers within 2 seconds and open tickets are checked every second, so
    // its reminder, escalation and status mail come while the test waits; billing has
    // its own words for the acknowledgement.
    let own_words = "\n[mailboxes.billing.templates.en]\nack = \"\"\"\nAcme Billing has your request {{ ticket }}. Our accountants will answer within {{ response_time }}.\n\n{{ company }}\n\"\"\"\n";
    let rules = rules_with_billing_identity()
        .replacen("response_time = \"1d\"", "response_time = \"2s\"", 1)
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1)
        + own_words;
    let lab = Lab::setup().rules(&rules).start();
    give_billing_its_smtp_login(&lab);
    let daemon = lab.daemon();

    let customer = "customer5@example.test";
    lab.send_mail(
        &Mail::request(
            customer,
            "billing@example.test",
            "ident-brand-1@client.test",
        )
        .subject("A question about my invoice")
        .body("Hello, the invoice for November shows the wrong VAT number."),
    );
    let ack = lab.wait_ack(customer, "ident-brand-1@client.test");
    assert_from_billing(&ack, "the acknowledgement");
    let ticket = ack.ticket();
    let text = ack.text();
    assert!(
        text.contains(&format!(
            "Acme Billing has your request {ticket}. Our accountants"
        )) && !text.contains("thank you for your message"),
        "billing's own words:\n{text}"
    );

    // The customer writes again, to sales@ this time: the ticket's mail still comes
    // from billing@, the address they first wrote to.
    lab.send_mail(
        &Mail::request(customer, "sales@example.test", "ident-brand-2@client.test")
            .in_reply_to(&ack.message_id())
            .subject(&format!("Re: [#{ticket}] A question about my invoice"))
            .body("The VAT number should be 7701234567."),
    );
    let added = lab.wait_ack(customer, "ident-brand-2@client.test");
    assert_eq!(added.kind().as_deref(), Some("added"));
    assert_from_billing(&added, "the 'added to your request' mail");

    let of_ticket = |m: &FetchedMail| {
        m.kind().as_deref() == Some("status")
            && m.header("X-Mailtriage")
                .is_some_and(|h| h.contains(&format!("ticket={ticket};")))
    };
    let inbox = lab.wait_inbox(customer, |ms| ms.iter().any(of_ticket));
    let status = inbox.iter().find(|m| of_ticket(m)).unwrap();
    assert_from_billing(status, "the status mail");
    assert!(status.text().contains("Acme"), "{}", status.text());
    assert!(daemon.stop().success());
}

#[test]
fn a_mailbox_on_its_own_imap_server_is_read_there() {
    let lab = Lab::start();
    // [imap] points at a port where no IMAP server answers (the stack's SMTP port);
    // billing has its own server: the stack's IMAP port, with STARTTLS.
    let text = lab.config_text();
    let imaps = format!("port = {}\ntls = \"implicit\"", lab.imaps_port);
    assert!(text.contains(&imaps), "{text}");
    let text = text.replacen(
        &imaps,
        &format!("port = {}\ntls = \"implicit\"", lab.smtp_port),
        1,
    );
    let own_imap = format!(
        "\n[mailboxes.billing.imap]\nport = {}\ntls = \"starttls\"\n",
        lab.imap_port
    );
    lab.write_config(&(text + &own_imap));
    let daemon = lab.daemon();

    lab.send_mail(
        &Mail::from("customer4@example.test")
            .to("billing@example.test")
            .id("ident-imap-1@client.test")
            .subject("A question about my contract")
            .body("Hello, could you tell me when my contract ends?"),
    );
    lab.wait_ack("customer4@example.test", "ident-imap-1@client.test");
    lab.wait_flagged(
        "billing@example.test",
        "ident-imap-1@client.test",
        "$Triaged",
    );
    assert!(daemon.stop().success());
}

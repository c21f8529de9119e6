//! A mailbox's own identity on the real stack: its acknowledgements come from the
//! address the customer wrote to (`ack_from` in its rules.toml entry), and the mail sent
//! on its behalf goes through its own SMTP login (`[mailboxes.NAME.smtp]`). Postfix
//! writes the login a mail was submitted with into its Received header
//! (`smtpd_sasl_authenticated_header`), which is how the tests see who sent it.

mod support;

use support::lab::Lab;
use support::mail::Mail;
use support::shipped_rules;

/// The shipped rules with billing answering from its own address, as its own brand.
fn rules_with_billing_identity() -> String {
    let rules = shipped_rules();
    let own = "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\ncompany_name = \"Acme\"\n";
    assert!(rules.contains("[mailboxes.billing]\n"));
    rules.replacen("[mailboxes.billing]\n", own, 1)
}

#[test]
fn billing_acknowledges_from_its_own_address_through_its_own_smtp_login() {
    let lab = Lab::setup().rules(&rules_with_billing_identity()).start();
    // The global [smtp] is the plain port without AUTH; billing submits on the
    // submission port, which takes only authenticated mail, as billing@.
    let own_smtp = format!(
        "\n[mailboxes.billing.smtp]\nport = {port}\nuser = \"billing@example.test\"\npassword_file = \"{pw}\"\n",
        port = lab.submission_port,
        pw = lab.password_file(lab.dir()).display(),
    );
    lab.write_config(&(lab.config_text() + &own_smtp));
    let daemon = lab.daemon();

    lab.send_mail(
        &Mail::from("customer1@example.test")
            .to("billing@example.test")
            .id("ident-billing-1@client.test")
            .subject("A question about my contract")
            .body("Hello, could you tell me when my contract ends?"),
    );
    let ack = lab.wait_ack("customer1@example.test", "ident-billing-1@client.test");
    let from = ack.header("From").unwrap();
    assert!(
        from.contains("Acme Billing") && from.contains("<billing@example.test>"),
        "From: {from}"
    );
    assert!(
        ack.sent_with_login("billing@example.test"),
        "the acknowledgement went through billing's login:\n{}",
        String::from_utf8_lossy(&ack.raw)
    );
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

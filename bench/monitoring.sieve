# Copied from the shared mail testbed; bench/e2e.py installs it on monitoring@ as the Sieve peer.
# Peer baseline: routing at delivery time (Dovecot LMTP + Pigeonhole) for monitoring@example.test.
# Outage-looking mail is redirected (copy kept) to support@ and the sender gets an acknowledgement.
require ["body", "regex", "copy", "vacation", "vacation-seconds", "variables"];

set "subj" "";
if header :matches "subject" "*" { set "subj" "${1}"; }

# default comparator i;ascii-casemap folds ASCII only, so Cyrillic case variants are spelled out
if anyof (header :regex "subject" "([Нн]е работает|НЕ РАБОТАЕТ|[Оо]шибка|ОШИБКА|error|down|500)",
          body :text :regex "([Нн]е работает|НЕ РАБОТАЕТ|[Оо]шибка|ОШИБКА|error|down|500)") {
    redirect :copy "support@example.test";
    vacation :seconds 0 :from "support@example.test" :subject "Re: ${subj}"
"Здравствуйте! Ваше обращение получено и передано в службу поддержки.
Hello! We received your request and forwarded it to our support team.";
}

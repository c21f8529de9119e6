#!/usr/bin/env python3
"""Deterministic generator of realistic Russian/English support e-mails.

mailtriage's own corpus generator for bench/e2e.py: it started as the shared mail
testbed's gen_mail.py, and the project owns and maintains this copy (a clone needs
nothing outside the repository). Keep its output stable: the figures in README's
"Performance" section were measured on `generate(1000, seed=1)`.

Mixes charsets (UTF-8, KOI8-R, windows-1251, us-ascii), transfer encodings
(8bit, quoted-printable, base64), RFC 2047 subjects (B and Q, and a few raw
8-bit ones), multipart/alternative, HTML-only, attachments (log, PNG, PDF,
forwarded message/rfc822), replies with In-Reply-To/References, auto-replies
(Auto-Submitted), out-of-office, mailing-list mail (List-Id, Precedence) and
DSN bounces.  Every message comes with ground truth (decoded subject/body,
whether the outage regex matches, intended queue, whether it should be
acknowledged).

CLI:
  gen_mail.py --count 1000 --seed 1 --out DIR      # DIR/00001.eml ... + DIR/manifest.jsonl
  gen_mail.py --count 5 --seed 1 --print           # dump to stdout
Library:
  from gen_mail import generate
  for raw_bytes, meta in generate(1000, seed=1, to="monitoring@example.test"): ...
"""
import argparse
import base64
import datetime as dt
import html
import json
import os
import quopri
import random
import re
import sys
import zlib
import struct

OUTAGE_RE = re.compile(r"(?i)(не работает|ошибка|error|down|500)")

QUEUES = {
    "outage": "support",
    "billing": "billing",
    "sales": "sales",
    "abuse": "abuse",
    "thanks": "support",
    "question": "support",
}

RU_FIRST = ["Иван", "Ольга", "Сергей", "Наталья", "Алексей", "Екатерина", "Дмитрий", "Мария", "Андрей", "Татьяна"]
RU_LAST = ["Петров", "Смирнова", "Кузнецов", "Попова", "Васильев", "Соколова", "Михайлов", "Новикова", "Фёдоров", "Морозова"]
EN_FIRST = ["John", "Emily", "Michael", "Sarah", "David", "Laura", "James", "Anna", "Robert", "Linda"]
EN_LAST = ["Smith", "Johnson", "Brown", "Taylor", "Miller", "Wilson", "Moore", "Clark", "Lewis", "Walker"]
COMPANIES_RU = ["ООО «Ромашка»", "АО «Вектор»", "ИП Сидоров", "ООО «ТехноСервис»", "ГК «Альфа»"]
COMPANIES_EN = ["Acme Corp", "Globex Ltd", "Initech", "Umbrella LLC", "Stark Industries"]

SUBJ = {
    ("outage", "ru"): ["Сайт не работает", "Ошибка 500 при оплате", "Не работает личный кабинет",
                       "Срочно: сервис недоступен", "Ошибка при входе в систему", "Не приходят уведомления",
                       "Ошибка синхронизации данных", "API возвращает 502"],
    ("outage", "en"): ["Website is down", "Error 500 on checkout", "Login error since this morning",
                       "URGENT: service unavailable", "API returns 502 Bad Gateway", "Dashboard not loading",
                       "Sync failed with an error", "Everything is down for our team"],
    ("billing", "ru"): ["Счёт за октябрь", "Вопрос по оплате счёта №{n}", "Возврат средств", "Двойное списание",
                        "Нужны закрывающие документы", "Смена реквизитов плательщика"],
    ("billing", "en"): ["Invoice #{n} question", "Refund request", "Double charge on my card",
                        "Need a VAT invoice", "Update billing address", "Payment receipt for order {n}"],
    ("sales", "ru"): ["Запрос коммерческого предложения", "Хотим купить лицензию на {k} мест",
                      "Стоимость корпоративного тарифа", "Партнёрская программа", "Демо для нашей команды"],
    ("sales", "en"): ["Pricing for {k} seats", "Request for quote", "Enterprise plan inquiry",
                      "Partnership opportunity", "Can we schedule a demo?"],
    ("abuse", "ru"): ["Спам с вашего сервера", "Фишинговая страница на вашем домене", "Жалоба на рассылку",
                      "Взлом аккаунта"],
    ("abuse", "en"): ["Spam originating from your network", "Phishing page hosted on your domain",
                      "Abuse report: unsolicited email", "Compromised account report"],
    ("question", "ru"): ["Вопрос по настройке", "Как добавить пользователя?", "Интеграция с 1С",
                         "Экспорт отчётов в Excel", "Где найти API-ключ?"],
    ("question", "en"): ["How do I add a user?", "Question about SSO setup", "Exporting reports to CSV",
                         "Where is the API key?", "Feature question: webhooks"],
    ("thanks", "ru"): ["Спасибо!", "Благодарность сотруднику поддержки", "Вопрос решён, спасибо"],
    ("thanks", "en"): ["Thanks!", "Thank you for the quick help", "Issue resolved, thanks"],
}

BODY = {
    ("outage", "ru"): [
        "С сегодняшнего утра сайт не работает: при открытии любой страницы появляется ошибка 500.",
        "Пробовали из разных браузеров и с разных компьютеров, результат одинаковый.",
        "Личный кабинет не открывается, клиенты звонят и жалуются. Ошибка повторяется каждые несколько минут.",
        "При попытке оплаты заказ зависает, а затем появляется сообщение об ошибке сервера.",
        "Прошу срочно проверить, у нас остановлена работа всего отдела продаж.",
        "Время появления проблемы: около 09:40 по Москве. Скриншот прикладываю.",
    ],
    ("outage", "en"): [
        "Since this morning the website is down and every page returns an Internal Server Error (500).",
        "We tried different browsers and networks, the result is the same.",
        "Our customers cannot log in, the error appears every few minutes.",
        "Checkout hangs and then shows a generic server error message.",
        "Please look into this urgently, our whole sales team is blocked.",
        "The problem started at about 09:40 UTC. Screenshot attached.",
    ],
    ("billing", "ru"): [
        "Прошу пояснить сумму в последнем счёте, она больше, чем в прошлом месяце.",
        "С карты списали оплату дважды, прошу вернуть лишнюю сумму.",
        "Для бухгалтерии нужны акт и счёт-фактура за прошлый квартал.",
        "Мы сменили юридический адрес, новые реквизиты во вложении.",
        "Оплату провели платёжным поручением, прошу подтвердить получение.",
    ],
    ("billing", "en"): [
        "Could you explain the amount on the latest invoice? It is higher than last month.",
        "My card was charged twice for the same order, please refund the duplicate.",
        "Our accounting department needs a VAT invoice for the last quarter.",
        "We changed our legal address, the new details are attached.",
        "We paid by bank transfer, please confirm you received it.",
    ],
    ("sales", "ru"): [
        "Рассматриваем ваш продукт для нашей компании, интересует корпоративный тариф.",
        "Пришлите, пожалуйста, коммерческое предложение и условия договора.",
        "Есть ли скидки при оплате за год вперёд?",
        "Хотели бы провести демонстрацию для руководства на следующей неделе.",
    ],
    ("sales", "en"): [
        "We are evaluating your product for our company and are interested in the enterprise plan.",
        "Please send us a quote and the contract terms.",
        "Do you offer discounts for annual billing?",
        "We would like to schedule a demo for our management next week.",
    ],
    ("abuse", "ru"): [
        "С адресов вашей сети идёт массовая рассылка спама на наши ящики.",
        "На вашем хостинге размещена фишинговая страница, имитирующая наш банк.",
        "Заголовки письма прилагаю, просьба принять меры.",
    ],
    ("abuse", "en"): [
        "We are receiving large volumes of spam from addresses in your network.",
        "A phishing page imitating our bank is hosted on your infrastructure.",
        "Full headers are attached, please take action.",
    ],
    ("question", "ru"): [
        "Подскажите, пожалуйста, как добавить нового сотрудника в аккаунт компании.",
        "Не нашёл в документации, где включается двухфакторная аутентификация.",
        "Можно ли выгружать отчёты автоматически каждую неделю?",
        "Интересует интеграция с нашей учётной системой, есть ли готовый модуль?",
    ],
    ("question", "en"): [
        "Could you tell me how to add a new employee to our company account?",
        "I could not find in the docs where two-factor authentication is enabled.",
        "Is it possible to export reports automatically every week?",
        "We are interested in integrating with our accounting system, is there a ready module?",
    ],
    ("thanks", "ru"): [
        "Большое спасибо за оперативную помощь, всё заработало.",
        "Отдельная благодарность вашему специалисту за терпение.",
    ],
    ("thanks", "en"): [
        "Many thanks for the quick help, everything works now.",
        "Special thanks to your engineer for the patience.",
    ],
}

FILLER = {
    "ru": [
        "Номер договора указан в подписи. Если нужна дополнительная информация, напишите, я отвечу в течение дня.",
        "Мы пользуемся вашим сервисом уже третий год и в целом довольны качеством, поэтому рассчитываем на быстрое решение.",
        "Контактное лицо по техническим вопросам — наш системный администратор, его телефон указан ниже.",
        "Заранее спасибо за ответ. Просьба не закрывать обращение, пока вопрос не будет решён полностью.",
        "Ниже привожу подробности: браузер Chrome последней версии, операционная система Windows 10, подключение через корпоративный прокси.",
    ],
    "en": [
        "Our contract number is in the signature below. If you need more information, reply and I will get back within a day.",
        "We have been using your service for three years and are generally happy, so we hope for a quick resolution.",
        "The technical contact on our side is our system administrator; his phone number is listed below.",
        "Thanks in advance. Please do not close the ticket until the issue is fully resolved.",
        "Details: latest Chrome, Windows 10, connecting through a corporate proxy.",
    ],
}

DISCLAIMER = {
    "ru": "Это сообщение и любые приложения к нему являются конфиденциальными и предназначены исключительно для адресата. "
          "Если вы получили это сообщение по ошибке, пожалуйста, сообщите отправителю и удалите его. "
          "Любое использование, копирование или распространение информации без согласия отправителя запрещено.",
    "en": "This message and any attachments are confidential and intended solely for the addressee. "
          "If you received this message in error, please notify the sender and delete it. "
          "Any use, copying or distribution of this information without the sender's consent is prohibited.",
}

GREET = {"ru": ["Здравствуйте!", "Добрый день!", "Добрый день, коллеги.", "Привет!"],
         "en": ["Hello,", "Hi team,", "Good morning,", "Dear support,"]}
BYE = {"ru": ["С уважением,", "Спасибо,", "Всего доброго,"], "en": ["Best regards,", "Thanks,", "Kind regards,"]}

PNG_1PX = None


def _png(rng, w=16, h=16):
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(w * 3)) for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _pdf(rng):
    body = "BT /F1 12 Tf 72 720 Td (Invoice %d) Tj ET" % rng.randrange(10000, 99999)
    return ("%%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
            "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Contents 4 0 R>>endobj\n"
            "4 0 obj<</Length %d>>stream\n%s\nendstream endobj\ntrailer<</Root 1 0 R>>\n%%%%EOF\n" % (len(body), body)).encode()


def _log_text(rng, matching):
    lines = []
    t = dt.datetime(2024, 3, 14, 9, 40, 0)
    for i in range(rng.randrange(12, 25)):
        t += dt.timedelta(seconds=rng.randrange(1, 30))
        lvl = rng.choice(["INFO", "INFO", "DEBUG", "WARN"]) if not matching or i % 5 else "ERROR"
        msg = rng.choice(["GET /api/v1/orders 200 12ms", "worker heartbeat ok", "cache miss key=user:%d" % rng.randrange(999),
                          "POST /checkout 200 85ms", "db pool size=%d" % rng.randrange(4, 32)])
        if lvl == "ERROR":
            msg = "POST /checkout 500 upstream timeout"
        lines.append("%s %-5s %s" % (t.isoformat(), lvl, msg))
    return "\n".join(lines) + "\n"


def _split_words(s, maxchars):
    out, cur = [], ""
    for ch in s:
        if len(cur) >= maxchars:
            out.append(cur)
            cur = ""
        cur += ch
    if cur:
        out.append(cur)
    return out


_FIT = str.maketrans({"«": '"', "»": '"', "—": "-", "–": "-", "№": "N", "ё": "е", "Ё": "Е", "’": "'", "“": '"', "”": '"'})


def fit(text, charset):
    """Make text encodable in charset the way real MUAs degrade it."""
    try:
        text.encode(charset)
        return text
    except UnicodeEncodeError:
        t = text.translate(_FIT)
        return t.encode(charset, errors="replace").decode(charset)


def enc_header(s, charset, how):
    """RFC 2047-encode s.  how: 'B', 'Q', 'raw' (8-bit, non-standard), 'ascii'."""
    s = fit(s, charset) if how in ("B", "Q") else s
    if how == "ascii" or all(ord(c) < 128 for c in s):
        return s
    if how == "raw":
        return s  # caller encodes the header line as UTF-8 bytes
    words = []
    for part in _split_words(s, 12 if how == "B" else 8):
        b = part.encode(charset)
        if how == "B":
            words.append("=?%s?B?%s?=" % (charset, base64.b64encode(b).decode()))
        else:
            q = "".join(chr(c) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else ("_" if c == 32 else "=%02X" % c)
                        for c in b)
            words.append("=?%s?Q?%s?=" % (charset, q))
    return "\r\n ".join(words)


def enc_addr(name, addr, charset, how):
    if not name:
        return "<%s>" % addr
    if all(ord(c) < 128 for c in name):
        return '"%s" <%s>' % (name, addr)
    return "%s <%s>" % (enc_header(name, charset, how), addr)


def enc_body(text, charset, cte):
    b = fit(text.replace("\r\n", "\n"), charset).encode(charset)
    if cte == "base64":
        return base64.encodebytes(b).decode().replace("\n", "\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(b).decode("ascii").replace("\n", "\r\n")
    return b.decode(charset).replace("\n", "\r\n")  # 7bit/8bit, re-encoded at the end


def html_of(text, lang):
    paras = "".join("<p>%s</p>\n" % html.escape(p).replace("\n", "<br>\n") for p in text.split("\n\n"))
    return ('<!DOCTYPE html>\n<html lang="%s"><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            '<style>p{font-family:Arial,sans-serif;font-size:14px}</style></head>\n<body>\n%s'
            '<div style="color:#888">&mdash;&nbsp;sent from webmail</div>\n</body></html>\n' % (lang, paras))


def strip_html(h):
    h = re.sub(r"(?is)<(style|script).*?</\1>", " ", h)
    h = re.sub(r"(?s)<[^>]+>", " ", h)
    return html.unescape(h)


def leaf(ctype, charset, cte, text, extra=()):
    hdr = ["Content-Type: %s%s" % (ctype, '; charset="%s"' % charset if charset else ""),
           "Content-Transfer-Encoding: %s" % cte] + list(extra)
    return "\r\n".join(hdr) + "\r\n\r\n" + text


def multipart(subtype, parts, rng, extra_ct=""):
    boundary = "----=_Part_%d_%d" % (rng.randrange(10**6), rng.randrange(10**9))
    body = "This is a multi-part message in MIME format.\r\n"
    for p in parts:
        body += "\r\n--%s\r\n%s" % (boundary, p.rstrip("\r\n") + "\r\n")
    body += "\r\n--%s--\r\n" % boundary
    return 'Content-Type: multipart/%s; boundary="%s"%s' % (subtype, boundary, extra_ct), body


def b64_attachment(ctype, filename, data, fname_charset="utf-8"):
    fn = filename if all(ord(c) < 128 for c in filename) else enc_header(filename, fname_charset, "B")
    return ("Content-Type: %s; name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n%s"
            % (ctype, fn, fn, base64.encodebytes(data).decode().replace("\n", "\r\n")))


KINDS = [  # (kind, weight)
    ("plain_utf8_8bit", 14), ("plain_utf8_qp", 8), ("plain_utf8_b64", 8), ("plain_koi8r_8bit", 5),
    ("plain_koi8r_b64", 4), ("plain_cp1251_qp", 6), ("plain_cp1251_8bit", 4), ("alt_utf8", 12),
    ("html_only_utf8", 5), ("html_only_cp1251", 3), ("attach_log", 5), ("attach_png", 4), ("attach_pdf", 3),
    ("forward_rfc822", 2), ("reply", 10), ("auto_reply", 3), ("ooo", 2), ("list", 4), ("dsn", 2),
]
CATS = [("outage", 30), ("question", 25), ("billing", 15), ("sales", 12), ("abuse", 6), ("thanks", 12)]


def _wchoice(rng, items):
    tot = sum(w for _, w in items)
    r = rng.uniform(0, tot)
    for v, w in items:
        r -= w
        if r <= 0:
            return v
    return items[-1][0]


def _wrap(text, width=72):
    out = []
    for para in text.split("\n"):
        line = ""
        for w in para.split(" "):
            if line and len(line) + 1 + len(w) > width:
                out.append(line)
                line = w
            else:
                line = (line + " " + w) if line else w
        out.append(line)
    return "\n".join(out)


def generate(count, seed=1, to="monitoring@example.test", domain="example.test", customers=20,
             start=dt.datetime(2024, 3, 14, 9, 0, tzinfo=dt.timezone.utc), tag=""):
    """Yield (raw_bytes_with_CRLF, meta_dict) for `count` messages.
    `tag` is added to every Message-ID, so repeated runs with one seed get fresh IDs
    (Sieve redirect/vacation and many clients de-duplicate by Message-ID)."""
    rng = random.Random(seed)
    history = []  # (meta, text) for replies
    now = start
    for n in range(1, count + 1):
        now += dt.timedelta(seconds=rng.randrange(5, 120))
        kind = _wchoice(rng, KINDS)
        if kind == "reply" and not history:
            kind = "plain_utf8_8bit"
        lang = "ru" if rng.random() < 0.6 else "en"
        cat = _wchoice(rng, CATS)
        cust = rng.randrange(1, customers + 1)
        if lang == "ru":
            pname = "%s %s" % (rng.choice(RU_FIRST), rng.choice(RU_LAST))
            company = rng.choice(COMPANIES_RU)
        else:
            pname = "%s %s" % (rng.choice(EN_FIRST), rng.choice(EN_LAST))
            company = rng.choice(COMPANIES_EN)
        from_addr = "customer%d@%s" % (cust, domain)
        env_from = from_addr
        charset = {"koi8r": "koi8-r", "cp1251": "windows-1251"}.get(kind.split("_")[1] if kind.startswith(("plain", "html")) else "", "utf-8")
        if lang == "en" and charset != "utf-8":
            charset = "us-ascii" if rng.random() < 0.5 else "utf-8"  # English mail is rarely KOI8-R
        if lang == "ru" and kind in ("reply", "auto_reply", "ooo") and rng.random() < 0.3:
            charset = rng.choice(["koi8-r", "windows-1251"])
        subj_how = rng.choice(["B", "B", "Q"]) if rng.random() > 0.03 else "raw"
        if subj_how == "raw":
            charset_subj = "utf-8"
        else:
            charset_subj = charset if charset != "us-ascii" else "utf-8"
        msgid = "<%d.%d.%08x%s@%s>" % (n, seed, rng.getrandbits(32), tag, domain)
        extra_hdrs = []
        in_reply_to = None
        references = []
        auto = False
        is_list = False
        attach_text = ""
        subject = rng.choice(SUBJ[(cat, lang)]).format(n=rng.randrange(10000, 99999), k=rng.choice([10, 25, 50, 200]))

        paras = [rng.choice(GREET[lang])]
        body_pool = list(BODY[(cat, lang)])
        rng.shuffle(body_pool)
        paras.append(" ".join(body_pool[:rng.randrange(2, min(4, len(body_pool)) + 1)]))
        fill = list(FILLER[lang])
        rng.shuffle(fill)
        paras += fill[:rng.randrange(3, 6)]
        sig = "%s\n%s\n%s\n+7 (495) %03d-%02d-%02d" % (rng.choice(BYE[lang]), pname, company, rng.randrange(1000),
                                                      rng.randrange(100), rng.randrange(100))
        if rng.random() < 0.6:
            sig += "\n\n" + DISCLAIMER[lang]
        paras.append(sig)

        if kind == "reply":
            orig_meta, orig_text = rng.choice(history[-50:])
            cat = orig_meta["category"]
            lang = orig_meta["lang"]
            from_addr = orig_meta["from"]
            env_from = from_addr
            osubj = orig_meta["subject"]
            subject = osubj if osubj.lower().startswith(("re:", "на:")) else ("Re: " if lang == "en" or rng.random() < 0.7 else "На: ") + osubj
            in_reply_to = orig_meta["message_id"]
            references = orig_meta["references"] + [orig_meta["message_id"]]
            quoted = "\n".join("> " + l for l in orig_text.split("\n")[:12])
            lead = {"ru": ["Проблема повторилась снова.", "Есть новости по моему обращению?", "Дополняю предыдущее письмо."],
                    "en": ["The problem happened again.", "Any news on my ticket?", "Adding to my previous message."]}[lang]
            paras = [rng.choice(GREET[lang]), rng.choice(lead), sig,
                     ("%s, %s пишет:" if lang == "ru" else "On %s, %s wrote:") % (orig_meta["date"], orig_meta["from"])]
        elif kind in ("auto_reply", "ooo"):
            auto = True
            cat = "auto"
            if kind == "ooo":
                subject = ("Автоответ: " if lang == "ru" else "Out of Office: ") + rng.choice(SUBJ[("question", lang)])
                text = {"ru": "Я в отпуске до 25 марта с ограниченным доступом к почте. По срочным вопросам обращайтесь к коллегам.",
                        "en": "I am out of the office until March 25 with limited access to email. For urgent matters contact my colleagues."}[lang]
                extra_hdrs += ["Auto-Submitted: auto-replied", "X-Autoreply: yes", "Precedence: auto_reply"]
            else:
                subject = ("Ваше письмо получено" if lang == "ru" else "Automatic reply: we received your message")
                text = {"ru": "Это автоматическое уведомление. Ваше письмо зарегистрировано под номером %d." % rng.randrange(10**5, 10**6),
                        "en": "This is an automated notification. Your message was registered as #%d." % rng.randrange(10**5, 10**6)}[lang]
                extra_hdrs += ["Auto-Submitted: auto-generated", "X-Auto-Response-Suppress: All"]
            paras = [text, sig]
        elif kind == "list":
            is_list = True
            cat = "list"
            from_addr = "news@status.vendor.test"
            env_from = "bounces+%d@status.vendor.test" % n
            pname = "Vendor Status" if lang == "en" else "Статус сервиса Vendor"
            subject = {"ru": "Еженедельная сводка: плановые работы и обновления", "en": "Weekly digest: scheduled downtime and updates"}[lang]
            paras = [{"ru": "Коллеги, в эту субботу с 02:00 до 04:00 запланированы работы, возможна кратковременная недоступность API.",
                      "en": "This Saturday 02:00-04:00 UTC we plan maintenance; the API may be briefly down."}[lang],
                     {"ru": "Чтобы отписаться от рассылки, перейдите по ссылке в конце письма.",
                      "en": "To unsubscribe, follow the link at the bottom of this email."}[lang]]
            extra_hdrs += ["List-Id: Vendor status <status.vendor.test>", "List-Unsubscribe: <mailto:unsubscribe@status.vendor.test>",
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "Precedence: list"]
        elif kind == "dsn":
            auto = True
            cat = "bounce"
            from_addr = "MAILER-DAEMON@mx.remote.test"
            env_from = ""
            pname = "Mail Delivery System"
            subject = "Undelivered Mail Returned to Sender"
            lang = "en"
            extra_hdrs += ["Auto-Submitted: auto-replied"]

        text = "\n\n".join(p for p in paras if p)
        if kind not in ("auto_reply", "ooo", "list", "dsn"):
            text = _wrap(text)
        if kind == "reply":
            text += "\n\n" + quoted
        body_charset = charset
        if body_charset == "us-ascii" and any(ord(c) > 127 for c in text):
            body_charset = "utf-8"
        cte = {"qp": "quoted-printable", "b64": "base64", "8bit": "8bit"}.get(kind.split("_")[-1], None)
        if cte is None:
            cte = rng.choice(["8bit", "quoted-printable", "base64"]) if body_charset != "us-ascii" else "7bit"
        if body_charset == "us-ascii":
            cte = "7bit"

        # ---- build MIME body
        html_text = None
        if kind.startswith("plain") or kind in ("reply", "auto_reply", "ooo"):
            top_ct, top_body = None, leaf("text/plain", body_charset, cte, enc_body(text, body_charset, cte))
        elif kind == "alt_utf8" or kind == "list":
            html_text = html_of(text, lang)
            p1 = leaf("text/plain", "utf-8", "quoted-printable", enc_body(text, "utf-8", "quoted-printable"))
            p2 = leaf("text/html", "utf-8", "base64" if rng.random() < 0.5 else "quoted-printable", "")
            p2 = p2 + enc_body(html_text, "utf-8", p2.split("Content-Transfer-Encoding: ")[1].split("\r\n")[0])
            top_ct, top_body = multipart("alternative", [p1, p2], rng)
        elif kind.startswith("html_only"):
            cs = "windows-1251" if "cp1251" in kind and lang == "ru" else "utf-8"
            html_text = html_of(text, lang).replace("charset=utf-8", "charset=" + cs)
            c = rng.choice(["quoted-printable", "base64"])
            top_ct, top_body = None, leaf("text/html", cs, c, enc_body(html_text, cs, c))
        elif kind.startswith("attach"):
            p1 = leaf("text/plain", body_charset if body_charset != "us-ascii" else "utf-8",
                      cte if cte != "7bit" else "8bit", enc_body(text, body_charset if body_charset != "us-ascii" else "utf-8", cte if cte != "7bit" else "8bit"))
            if kind == "attach_log":
                attach_text = _log_text(rng, cat == "outage")
                p2 = b64_attachment("text/plain; charset=\"us-ascii\"", "server.log", attach_text.encode())
            elif kind == "attach_png":
                p2 = b64_attachment("image/png", "скриншот.png" if lang == "ru" else "screenshot.png", _png(rng))
            else:
                p2 = b64_attachment("application/pdf", "счёт_%d.pdf" % n if lang == "ru" else "invoice_%d.pdf" % n, _pdf(rng))
            top_ct, top_body = multipart("mixed", [p1, p2], rng)
        elif kind == "forward_rfc822":
            inner_subject = subject
            subject = ("Fwd: " if lang == "en" else "Пересылаемое: ") + subject
            inner = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <fwd%d.%d@other.test>\r\n"
                     "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s"
                     % (enc_addr(pname, "colleague@other.test", "utf-8", "B"), from_addr, enc_header(inner_subject, "utf-8", "B"),
                        now.strftime("%a, %d %b %Y %H:%M:%S +0000"), n, seed, enc_body(text, "utf-8", "base64")))
            note = {"ru": "Пересылаю письмо коллеги, посмотрите, пожалуйста.", "en": "Forwarding from a colleague, please have a look."}[lang]
            p1 = leaf("text/plain", "utf-8", "8bit", enc_body(note, "utf-8", "8bit"))
            p2 = "Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n" + inner
            attach_text = text
            text = note
            top_ct, top_body = multipart("mixed", [p1, p2], rng)
        elif kind == "dsn":
            orig_to = "ivan%d@nonexistent.test" % n
            human = ("This is the mail system at host mx.remote.test.\n\nI'm sorry to have to inform you that your message could not\n"
                     "be delivered to one or more recipients.\n\n<%s>: host mx.nonexistent.test said: 550 5.1.1 User unknown" % orig_to)
            text = human
            p1 = leaf("text/plain", "us-ascii", "7bit", enc_body(human, "us-ascii", "7bit"), ["Content-Description: Notification"])
            p2 = ("Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\r\n"
                  "Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: 5.1.1\r\n" % orig_to)
            p3 = ("Content-Type: text/rfc822-headers\r\n\r\nFrom: support@%s\r\nTo: %s\r\nSubject: Re: your ticket\r\n" % (domain, orig_to))
            top_ct, top_body = multipart("report", [p1, p2, p3], rng, "; report-type=delivery-status")
        else:
            raise AssertionError(kind)

        # ---- headers
        from_hdr = enc_addr(pname, from_addr, charset_subj if subj_how != "raw" else "utf-8", subj_how if subj_how != "raw" else "B")
        hdrs = [
            "Return-Path: <%s>" % env_from,
            "From: %s" % from_hdr,
            "To: %s" % to,
            "Subject: %s" % enc_header(subject, charset_subj, subj_how),
            "Date: %s" % now.strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "Message-ID: %s" % msgid,
            "MIME-Version: 1.0",
        ]
        if in_reply_to:
            hdrs += ["In-Reply-To: %s" % in_reply_to, "References: %s" % "\r\n ".join(references)]
        if rng.random() < 0.15 and not auto and not is_list:
            hdrs.append("Cc: %s" % rng.choice(["supervisor@%s" % domain, "sales@%s" % domain]))
        hdrs.append(rng.choice(["User-Agent: Mozilla Thunderbird 115.8.1", "X-Mailer: Microsoft Outlook 16.0",
                                "X-Mailer: Roundcube Webmail/1.6.5", "X-Mailer: The Bat! (v10.5.3)",
                                "User-Agent: Mail.ru webmail", "X-Mailer: Apple Mail (2.3774)"]))
        hdrs += extra_hdrs
        if top_ct:
            hdrs.append(top_ct)
            body = top_body
        else:
            hb, _, body = top_body.partition("\r\n\r\n")
            hdrs += hb.split("\r\n")
        raw = "\r\n".join(hdrs[1:]) + "\r\n\r\n" + body  # Return-Path is added by delivery, not by senders
        if not raw.endswith("\r\n"):
            raw += "\r\n"
        # Non-UTF-8 8bit parts must keep their charset's bytes
        if charset in ("koi8-r", "windows-1251") and cte == "8bit" and body_charset == charset:
            raw_bytes = raw.encode(charset, errors="strict") if subj_how != "raw" else None
            if raw_bytes is None:  # raw UTF-8 subject + KOI8-R body: encode header and body separately
                h, _, b = raw.partition("\r\n\r\n")
                raw_bytes = h.encode("utf-8") + b"\r\n\r\n" + b.encode(charset)
        else:
            raw_bytes = raw.encode("utf-8")

        body_plain = strip_html(html_text) if (html_text and kind.startswith("html_only")) else text
        meta = {
            "n": n, "message_id": msgid, "lang": lang, "category": cat, "kind": kind,
            "charset": charset, "cte": cte, "subject_encoding": subj_how,
            "from": from_addr, "envelope_from": env_from, "to": to, "subject": subject,
            "date": now.strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "in_reply_to": in_reply_to, "references": references,
            "auto_submitted": auto, "mailing_list": is_list,
            "match_subject": bool(OUTAGE_RE.search(subject)),
            "match_body": bool(OUTAGE_RE.search(body_plain)),
            "match_attachment": bool(attach_text and OUTAGE_RE.search(attach_text)),
            "queue": ("%s@%s" % (QUEUES[cat], domain)) if cat in QUEUES else None,
            "should_ack": not auto and not is_list and env_from != "",
            "size": len(raw_bytes),
        }
        meta["match"] = meta["match_subject"] or meta["match_body"]
        history.append((meta, text))
        yield raw_bytes, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--to", default="monitoring@example.test")
    ap.add_argument("--domain", default="example.test")
    ap.add_argument("--customers", type=int, default=20)
    ap.add_argument("--tag", default="", help="suffix for every Message-ID (fresh IDs for repeated runs)")
    ap.add_argument("--out", help="directory for NNNNN.eml + manifest.jsonl")
    ap.add_argument("--print", action="store_true", help="write messages to stdout, separated by a line of '='")
    ap.add_argument("--stats", action="store_true", help="print a summary to stderr")
    a = ap.parse_args()
    metas = []
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        man = open(os.path.join(a.out, "manifest.jsonl"), "w")
    for raw, meta in generate(a.count, a.seed, a.to, a.domain, a.customers, tag=a.tag):
        metas.append(meta)
        if a.out:
            with open(os.path.join(a.out, "%05d.eml" % meta["n"]), "wb") as f:
                f.write(raw)
            man.write(json.dumps(meta, ensure_ascii=False) + "\n")
        if a.print:
            sys.stdout.buffer.write(raw + b"\n" + b"=" * 72 + b"\n")
    if a.out:
        man.close()
    if a.stats or a.out:
        from collections import Counter
        sz = sorted(m["size"] for m in metas)
        print("messages=%d avg_size=%d median_size=%d max_size=%d match=%d auto=%d list=%d"
              % (len(metas), sum(sz) / len(sz), sz[len(sz) // 2], sz[-1], sum(m["match"] for m in metas),
                 sum(m["auto_submitted"] for m in metas), sum(m["mailing_list"] for m in metas)), file=sys.stderr)
        print("kinds:", dict(Counter(m["kind"] for m in metas)), file=sys.stderr)
        print("charsets:", dict(Counter(m["charset"] for m in metas)), file=sys.stderr)


if __name__ == "__main__":
    main()

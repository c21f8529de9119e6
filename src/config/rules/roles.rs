//! `[roles]`: who counts as staff, and which domains are free mail providers (people
//! there are no one organisation). Decide reads it to tell a ticket's customer, their
//! colleagues, staff and strangers apart.

use toml::Spanned;

use super::raw;
use super::values::{looks_like_address, span};
use super::Collector;

/// Free mail providers: two people at one of these are not colleagues. `[roles]
/// freemail` adds to the list.
const FREEMAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "zoho.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "yandex.ru",
    "yandex.com",
    "ya.ru",
    "mail.ru",
    "bk.ru",
    "inbox.ru",
    "list.ru",
    "internet.ru",
    "rambler.ru",
    "qq.com",
    "163.com",
];

#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// Staff addresses, lower case.
    pub staff_addresses: Vec<String>,
    /// Staff domains, lower case, without `@`.
    pub staff_domains: Vec<String>,
    /// Staff only when a trusted `Authentication-Results` says DMARC or SPF passes.
    pub staff_authenticated: bool,
    /// Free mail domains, lower case.
    pub freemail: Vec<String>,
}

impl Roles {
    /// Whether `address` (lower case) is listed as staff, by address or domain.
    pub fn lists_staff(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.staff_addresses.iter().any(|a| a == address)
            || self.staff_domains.iter().any(|d| d == domain)
    }

    pub fn is_freemail(&self, domain: &str) -> bool {
        self.freemail.iter().any(|d| d == domain)
    }
}

/// Entries of `staff` are addresses, or `@domain` for everyone at a domain; without
/// `staff`, everyone at the company's domain is staff.
pub(super) fn compile_roles(c: &mut Collector<'_>, r: &raw::Roles, company_domain: &str) -> Roles {
    let mut roles = Roles {
        staff_authenticated: r.staff_authenticated,
        freemail: FREEMAIL.iter().map(|d| d.to_string()).collect(),
        ..Roles::default()
    };
    let staff: Vec<Spanned<String>> = match &r.staff {
        Some(list) => list.clone(),
        None => vec![Spanned::new(0..0, format!("@{company_domain}"))],
    };
    for (i, entry) in staff.iter().enumerate() {
        let e = entry.get_ref().trim().to_ascii_lowercase();
        match e.strip_prefix('@') {
            Some(d) if looks_like_address(&format!("x@{d}")) => roles.staff_domains.push(d.into()),
            None if looks_like_address(&e) => roles.staff_addresses.push(e),
            _ => c.at(
                span(entry),
                format!("roles.staff[{i}]"),
                format!("{e:?} is neither an address nor @domain"),
            ),
        }
    }
    for (i, d) in r.freemail.iter().enumerate() {
        let domain = d
            .get_ref()
            .trim()
            .trim_start_matches('@')
            .to_ascii_lowercase();
        if looks_like_address(&format!("x@{domain}")) {
            roles.freemail.push(domain);
        } else {
            c.at(span(d), format!("roles.freemail[{i}]"), "not a domain name");
        }
    }
    roles
}

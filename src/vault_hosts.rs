//! Which vault hosts the operator uses: the known Azure clouds' Key Vault and Managed HSM
//! endpoints (by DNS suffix, with the token scope each service's challenge names), and the
//! hosts the operator's administrator allows besides them (`--allowed-vault-hosts`).

use crate::validate::{InvalidSpec, invalid};

/// An Azure cloud with Key Vault and Managed HSM endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Public,
    China,
    UsGovernment,
}

/// Which of the two key services a vault host belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultService {
    KeyVault,
    ManagedHsm,
}

/// A vault host under a known cloud's DNS suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownEndpoint {
    pub cloud: Cloud,
    pub service: VaultService,
}

/// The DNS suffixes of Key Vault and Managed HSM per Azure cloud, from Microsoft Learn,
/// "About keys, secrets, and certificates", section "DNS suffixes for object identifiers"
/// (https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#dns-suffixes-for-object-identifiers):
/// Azure Cloud `.vault.azure.net` / `.managedhsm.azure.net`, Azure operated by 21Vianet
/// (China) `.vault.azure.cn` / `.managedhsm.azure.cn`, Azure US Government
/// `.vault.usgovcloudapi.net` / `.managedhsm.usgovcloudapi.net`. (Azure Germany's
/// `.vault.microsoftazure.de` was retired in 2021.)
const KNOWN_SUFFIXES: [(&str, Cloud, VaultService); 6] = [
    ("vault.azure.net", Cloud::Public, VaultService::KeyVault),
    ("vault.azure.cn", Cloud::China, VaultService::KeyVault),
    (
        "vault.usgovcloudapi.net",
        Cloud::UsGovernment,
        VaultService::KeyVault,
    ),
    (
        "managedhsm.azure.net",
        Cloud::Public,
        VaultService::ManagedHsm,
    ),
    (
        "managedhsm.azure.cn",
        Cloud::China,
        VaultService::ManagedHsm,
    ),
    (
        "managedhsm.usgovcloudapi.net",
        Cloud::UsGovernment,
        VaultService::ManagedHsm,
    ),
];

impl KnownEndpoint {
    /// The DNS suffix of this cloud's service, e.g. `managedhsm.azure.net`.
    pub fn dns_suffix(self) -> &'static str {
        KNOWN_SUFFIXES
            .iter()
            .find(|(_, cloud, service)| *cloud == self.cloud && *service == self.service)
            .map(|(suffix, _, _)| *suffix)
            .unwrap_or("vault.azure.net")
    }

    /// The token scope the service's challenge names: `https://<suffix>/.default` (e.g.
    /// `https://vault.azure.net/.default`, `https://managedhsm.azure.net/.default`). The
    /// SDK takes the scope from the 401 challenge and, with `verify_challenge_resource`,
    /// accepts it only when the vault host ends with `.<scope host>`.
    pub fn token_scope(self) -> String {
        format!("https://{}/.default", self.dns_suffix())
    }
}

/// The host of a normalised vault URL (`https://host[:port]`), and its port if any.
fn host_and_port(url: &str) -> (&str, Option<&str>) {
    let authority = url.strip_prefix("https://").unwrap_or(url);
    if authority.starts_with('[') {
        // IPv6 literal: [::1]:8443
        return match authority.rsplit_once("]:") {
            Some((host, port)) => (&authority[..host.len() + 1], Some(port)),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// The known cloud endpoint a normalised vault URL points at, with the vault name (the label
/// before the suffix), or `None` for any other host.
pub fn known_endpoint(url: &str) -> Option<(&str, KnownEndpoint)> {
    let (host, _) = host_and_port(url);
    KNOWN_SUFFIXES.iter().find_map(|(suffix, cloud, service)| {
        let name = host.strip_suffix(suffix)?.strip_suffix('.')?;
        Some((
            name,
            KnownEndpoint {
                cloud: *cloud,
                service: *service,
            },
        ))
    })
}

/// Key Vault and Managed HSM names: 3-24 characters, letters, digits and dashes, starting
/// with a letter, ending with a letter or digit, no consecutive dashes (Azure resource naming
/// rules for `Microsoft.KeyVault/vaults` and `managedHSMs`).
fn is_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--")
}

/// A host under a known cloud's suffix must be a valid vault name on the default port.
fn check_known_endpoint(url: &str, name: &str, endpoint: KnownEndpoint) -> Result<(), InvalidSpec> {
    let suffix = endpoint.dns_suffix();
    if !is_vault_name(name) {
        return Err(invalid(
            "vaultUrl",
            format!(
                "{name:?} is not a vault name: 3-24 letters, digits and dashes, starting with a letter, ending with a letter or digit, no consecutive dashes (e.g. https://my-vault.{suffix})"
            ),
        ));
    }
    if host_and_port(url).1.is_some() {
        return Err(invalid(
            "vaultUrl",
            format!(
                "{suffix} is served on port 443 only: remove the port (https://{name}.{suffix})"
            ),
        ));
    }
    Ok(())
}

/// Vault hosts the operator accepts besides the known clouds' Key Vault and Managed HSM
/// endpoints (`--allowed-vault-hosts`): private DNS names, emulators. A token is only ever
/// sent to a host of a known cloud or one listed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultHosts {
    rules: Vec<HostRule>,
    /// Loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`), any port: a local emulator.
    loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    /// `*.example.com`: any host below the domain (stored as `.example.com`).
    Below(String),
}

impl VaultHosts {
    /// Only the known clouds' endpoints.
    pub fn known_clouds() -> Self {
        VaultHosts::default()
    }

    /// `entries`: exact hosts (`kv.internal.example`, `10.0.0.4`, `[fd00::4]`; any port) or
    /// `*.domain` (any host below the domain). `loopback` also admits local hosts.
    pub fn parse<S: AsRef<str>>(entries: &[S], loopback: bool) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in entries {
            let raw = entry.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let text = raw.trim_end_matches('.').to_ascii_lowercase();
            let (below, host) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest.to_owned()),
                None => (false, text.clone()),
            };
            let bracketed = host.starts_with('[') && host.ends_with(']');
            let plain = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !host.starts_with('.');
            if !(plain || (bracketed && !below)) {
                return Err(format!(
                    "{raw:?} is not a host name, IP address or *.domain (no scheme, port or path)"
                ));
            }
            rules.push(if below {
                HostRule::Below(format!(".{host}"))
            } else {
                HostRule::Exact(host)
            });
        }
        Ok(VaultHosts { rules, loopback })
    }

    /// Whether the operator may use the vault at `url` (normalised by
    /// [`vault_url`](crate::validate::vault_url)): a known cloud endpoint, a host this setting
    /// lists, or loopback when allowed.
    pub fn check(&self, url: &str) -> Result<(), InvalidSpec> {
        if let Some((name, endpoint)) = known_endpoint(url) {
            return check_known_endpoint(url, name, endpoint);
        }
        let (host, _) = host_and_port(url);
        let listed = self.rules.iter().any(|rule| match rule {
            HostRule::Exact(exact) => host == exact,
            HostRule::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        });
        if listed || (self.loopback && is_loopback(host)) {
            return Ok(());
        }
        Err(invalid(
            "vaultUrl",
            format!(
                "{host} is not a Key Vault or Managed HSM endpoint of a known Azure cloud; use e.g. https://my-vault.vault.azure.net or https://my-hsm.managedhsm.azure.net (China: .vault.azure.cn, .managedhsm.azure.cn; US Government: .vault.usgovcloudapi.net, .managedhsm.usgovcloudapi.net), or ask the operator's administrator to allow the host (--allowed-vault-hosts)"
            ),
        ))
    }
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cloud_endpoints_and_their_scopes() {
        let cases = [
            (
                "https://my-vault.vault.azure.net",
                Cloud::Public,
                VaultService::KeyVault,
                "https://vault.azure.net/.default",
            ),
            (
                "https://my-vault.vault.azure.cn",
                Cloud::China,
                VaultService::KeyVault,
                "https://vault.azure.cn/.default",
            ),
            (
                "https://my-vault.vault.usgovcloudapi.net",
                Cloud::UsGovernment,
                VaultService::KeyVault,
                "https://vault.usgovcloudapi.net/.default",
            ),
            (
                "https://my-hsm.managedhsm.azure.net",
                Cloud::Public,
                VaultService::ManagedHsm,
                "https://managedhsm.azure.net/.default",
            ),
            (
                "https://my-hsm.managedhsm.azure.cn",
                Cloud::China,
                VaultService::ManagedHsm,
                "https://managedhsm.azure.cn/.default",
            ),
            (
                "https://my-hsm.managedhsm.usgovcloudapi.net",
                Cloud::UsGovernment,
                VaultService::ManagedHsm,
                "https://managedhsm.usgovcloudapi.net/.default",
            ),
        ];
        for (url, cloud, service, scope) in cases {
            let (name, endpoint) = known_endpoint(url).unwrap_or_else(|| panic!("{url}"));
            assert!(name.starts_with("my-"), "{url}");
            assert_eq!(endpoint, KnownEndpoint { cloud, service }, "{url}");
            assert_eq!(endpoint.token_scope(), scope, "{url}");
            // The SDK's challenge check: the vault host ends with `.<scope host>`.
            let scope_host = url::Url::parse(scope)
                .unwrap()
                .host_str()
                .unwrap()
                .to_owned();
            assert!(url.ends_with(&format!(".{scope_host}")), "{url}");
        }
        for other in [
            "https://127.0.0.1:8443",
            "https://vault.azure.net",
            "https://my-vault.vault.azure.net.evil.example",
            "https://my-vault.xvault.azure.net",
            "https://kv.privatelink.vaultcore.azure.net",
        ] {
            assert_eq!(known_endpoint(other), None, "{other}");
        }
    }

    #[test]
    fn vault_hosts_allow_known_clouds_listed_hosts_and_loopback_when_asked() {
        let strict = VaultHosts::known_clouds();
        strict.check("https://my-vault.vault.azure.net").unwrap();
        strict
            .check("https://my-hsm.managedhsm.usgovcloudapi.net")
            .unwrap();
        for refused in [
            "https://127.0.0.1:8443",
            "https://localhost:8443",
            "https://[::1]:8443",
            "https://kv.internal.example",
            "https://my-vault.vault.azure.net.evil.example",
        ] {
            let e = strict.check(refused).unwrap_err();
            assert_eq!(e.field, "vaultUrl");
            assert!(
                e.message.contains("https://my-vault.vault.azure.net"),
                "{e}"
            );
            assert!(e.message.contains("--allowed-vault-hosts"), "{e}");
        }
        let local = VaultHosts::parse::<&str>(&[], true).unwrap();
        for url in [
            "https://127.0.0.1:8443",
            "https://127.1.2.3",
            "https://localhost:1",
            "https://[::1]:8443",
        ] {
            local.check(url).unwrap();
        }
        local.check("https://10.0.0.4").unwrap_err();
        let listed = VaultHosts::parse(
            &[
                "kv.internal.example",
                "*.vaults.corp.example.",
                "10.0.0.4",
                "[FD00::4]",
            ],
            false,
        )
        .unwrap();
        for url in [
            "https://kv.internal.example",
            "https://kv.internal.example:8443",
            "https://a.vaults.corp.example",
            "https://a.b.vaults.corp.example",
            "https://10.0.0.4",
            "https://[fd00::4]:443",
        ] {
            listed.check(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for url in [
            "https://vaults.corp.example",
            "https://xkv.internal.example",
            "https://evilvaults.corp.example",
            "https://127.0.0.1",
        ] {
            listed.check(url).unwrap_err();
        }
        for bad in [
            "https://kv.example",
            "kv.example:443",
            "kv.example/path",
            "*",
            "*.",
            "a*.example",
            "*.[::1]",
        ] {
            VaultHosts::parse(&[bad], false).unwrap_err();
        }
    }
}

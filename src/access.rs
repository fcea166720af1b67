//! Which namespaces may use which vaults. The operator's identity can usually reach many
//! vaults; without a policy any team could point a VaultKey at another team's vault. Pure.
//!
//! ```yaml
//! # --vault-access-file: namespaces not listed get `default` (empty: no vault at all).
//! default: []
//! namespaces:
//!   payments: ["https://payments-kv.vault.azure.net"]
//!   platform: ["https://*.vault.azure.net"]        # any vault of the public cloud
//! ```
//! Without a file every namespace may use every vault.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::validate::vault_url;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultAccess {
    /// Vaults for namespaces the file does not list.
    #[serde(default)]
    pub default: Vec<String>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, Vec<String>>,
}

/// How the operator decides vault access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPolicy {
    AllowAll,
    Restricted(VaultAccess),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {pattern:?} is not a vault URL or https://*.<domain> pattern")]
    Pattern { path: String, pattern: String },
}

impl AccessPolicy {
    pub fn load(path: &std::path::Path) -> Result<AccessPolicy, AccessFileError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AccessFileError::Read {
            path: display.clone(),
            source,
        })?;
        let access: VaultAccess =
            serde_norway::from_str(&text).map_err(|e| AccessFileError::Parse {
                path: display.clone(),
                message: e.to_string(),
            })?;
        for pattern in access
            .default
            .iter()
            .chain(access.namespaces.values().flatten())
        {
            if Pattern::parse(pattern).is_none() {
                return Err(AccessFileError::Pattern {
                    path: display,
                    pattern: pattern.clone(),
                });
            }
        }
        Ok(AccessPolicy::Restricted(access))
    }

    /// Whether `namespace` may use the vault at `url` (already normalised by validation).
    pub fn allows(&self, namespace: &str, url: &str) -> bool {
        match self {
            AccessPolicy::AllowAll => true,
            AccessPolicy::Restricted(access) => access
                .namespaces
                .get(namespace)
                .unwrap_or(&access.default)
                .iter()
                .filter_map(|p| Pattern::parse(p))
                .any(|p| p.matches(url)),
        }
    }
}

enum Pattern {
    Exact(String),
    /// `https://*.vault.azure.net[:port]`: any single host label before the suffix.
    Suffix {
        suffix: String,
        port: Option<String>,
    },
}

impl Pattern {
    fn parse(text: &str) -> Option<Pattern> {
        if let Some(rest) = text.strip_prefix("https://*.") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port.to_owned())),
                None => (rest, None),
            };
            if host.is_empty() || host.contains(['/', '*', '?', '#']) {
                return None;
            }
            return Some(Pattern::Suffix {
                suffix: format!(".{}", host.to_ascii_lowercase()),
                port,
            });
        }
        vault_url(text).ok().map(Pattern::Exact)
    }

    fn matches(&self, url: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == url,
            Pattern::Suffix { suffix, port } => {
                let Some(authority) = url.strip_prefix("https://") else {
                    return false;
                };
                let (host, url_port) = match authority.rsplit_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (authority, None),
                };
                let label = host.strip_suffix(suffix.as_str());
                label.is_some_and(|l| !l.is_empty() && !l.contains('.'))
                    && url_port == port.as_deref()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> AccessPolicy {
        AccessPolicy::Restricted(serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn without_a_file_everything_is_allowed() {
        assert!(AccessPolicy::AllowAll.allows("any", "https://x.vault.azure.net"));
    }

    #[test]
    fn listed_namespaces_get_their_vaults_only() {
        let p = policy("namespaces:\n  payments: [https://Payments-KV.vault.azure.net/]\n");
        assert!(p.allows("payments", "https://payments-kv.vault.azure.net"));
        assert!(!p.allows("payments", "https://other.vault.azure.net"));
        assert!(
            !p.allows("unlisted", "https://payments-kv.vault.azure.net"),
            "empty default denies"
        );
    }

    #[test]
    fn default_applies_to_unlisted_namespaces() {
        let p = policy("default: ['https://*.vault.azure.net']\nnamespaces:\n  locked: []\n");
        assert!(p.allows("anyone", "https://team.vault.azure.net"));
        assert!(
            !p.allows("locked", "https://team.vault.azure.net"),
            "a listed namespace does not fall back"
        );
    }

    #[test]
    fn wildcards_match_one_label_and_the_port() {
        let p = policy("default: ['https://*.vault.azure.net', 'https://*.localhost:8443']\n");
        assert!(!p.allows("a", "https://vault.azure.net"));
        assert!(!p.allows("a", "https://a.b.vault.azure.net"));
        assert!(!p.allows("a", "https://evil.vault.azure.net.attacker.example"));
        assert!(!p.allows("a", "https://x.vault.azure.net:8443"));
        assert!(p.allows("a", "https://x.localhost:8443"));
        assert!(!p.allows("a", "https://x.localhost"));
    }

    #[test]
    fn bad_files_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.yaml");
        std::fs::write(&path, "namespaces:\n  a: ['http://plain.example']\n").unwrap();
        assert!(matches!(
            AccessPolicy::load(&path),
            Err(AccessFileError::Pattern { .. })
        ));
        std::fs::write(&path, "namespace: {}\n").unwrap();
        assert!(matches!(
            AccessPolicy::load(&path),
            Err(AccessFileError::Parse { .. })
        ));
        std::fs::write(&path, "namespaces:\n  a: ['https://*.vault.azure.net']\n").unwrap();
        assert!(
            AccessPolicy::load(&path)
                .unwrap()
                .allows("a", "https://k.vault.azure.net")
        );
    }
}

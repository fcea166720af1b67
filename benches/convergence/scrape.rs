//! The operator's /metrics, scraped and summed.

use super::*;

// ------------------------------------------------------------------------------------------
// Prometheus text
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    pub(crate) series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let labels = body
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            series.push((name, labels, value));
        }
        Scrape { series }
    }

    pub(crate) fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    pub(crate) fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.series {
            if n == name
                && let Some(l) = labels.get(label)
            {
                *out.entry(l.clone()).or_default() += v;
            }
        }
        out
    }

    /// `self - earlier`, series by series (counters only make sense).
    pub(crate) fn minus(&self, earlier: &Scrape) -> Scrape {
        let series = self
            .series
            .iter()
            .map(|(n, l, v)| {
                let before = earlier
                    .series
                    .iter()
                    .find(|(n2, l2, _)| n2 == n && l2 == l)
                    .map_or(0.0, |(_, _, v)| *v);
                (n.clone(), l.clone(), v - before)
            })
            .collect();
        Scrape { series }
    }

    pub(crate) fn kv_requests(&self) -> f64 {
        self.sum("vaultkey_keyvault_requests_total", &[])
    }
    pub(crate) fn kv_writes(&self) -> f64 {
        self.by("vaultkey_keyvault_requests_total", "operation")
            .iter()
            .filter(|(op, _)| !is_read(op))
            .map(|(_, v)| v)
            .sum()
    }
    pub(crate) fn kube_writes(&self) -> f64 {
        self.sum("vaultkey_kubernetes_writes_total", &[])
    }
    pub(crate) fn reconciles(&self) -> f64 {
        self.sum("vaultkey_reconciles_total", &[])
    }
}

pub(crate) fn is_read(op: &str) -> bool {
    matches!(
        op,
        "get_key" | "list_keys" | "list_versions" | "get_rotation_policy" | "get_deleted_key"
    )
}

pub(crate) fn per_key(map: &BTreeMap<String, f64>, n: f64) -> Value {
    Value::Object(
        map.iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(k, v)| (k.clone(), json!(round(v / n, 3))))
            .collect(),
    )
}

//! The test environment the bench runs in, and CPU/memory sampling of its processes.

use super::*;

/// What `tests/env/testenv.sh run` exports.
pub(crate) struct Env {
    pub(crate) kubeconfig: PathBuf,
    pub(crate) vault_url: String,
    pub(crate) second_vault_url: String,
    pub(crate) listed_vault_url: String,
    pub(crate) vault_ca: PathBuf,
    pub(crate) admin: String,
    pub(crate) env_dir: PathBuf,
}

impl Env {
    pub(crate) fn get() -> Result<Env, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                format!("{name} is not set: run through `tests/env/testenv.sh run -- cargo bench --bench convergence`")
            })
        };
        Ok(Env {
            kubeconfig: var("VAULTKEY_TEST_KUBECONFIG")?.into(),
            vault_url: var("VAULTKEY_TEST_VAULT_URL")?
                .trim_end_matches('/')
                .to_owned(),
            second_vault_url: var("VAULTKEY_TEST_PURGEABLE_VAULT_URL")?
                .trim_end_matches('/')
                .to_owned(),
            listed_vault_url: var("VAULTKEY_TEST_LISTED_VAULT_URL")?
                .trim_end_matches('/')
                .to_owned(),
            vault_ca: var("VAULTKEY_TEST_VAULT_CA")?.into(),
            admin: var("VAULTKEY_TEST_EMULATOR_ADMIN")?
                .trim_end_matches('/')
                .to_owned(),
            env_dir: var("VAULTKEY_TEST_ENV_DIR")?.into(),
        })
    }

    pub(crate) fn pid(&self, component: &str) -> Option<u32> {
        std::fs::read_to_string(self.env_dir.join("pids").join(format!("{component}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub(crate) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.admin));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("emulator admin API reachable");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "emulator {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

// ------------------------------------------------------------------------------------------
// /proc sampling
// ------------------------------------------------------------------------------------------

pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// A `/proc/<pid>/status` field in KiB (VmHWM, VmRSS).
pub(crate) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (busy, total) ticks of the whole machine.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU ticks of the processes under test and of the machine, to attribute a phase's CPU.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    pub(crate) at: Instant,
    pub(crate) procs: BTreeMap<&'static str, u64>,
    pub(crate) machine: (u64, u64),
}

pub(crate) fn sample(env: &Env, operator: Option<u32>) -> CpuSample {
    let mut procs = BTreeMap::new();
    for name in ["etcd", "kube-apiserver", "kv-emulator"] {
        if let Some(t) = env.pid(name).and_then(cpu_ticks) {
            procs.insert(name, t);
        }
    }
    if let Some(t) = operator.and_then(cpu_ticks) {
        procs.insert("operator", t);
    }
    if let Some(t) = cpu_ticks(std::process::id()) {
        procs.insert("bench", t);
    }
    CpuSample {
        at: Instant::now(),
        procs,
        machine: machine_ticks(),
    }
}

/// CPU seconds per process between two samples, plus "other" (everything else on the
/// machine: other engineers' builds, ...) and the wall time.
pub(crate) fn cpu_between(a: &CpuSample, b: &CpuSample, hz: f64) -> Value {
    let mut out = serde_json::Map::new();
    let mut ours = 0u64;
    for (name, end) in &b.procs {
        let d = end.saturating_sub(a.procs.get(name).copied().unwrap_or(0));
        ours += d;
        out.insert((*name).into(), json!(round(d as f64 / hz, 2)));
    }
    let busy = b.machine.0.saturating_sub(a.machine.0);
    out.insert(
        "other".into(),
        json!(round(busy.saturating_sub(ours) as f64 / hz, 2)),
    );
    out.insert(
        "wall".into(),
        json!(round(b.at.duration_since(a.at).as_secs_f64(), 2)),
    );
    Value::Object(out)
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

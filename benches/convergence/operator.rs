//! The operator binary under measurement, as a child process.

use super::*;

// ------------------------------------------------------------------------------------------
// The operator process
// ------------------------------------------------------------------------------------------

pub(crate) struct Operator {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) metrics_url: String,
    pub(crate) log: PathBuf,
}

impl Operator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        env: &Env,
        bin: &Path,
        namespace: &str,
        resync: u64,
        concurrency: usize,
        creates_per_10s: Option<u32>,
        extra: &[String],
        log: PathBuf,
    ) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let file = std::fs::File::create(&log).expect("operator log file");
        let mut command = Command::new(bin);
        command
            .args(["run", "--namespace", namespace])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--resync-seconds={resync}"))
            .arg(format!("--vault-concurrency={concurrency}"))
            .arg("--emulator-ca-file")
            .arg(&env.vault_ca)
            .args([
                "--emulator-static-token=bench",
                "--emulator-skip-challenge-resource-check",
                "--log-level=info",
            ]);
        if let Some(c) = creates_per_10s {
            command.arg(format!("--creates-per-10s={c}"));
        }
        let child = command
            .args(extra)
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        Operator {
            child,
            pid,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    pub(crate) async fn scrape(&self) -> Scrape {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&self.metrics_url).await
                && let Ok(text) = r.text().await
            {
                return Scrape::parse(&text);
            }
            assert!(
                Instant::now() < deadline,
                "the operator's /metrics did not answer (log: {})",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as Kubernetes stops a pod; SIGKILL after 10 s.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        for _ in 0..100 {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

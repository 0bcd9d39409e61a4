//! Deploys from the plugins directory a host watches (`grove run --watch`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use grove_host::{DeployOptions, Host};

/// How often the plugins directory is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Deploys every `.wasm` file in `plugins` that appears or changes, until
/// the task is dropped. An incompatible version is refused (and logged), as
/// `grove deploy` without `--force` would refuse it.
pub async fn watch(host: Host, plugins: PathBuf) {
    let mut seen = listing(&plugins);
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let now = listing(&plugins);
        for (file, stamp) in &now {
            if seen.get(file) == Some(stamp) {
                continue;
            }
            let (deploying, path) = (host.clone(), file.clone());
            let deployed = tokio::task::spawn_blocking(move || {
                let bytes = std::fs::read(&path)?;
                let deployed = deploying.deploy(&path, &bytes, &DeployOptions::default());
                Ok::<_, anyhow::Error>(deployed.map(|d| (d, bytes)))
            })
            .await;
            match deployed {
                Ok(Ok(Ok((deployed, _))))
                    if deployed.previous.as_ref() == Some(&deployed.content_hash) => {}
                Ok(Ok(Ok((deployed, bytes)))) => {
                    tracing::info!(
                        file = %file.display(),
                        actor_type = %deployed.actor_type,
                        moving = deployed.moving,
                        "deployed a changed plugin file"
                    );
                    if let Err(error) = host.publish(&deployed, &bytes, false).await {
                        tracing::warn!(file = %file.display(), actor_type = %deployed.actor_type, "{error}");
                    }
                }
                Ok(Ok(Err(error))) => {
                    tracing::error!(file = %file.display(), "not deployed: {error}")
                }
                Ok(Err(error)) => tracing::warn!(file = %file.display(), %error, "cannot read"),
                Err(error) => tracing::error!(file = %file.display(), %error, "deploy failed"),
            }
        }
        seen = now;
    }
}

/// Each `.wasm` file in `dir` with its modification time and length.
fn listing(dir: &Path) -> HashMap<PathBuf, (SystemTime, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), (meta.modified().ok()?, meta.len())))
        })
        .collect()
}

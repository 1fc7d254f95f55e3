//! `ferry user add`.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use ferry_core::config::UserRole;

/// Asks for a password, hashes it and writes the user into the client's client.yaml, after
/// checking that the whole project is still valid with the change.
pub fn add(dir: &Path, client: &str, user: &str, role: UserRole) -> anyhow::Result<()> {
    let file = dir.join("clients").join(client).join("client.yaml");
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}; is `{client}` a client of the project in {}?",
            file.display(),
            dir.display()
        )
    })?;
    let password = read_password(user)?;
    if password.chars().count() < 8 {
        bail!("the password is too short; use at least 8 characters");
    }
    let hash = ferry_console::auth::hash_password(&password);
    let changed = ferry_console::accounts::set_user(&text, user, role.as_str(), &hash)
        .map_err(|message| anyhow::anyhow!("{}: {message}", file.display()))?;
    // Refuse to leave a project that no longer validates.
    let path = format!("clients/{client}/client.yaml");
    if let Err(error) =
        ferry_engine::registrar::check_change(dir, &crate::registry(), &path, &changed)
    {
        bail!("{} was not changed:\n{error}", file.display());
    }
    let temporary = file.with_extension("yaml.ferry-tmp");
    std::fs::write(&temporary, &changed)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    println!(
        "{client}/{user}: {role}, password set in {}",
        file.display()
    );
    Ok(())
}

/// The password from a prompt without echo, or the first line of stdin.
fn read_password(user: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

//! `ferry user add`: writes a user's role and password hash into `client.yaml`, keeping the
//! rest of the file (comments included) as it was.

/// `text` (a client.yaml) with `user` set to `role` and `hash`: replaced where the user is
/// already listed, added under `users:` otherwise (and `users:` added when missing).
pub fn set_user(text: &str, user: &str, role: &str, hash: &str) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let users_line = lines.iter().position(|line| {
        line.starts_with("users:") && matches!(line["users:".len()..].trim(), "" | "{}" | "[]")
            || line.starts_with("users:") && line["users:".len()..].trim().starts_with('#')
    });
    let block = |indent: &str| {
        vec![
            format!("{indent}{user}:"),
            format!("{indent}  role: {role}"),
            format!("{indent}  password_hash: \"{hash}\""),
        ]
    };
    let Some(at) = users_line else {
        if lines.iter().any(|line| line.starts_with("users:")) {
            return Err(
                "`users:` is written in flow style ({...}); write it as a block to let \
                 ferry edit it, or edit it by hand"
                    .to_string(),
            );
        }
        if lines.last().is_some_and(|line| !line.trim().is_empty()) {
            lines.push(String::new());
        }
        lines.push("users:".to_string());
        lines.extend(block("  "));
        return Ok(lines.join("\n") + "\n");
    };
    lines[at] = "users:".to_string();
    // The users' block: the indented (or blank, or comment) lines after `users:`.
    let end = (at + 1..lines.len())
        .find(|&i| {
            let line = &lines[i];
            !line.trim().is_empty() && !line.starts_with(' ') && !line.starts_with('#')
        })
        .unwrap_or(lines.len());
    let indent: String = lines[at + 1..end]
        .iter()
        .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| line.chars().take_while(|c| *c == ' ').collect())
        .unwrap_or_else(|| "  ".to_string());
    let entry = format!("{indent}{user}:");
    let existing =
        (at + 1..end).find(|&i| lines[i] == entry || lines[i].starts_with(&format!("{entry} ")));
    match existing {
        Some(start) => {
            if lines[start].trim_end() != entry {
                return Err(format!(
                    "user `{user}` is written in flow style; write it as a block or edit it by hand"
                ));
            }
            let stop = (start + 1..end)
                .find(|&i| {
                    let line = &lines[i];
                    !line.trim().is_empty() && !line.starts_with(&format!("{indent} "))
                })
                .unwrap_or(end);
            lines.splice(start..stop, block(&indent));
        }
        None => {
            lines.splice(at + 1..at + 1, block(&indent));
        }
    }
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::set_user;

    #[test]
    fn adds_users_section_and_keeps_comments() {
        let text = "# retention\nqueue_life_span: 1h\n";
        let out = set_user(text, "ada", "operator", "$argon2id$x").unwrap();
        assert_eq!(
            out,
            "# retention\nqueue_life_span: 1h\n\nusers:\n  ada:\n    role: operator\n    \
             password_hash: \"$argon2id$x\"\n"
        );
    }

    #[test]
    fn replaces_an_existing_user_and_keeps_the_others() {
        let text = "users:\n    # admins\n    ada:\n        role: operator\n        password_hash: \"old\"\n    bob:\n        role: operator\n        password_hash: \"b\"\nlog_life_span: 1d\n";
        let out = set_user(text, "ada", "administrator", "new").unwrap();
        assert_eq!(
            out,
            "users:\n    # admins\n    ada:\n      role: administrator\n      password_hash: \"new\"\n    bob:\n        role: operator\n        password_hash: \"b\"\nlog_life_span: 1d\n"
        );
        let out = set_user(&out, "cy", "operator", "c").unwrap();
        assert!(
            out.starts_with("users:\n    cy:\n      role: operator\n"),
            "{out}"
        );
    }

    #[test]
    fn empty_flow_users_become_a_block_and_full_flow_is_refused() {
        let out = set_user("users: {}\n", "ada", "operator", "h").unwrap();
        assert_eq!(
            out,
            "users:\n  ada:\n    role: operator\n    password_hash: \"h\"\n"
        );
        assert!(set_user("users: {ada: {role: operator}}\n", "ada", "operator", "h").is_err());
    }
}

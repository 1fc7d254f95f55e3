//! The demo project (written to the data directory on first start) and `ferry init`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Files of `ferry init`, relative to the project directory.
const INIT: &[(&str, &str)] = &[
    ("ferry.yaml", include_str!("templates/init/ferry.yaml")),
    (
        "connections.yaml",
        include_str!("templates/init/connections.yaml"),
    ),
    (
        "clients/example/client.yaml",
        include_str!("templates/init/client.yaml"),
    ),
    (
        "clients/example/pipelines/invoices.yaml",
        include_str!("templates/init/invoices.yaml"),
    ),
    (
        "clients/example/tests/invoices.yaml",
        include_str!("templates/init/tests/invoices.yaml"),
    ),
    (
        "clients/example/tests/expected/invoices-stamped.json",
        include_str!("templates/init/tests/invoices-stamped.json"),
    ),
];

/// A project's files: paths relative to the project directory, with their content.
type Files = &'static [(&'static str, &'static [u8])];

/// Files of `ferry init --example mail-to-erp`: mailbox → attachments → xlsx/XML → IDoc → SAP.
/// Bytes, since its test fixtures include a workbook and a PDF.
const MAIL_TO_ERP: Files = &[
    (
        "ferry.yaml",
        include_bytes!("templates/mail-to-erp/ferry.yaml"),
    ),
    (
        "connections.yaml",
        include_bytes!("templates/mail-to-erp/connections.yaml"),
    ),
    (".env", include_bytes!("templates/mail-to-erp/env")),
    (
        "clients/partners/client.yaml",
        include_bytes!("templates/mail-to-erp/client.yaml"),
    ),
    (
        "clients/partners/pipelines/orders.yaml",
        include_bytes!("templates/mail-to-erp/orders.yaml"),
    ),
    (
        "clients/partners/pipelines/price-lists.yaml",
        include_bytes!("templates/mail-to-erp/price-lists.yaml"),
    ),
    (
        "clients/partners/tests/orders.yaml",
        include_bytes!("templates/mail-to-erp/tests/orders.yaml"),
    ),
    (
        "clients/partners/tests/price-lists.yaml",
        include_bytes!("templates/mail-to-erp/tests/price-lists.yaml"),
    ),
    (
        "clients/partners/tests/expected/orders-PO-4711.json",
        include_bytes!("templates/mail-to-erp/tests/expected/orders-PO-4711.json"),
    ),
    (
        "clients/partners/tests/expected/orders-PO-4712.json",
        include_bytes!("templates/mail-to-erp/tests/expected/orders-PO-4712.json"),
    ),
    (
        "clients/partners/tests/expected/orders-broken.json",
        include_bytes!("templates/mail-to-erp/tests/expected/orders-broken.json"),
    ),
    (
        "clients/partners/tests/expected/price-lists-2027.json",
        include_bytes!("templates/mail-to-erp/tests/expected/price-lists-2027.json"),
    ),
    (
        "clients/partners/tests/fixtures/PO-4711.xml",
        include_bytes!("templates/mail-to-erp/tests/fixtures/PO-4711.xml"),
    ),
    (
        "clients/partners/tests/fixtures/PO-4711.pdf",
        include_bytes!("templates/mail-to-erp/tests/fixtures/PO-4711.pdf"),
    ),
    (
        "clients/partners/tests/fixtures/PO-4712.xml",
        include_bytes!("templates/mail-to-erp/tests/fixtures/PO-4712.xml"),
    ),
    (
        "clients/partners/tests/fixtures/broken-order.xml",
        include_bytes!("templates/mail-to-erp/tests/fixtures/broken-order.xml"),
    ),
    (
        "clients/partners/tests/fixtures/mail-body.txt",
        include_bytes!("templates/mail-to-erp/tests/fixtures/mail-body.txt"),
    ),
    (
        "clients/partners/tests/fixtures/prices-2027.xlsx",
        include_bytes!("templates/mail-to-erp/tests/fixtures/prices-2027.xlsx"),
    ),
];

/// The examples `ferry init --example NAME` writes, by name.
pub const EXAMPLES: &[(&str, Files)] = &[("mail-to-erp", MAIL_TO_ERP)];

/// Files of the demo project.
const DEMO: &[(&str, &str)] = &[
    ("ferry.yaml", include_str!("templates/demo/ferry.yaml")),
    (
        "clients/demo/client.yaml",
        include_str!("templates/demo/client.yaml"),
    ),
    (
        "clients/root/client.yaml",
        include_str!("templates/demo/root/client.yaml"),
    ),
    (
        "clients/demo/pipelines/orders.yaml",
        include_str!("templates/demo/orders.yaml"),
    ),
    (
        "clients/demo/pipelines/invoices.yaml",
        include_str!("templates/demo/invoices.yaml"),
    ),
    (
        "clients/demo/tests/orders.yaml",
        include_str!("templates/demo/tests/orders.yaml"),
    ),
];

/// Writes the example project (or the named one of [`EXAMPLES`]); refuses to touch an existing
/// project.
pub fn init(dir: &Path, example: Option<&str>) -> anyhow::Result<()> {
    let example = match example {
        None => None,
        Some(name) => match EXAMPLES.iter().find(|(known, _)| *known == name) {
            Some((_, files)) => Some(*files),
            None => bail!(
                "there is no example `{name}`; the examples are: {}",
                EXAMPLES
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    if dir.join("ferry.yaml").exists() {
        bail!(
            "{} already holds a project (ferry.yaml exists)",
            dir.display()
        );
    }
    if let Some(files) = example {
        return write_files(dir, files);
    }
    write_files(dir, INIT)?;
    for sub in ["inbox", "archive", "outbox"] {
        create_dir(&dir.join(sub))?;
    }
    std::fs::write(dir.join("inbox/example-invoice.xml"), sample_invoice(1))
        .context("cannot write the sample invoice")?;
    let fixtures = dir.join("clients/example/tests/fixtures");
    create_dir(&fixtures)?;
    std::fs::write(fixtures.join("INV-0001.xml"), sample_invoice(1))
        .context("cannot write the test fixture")?;
    Ok(())
}

/// The demo project's directory, written on first use.
pub fn ensure_demo() -> anyhow::Result<PathBuf> {
    let dir = data_dir().join("demo");
    upgrade_demo(&dir)?;
    if !dir.join("ferry.yaml").exists() {
        write_files(&dir, DEMO)?;
        create_dir(&dir.join("archive"))?;
        create_dir(&dir.join("inbox"))?;
        for n in 1..=3 {
            let path = dir.join(format!("inbox/invoice-{n:04}.xml"));
            std::fs::write(&path, sample_invoice(n))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(dir)
}

/// The demo's ferry.yaml as versions before client grants wrote it: its pipelines use `inbox`,
/// `archive` and `outbox`, which a client may only use once ferry.yaml grants them.
const DEMO_BEFORE_GRANTS: &str = "# The ferry demo project, written on first start. Change \
     anything: ferry reloads it.\nsystem_alias: ferry DEMO\nstore: sqlite://data/ferry.db\nweb: \
     { listen: 127.0.0.1:5000 }\nworkers: 2\n";

/// Brings a demo project written by an earlier version up to date, if nobody changed it.
fn upgrade_demo(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("ferry.yaml");
    if std::fs::read_to_string(&path).is_ok_and(|text| text == DEMO_BEFORE_GRANTS) {
        std::fs::write(&path, DEMO[0].1)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `$FERRY_DATA_DIR`, else `$XDG_DATA_HOME/ferry`, else `~/.local/share/ferry`.
fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRY_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("ferry");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/ferry"),
        None => PathBuf::from("ferry-data"),
    }
}

fn write_files(dir: &Path, files: &[(&str, impl AsRef<[u8]>)]) -> anyhow::Result<()> {
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn sample_invoice(number: u32) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<invoice number=\"INV-{number:04}\">\n  <customer>ACME Corp</customer>\n  <amount currency=\"EUR\">{}.00</amount>\n</invoice>\n",
        100 * number
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_written_before_grants_gets_them_and_a_changed_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.yaml");
        std::fs::write(&path, DEMO_BEFORE_GRANTS).unwrap();
        upgrade_demo(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO[0].1);
        let changed = format!("{DEMO_BEFORE_GRANTS}# mine\n");
        std::fs::write(&path, &changed).unwrap();
        upgrade_demo(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), changed);
    }
}
